//! Any bytes given to the reader, replay and summary: an error or a truncation, never a panic,
//! a hang or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vkdirty::trace::{Replay, Summary, TraceReader};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = TraceReader::new(data) {
        let _ = Summary::from_reader(r, data.len() as u64);
    }
    let Ok(mut r) = TraceReader::new(data) else { return };
    let mut replay = Replay::new();
    while let Ok(Some(b)) = r.next_block() {
        if let Some(ev) = &b.event {
            let _ = replay.apply(ev, b.offset);
        }
    }
    let _ = r.truncation();
    for id in replay.allocations().collect::<Vec<_>>() {
        let mut buf = [0u8; 64];
        let _ = replay.read(id, 0, &mut buf);
    }
});
