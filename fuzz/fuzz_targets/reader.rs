//! Any bytes given to the reader (strict and salvaging), the checker, replay and summary: an
//! error or a truncation, never a panic, a hang or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vkdirty::trace::{Checker, Replay, Summary, TraceReader};

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
    // Salvaging: damage is skipped, the reader always ends, offsets only move forward.
    let Ok(r) = TraceReader::new(data) else { return };
    let mut r = r.salvage(true);
    let mut checker = Checker::new();
    let mut replay = Replay::new();
    let mut last = 0;
    let _ = checker.follow(&mut r, |b, ok| {
        assert!(b.offset >= last);
        last = b.offset;
        if let (Some(ev), true) = (&b.event, ok) {
            let _ = replay.apply(ev, b.offset);
        }
        Ok(())
    });
    let mut end = 0;
    for d in r.damage() {
        assert!(d.offset >= end && d.offset + d.len <= data.len() as u64);
        end = d.offset + d.len;
    }
});
