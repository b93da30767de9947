//! Any bytes given to the gfxreconstruct capture reader, its summary and its memory events: an
//! error, never a panic, a hang or an unbounded allocation.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use vkdirty::gfxr::{memory_events_of, GfxrReader};

fuzz_target!(|data: &[u8]| {
    if let Ok(mut r) = GfxrReader::new(Cursor::new(data)) {
        let mut last = 0;
        while let Ok(Some(_)) = r.next_block() {
            assert!(r.block_offset() >= last && r.block_offset() < data.len() as u64);
            last = r.block_offset();
        }
    }
    if let Ok(r) = GfxrReader::new(Cursor::new(data)) {
        let _ = memory_events_of(r);
    }
});
