//! Round trip: events written by the writer read back equal; reconstruction equals a model.

mod trace_common;

use proptest::prelude::*;
use trace_common::*;
use vkdirty::trace::format::{decode_payload, encode_payload, BlockType};
use vkdirty::trace::*;

/// What the reader must give back for `events`: the same records (empty Dirty records write
/// nothing) followed by the end block with the writer's totals.
fn expected(events: &[Event], page: u64) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    let mut t = Totals::default();
    for e in events {
        match e {
            Event::Dirty(d) if d.runs.is_empty() => continue,
            Event::Dirty(d) => {
                t.dirty_bytes += d.data.len() as u64;
                t.dirty_pages += pages_of(d, page);
            }
            Event::Submit(_) => t.submits += 1,
            Event::Frame { .. } => t.frames += 1,
            _ => {}
        }
        out.push(e.clone());
    }
    out.push(Event::End(t));
    out
}

fn read_all(bytes: &[u8]) -> Vec<Event> {
    let r = TraceReader::new(bytes).expect("header");
    let (events, trunc) = r.events().expect("read");
    assert_eq!(trunc, None, "a closed trace is whole");
    events
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn payload_codec_round_trips(ev in event()) {
        let mut p = Vec::new();
        encode_payload(&ev, &mut p);
        prop_assert_eq!(decode_payload(BlockType::of(&ev), &p, 0).expect("decode"), ev);
    }

    #[test]
    fn round_trip_lz4(events in prop::collection::vec(event(), 0..40)) {
        let bytes = write_trace(&events, opts(Compression::Lz4));
        prop_assert_eq!(read_all(&bytes), expected(&events, 4096));
    }

    #[test]
    fn round_trip_uncompressed(events in prop::collection::vec(event(), 0..40)) {
        let bytes = write_trace(&events, opts(Compression::None));
        let r = TraceReader::new(&bytes[..]).expect("header");
        for b in r {
            prop_assert_eq!(b.expect("block").flags, 0, "no block compressed with compression none");
        }
        prop_assert_eq!(read_all(&bytes), expected(&events, 4096));
    }
}

#[test]
fn end_totals_codec() {
    let t = Totals { submits: 1, frames: 2, dirty_pages: 3, dirty_bytes: 4, writer_stalls: 5 };
    let mut p = Vec::new();
    encode_payload(&Event::End(t.clone()), &mut p);
    assert_eq!(decode_payload(BlockType::End, &p, 0).unwrap(), Event::End(t));
}

#[test]
fn compressible_blocks_are_compressed() {
    let d = Dirty { alloc: 1, submit: 1, runs: vec![(0, 65536)], data: vec![0; 65536] };
    let bytes = write_trace(&[Event::Dirty(d.clone())], opts(Compression::Lz4));
    assert!(bytes.len() < 4096, "64 KiB of zeros should compress, got {} bytes", bytes.len());
    let blocks: Vec<Block> = TraceReader::new(&bytes[..]).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(blocks[0].flags, format::FLAG_LZ4);
    assert_eq!(blocks[0].event, Some(Event::Dirty(d)));
}

// ---- reconstruction against a model ----

#[derive(Clone, Debug)]
enum Op {
    /// Write `len` bytes of `fill` at offset `off` (scaled to the allocation) for the current submit.
    Write { alloc: usize, off: u64, len: usize, fill: u8 },
    /// Next submit number.
    Submit,
}

fn ops() -> impl Strategy<Value = (Vec<u64>, Vec<Op>)> {
    let sizes = prop::collection::vec(1u64..40_000, 1..4);
    let op = prop_oneof![
        3 => (0usize..4, any::<u64>(), 1usize..9000, any::<u8>()).prop_map(|(alloc, off, len, fill)| Op::Write { alloc, off, len, fill }),
        1 => Just(Op::Submit),
    ];
    (sizes, prop::collection::vec(op, 0..60))
}

/// Applies the ops to plain byte vectors, snapshotting every allocation after each submit.
fn model(sizes: &[u64], ops: &[Op]) -> Vec<Vec<Vec<u8>>> {
    let mut mem: Vec<Vec<u8>> = sizes.iter().map(|&s| vec![0u8; s as usize]).collect();
    let mut snaps = vec![mem.clone()]; // snaps[n] = state as of submit n (1-based; [0] = none)
    for op in ops {
        match *op {
            Op::Write { alloc, off, len, fill } => {
                let m = &mut mem[alloc % sizes.len()];
                let off = (off % m.len() as u64) as usize;
                let end = (off + len).min(m.len());
                for (i, b) in m[off..end].iter_mut().enumerate() {
                    *b = fill.wrapping_add(i as u8);
                }
            }
            Op::Submit => snaps.push(mem.clone()),
        }
    }
    snaps.push(mem);
    snaps
}

/// The trace of the same ops: each write is a Dirty run of the current (upcoming) submit.
fn trace_of(sizes: &[u64], ops: &[Op], o: WriterOptions) -> Vec<u8> {
    let buf = SharedBuf::default();
    let w = TraceWriter::with_sink(buf.clone(), "model", o).unwrap();
    for (i, &size) in sizes.iter().enumerate() {
        w.record(&Event::Allocation(Allocation {
            id: 100 + i as u64,
            handle: 0,
            device: 0,
            size,
            memory_type: 0,
            property_flags: 0,
            heap: 0,
        }));
    }
    let mut submit = 1;
    for op in ops {
        match *op {
            Op::Write { alloc, off, len, fill } => {
                let a = alloc % sizes.len();
                let size = sizes[a];
                let off = off % size;
                let end = (off + len as u64).min(size);
                let bytes: Vec<u8> = (0..end - off).map(|i| fill.wrapping_add(i as u8)).collect();
                let mut d = w.dirty(100 + a as u64, submit);
                d.push(off, &bytes);
                d.finish();
            }
            Op::Submit => {
                w.record(&Event::Submit(Submit { seq: submit, ..Submit::default() }));
                submit += 1;
            }
        }
    }
    w.close().unwrap();
    buf.bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn replay_equals_model((sizes, ops) in ops(), lz4 in any::<bool>(), small_blocks in any::<bool>()) {
        let mut o = opts(if lz4 { Compression::Lz4 } else { Compression::None });
        if small_blocks {
            // Two pages per block: writes split across blocks.
            o.block_bytes = 8192;
        }
        let bytes = trace_of(&sizes, &ops, o);
        let snaps = model(&sizes, &ops);
        let submits = snaps.len() as u64 - 1;
        for n in [0, 1, submits / 2, submits] {
            let mut replay = Replay::new().up_to_submit(n);
            for b in TraceReader::new(&bytes[..]).unwrap() {
                let b = b.unwrap();
                if let Some(ev) = &b.event {
                    replay.apply(ev, b.offset).unwrap();
                }
            }
            let want = &snaps[n as usize];
            for (i, m) in want.iter().enumerate() {
                let got = replay.to_vec(100 + i as u64).expect("allocation");
                prop_assert!(&got == m, "allocation {} differs at submit {}", i, n);
            }
        }
    }
}

#[test]
fn large_collection_splits_at_page_boundaries() {
    // 10 pages starting mid-page, 3-page blocks: every block but the first starts page-aligned.
    let mut o = opts(Compression::Lz4);
    o.block_bytes = 3 * 4096;
    let data: Vec<u8> = (0..10 * 4096u32).map(|i| (i / 7) as u8).collect();
    let alloc = allocation(5, 1 << 20);
    let d = Dirty { alloc: 5, submit: 3, runs: vec![(1000, data.len() as u64)], data: data.clone() };
    let bytes = write_trace(&[alloc, Event::Dirty(d)], o);
    let events = read_all(&bytes);
    let dirty: Vec<&Dirty> =
        events.iter().filter_map(|e| if let Event::Dirty(d) = e { Some(d) } else { None }).collect();
    assert!(dirty.len() >= 4, "split into {} blocks", dirty.len());
    let mut cat = Vec::new();
    for (i, d) in dirty.iter().enumerate() {
        assert!(d.data.len() <= 3 * 4096);
        if i > 0 {
            assert_eq!(d.runs[0].0 % 4096, 0, "block {i} starts on a page boundary");
        }
        cat.extend_from_slice(&d.data);
    }
    assert_eq!(cat, data);
    let Some(Event::End(t)) = events.last() else { panic!("no end block") };
    // Offsets 1000..1000+40960 touch 11 pages.
    assert_eq!(t.dirty_pages, 11);
    assert_eq!(t.dirty_bytes, data.len() as u64);
    let (replay, _) = {
        let mut r = Replay::new();
        for b in TraceReader::new(&bytes[..]).unwrap() {
            let b = b.unwrap();
            r.apply(b.event.as_ref().unwrap(), b.offset).unwrap();
        }
        (r, ())
    };
    let mut got = vec![0u8; data.len()];
    replay.read(5, 1000, &mut got).unwrap();
    assert_eq!(got, data);
}

#[test]
fn contiguous_pushes_merge_into_one_run() {
    let buf = SharedBuf::default();
    let w = TraceWriter::with_sink(buf.clone(), "t", opts(Compression::None)).unwrap();
    let mut d = w.dirty(1, 1);
    d.push(0, &[1; 4096]);
    d.push(4096, &[2; 4096]);
    d.push(3 * 4096, &[3; 10]);
    d.finish();
    w.close().unwrap();
    let events = read_all(&buf.bytes());
    let Event::Dirty(d) = &events[0] else { panic!("{:?}", events[0]) };
    assert_eq!(d.runs, vec![(0, 8192), (3 * 4096, 10)]);
}

#[test]
fn replay_rejects_out_of_range_and_unknown_allocations() {
    let a = allocation(1, 100);
    let mut r = Replay::new();
    r.apply(&a, 0).unwrap();
    let beyond = Event::Dirty(Dirty { alloc: 1, submit: 1, runs: vec![(90, 20)], data: vec![0; 20] });
    assert!(matches!(r.apply(&beyond, 77), Err(TraceError::Inconsistent { offset: 77, .. })));
    let unknown = Event::Dirty(Dirty { alloc: 2, submit: 1, runs: vec![(0, 1)], data: vec![0] });
    assert!(r.apply(&unknown, 0).is_err());
    assert!(r.apply(&a, 0).is_err(), "an id recorded twice");
    // A filtered replay ignores other allocations.
    let mut only = Replay::new().only_alloc(1);
    only.apply(&a, 0).unwrap();
    only.apply(&unknown, 0).unwrap();
}

#[test]
fn extreme_offsets_never_hang_or_corrupt() {
    let buf = SharedBuf::default();
    let mut o = opts(Compression::None);
    o.block_bytes = 8192;
    let w = TraceWriter::with_sink(buf.clone(), "t", o).unwrap();
    let mut d = w.dirty(1, 1);
    d.push(u64::MAX - 10, &[1; 4096]); // would overflow: dropped
    d.push(u64::MAX - 5 * 4096 - 5, &[2; 5 * 4096]); // split near the top of the offset space
    d.finish();
    w.close().unwrap();
    assert_eq!(w.stats().dropped_bytes, 4096);
    let events = read_all(&buf.bytes());
    let total: usize = events.iter().map(|e| if let Event::Dirty(d) = e { d.data.len() } else { 0 }).sum();
    assert_eq!(total, 5 * 4096);
}
