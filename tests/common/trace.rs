//! Reading what a trace holds for one allocation at one submit (shared by the layer's tests).

use std::collections::BTreeSet;
use std::path::Path;
use vkdirty::trace::{Event, TraceReader};

/// The events of a whole (not truncated) trace, which is then removed; `stderr` (the run's)
/// goes into the failure message.
pub fn take_whole(trace: &Path, stderr: &str) -> Vec<Event> {
    let (events, trunc) = TraceReader::open(trace)
        .unwrap_or_else(|e| panic!("trace {}: {e}\nstderr:\n{stderr}", trace.display()))
        .events()
        .expect("read trace");
    assert!(trunc.is_none(), "trace truncated: {trunc:?}");
    let _ = std::fs::remove_file(trace);
    events
}

/// Pages (allocation page numbers) covered by the Dirty records of `alloc` for `submit`.
pub fn dirty_pages(events: &[Event], alloc: u64, submit: u64, page: u64) -> BTreeSet<u64> {
    let mut pages = BTreeSet::new();
    for e in events {
        if let Event::Dirty(d) = e {
            if d.alloc == alloc && d.submit == submit {
                for &(off, len) in &d.runs {
                    pages.extend(off / page..(off + len).div_ceil(page));
                }
            }
        }
    }
    pages
}

/// The bytes the Dirty records of `alloc` for `submit` hold at `[offset, offset + len)`, when one
/// run covers them.
pub fn dirty_bytes(events: &[Event], alloc: u64, submit: u64, offset: u64, len: u64) -> Option<Vec<u8>> {
    for e in events {
        if let Event::Dirty(d) = e {
            if d.alloc != alloc || d.submit != submit {
                continue;
            }
            let mut at = 0u64;
            for &(off, l) in &d.runs {
                if off <= offset && offset + len <= off + l {
                    let s = (at + offset - off) as usize;
                    return Some(d.data[s..s + len as usize].to_vec());
                }
                at += l;
            }
        }
    }
    None
}
