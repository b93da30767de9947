//! Bad input: truncated, damaged and random files give an error or a truncation warning, never a
//! panic, and never pass as whole.

mod trace_common;

use proptest::prelude::*;
use trace_common::*;
use vkdirty::trace::*;

/// How a read of some bytes ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Whole(Vec<Event>),
    Truncated(Vec<Event>),
    Error(Vec<Event>),
}

/// Reads everything (also through `Replay` and `Summary`, which must not panic either).
fn read(bytes: &[u8]) -> Outcome {
    let _ = Summary::from_reader(
        match TraceReader::new(bytes) {
            Ok(r) => r,
            Err(_) => return Outcome::Error(Vec::new()),
        },
        bytes.len() as u64,
    );
    let mut r = TraceReader::new(bytes).expect("header read twice");
    let mut replay = Replay::new();
    let mut events = Vec::new();
    loop {
        match r.next_block() {
            Ok(Some(b)) => {
                if let Some(e) = b.event {
                    let _ = replay.apply(&e, b.offset);
                    events.push(e);
                }
            }
            Ok(None) => break,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                return Outcome::Error(events);
            }
        }
    }
    for id in replay.allocations().collect::<Vec<_>>() {
        let _ = replay.read(id, 0, &mut [0u8; 16]);
    }
    assert!(r.next_block().unwrap().is_none(), "the reader stays ended");
    match r.truncation() {
        Some(_) => Outcome::Truncated(events),
        None => Outcome::Whole(events),
    }
}

fn sample(c: Compression) -> (Vec<u8>, Vec<Event>) {
    let bytes = write_trace(&sample_events(), opts(c));
    let Outcome::Whole(events) = read(&bytes) else { panic!("sample is not whole") };
    (bytes, events)
}

#[test]
fn truncation_at_every_offset() {
    for c in [Compression::Lz4, Compression::None] {
        let (bytes, all) = sample(c);
        assert!(bytes.len() < 16 << 10, "the sample is small: {}", bytes.len());
        let header_len = TraceReader::new(&bytes[..]).unwrap().header().len as usize;
        for k in 0..bytes.len() {
            match read(&bytes[..k]) {
                Outcome::Whole(_) => panic!("{c:?}: a file cut at {k} of {} read as whole", bytes.len()),
                Outcome::Truncated(ev) => {
                    assert!(k >= header_len);
                    // Every complete block before the cut, in order, and nothing else.
                    assert_eq!(ev[..], all[..ev.len()], "{c:?}: prefix at {k}");
                    assert!(ev.len() < all.len());
                }
                Outcome::Error(ev) => {
                    assert!(k < header_len, "{c:?}: cut at {k} inside the blocks is a truncation, not an error");
                    assert!(ev.is_empty());
                }
            }
        }
    }
}

#[test]
fn flipped_byte_at_every_offset() {
    for c in [Compression::Lz4, Compression::None] {
        let (bytes, all) = sample(c);
        for k in 0..bytes.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[k] ^= mask;
                match read(&b) {
                    Outcome::Whole(ev) => panic!("{c:?}: byte {k} ^ {mask:#x} undetected ({} events)", ev.len()),
                    Outcome::Truncated(ev) | Outcome::Error(ev) => {
                        assert_eq!(ev[..], all[..ev.len()], "{c:?}: blocks before the damage are intact");
                    }
                }
            }
        }
    }
}

#[test]
fn errors_name_the_byte_offset() {
    let (mut bytes, _) = sample(Compression::Lz4);
    let r = TraceReader::new(&bytes[..]).unwrap();
    let blocks: Vec<Block> = r.map(|b| b.unwrap()).collect();
    let victim = &blocks[3];
    bytes[victim.offset as usize + 20] ^= 0x55;
    let err = TraceReader::new(&bytes[..]).unwrap().find_map(|b| b.err()).expect("an error");
    let msg = err.to_string();
    assert!(msg.contains(&format!("byte {}", victim.offset)), "{msg}");
    assert!(msg.contains("CRC"), "{msg}");
}

#[test]
fn unknown_block_types_are_skipped() {
    let (bytes, all) = sample(Compression::Lz4);
    let header_len = TraceReader::new(&bytes[..]).unwrap().header().len as usize;
    // Insert a block of type 999 after the header.
    let payload = b"from a later version";
    let crc = format::BlockHeader::compute_crc(999, 0, payload.len() as u32, payload.len() as u32, payload);
    let h = format::BlockHeader {
        type_code: 999,
        flags: 0,
        stored_len: payload.len() as u32,
        raw_len: payload.len() as u32,
        crc,
    };
    let mut b = bytes[..header_len].to_vec();
    b.extend_from_slice(&h.encode());
    b.extend_from_slice(payload);
    b.extend_from_slice(&bytes[header_len..]);
    let blocks: Vec<Block> = TraceReader::new(&b[..]).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(blocks[0].type_code, 999);
    assert_eq!(blocks[0].event, None);
    assert_eq!(read(&b), Outcome::Whole(all));
}

#[test]
fn not_a_trace() {
    assert!(matches!(TraceReader::new(&b""[..]), Err(TraceError::BadMagic)));
    assert!(matches!(TraceReader::new(&b"hello world, not a trace"[..]), Err(TraceError::BadMagic)));
    let (mut bytes, _) = sample(Compression::None);
    bytes[8] = 99;
    assert!(matches!(TraceReader::new(&bytes[..]), Err(TraceError::UnsupportedVersion { found: 99, .. })));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_after_a_valid_header(tail in prop::collection::vec(any::<u8>(), 0..600)) {
        let (bytes, _) = sample(Compression::None);
        let header_len = TraceReader::new(&bytes[..]).unwrap().header().len as usize;
        let mut b = bytes[..header_len].to_vec();
        b.extend_from_slice(&tail);
        prop_assert!(!matches!(read(&b), Outcome::Whole(ref e) if !e.is_empty()));
    }

    #[test]
    fn random_splices_of_a_valid_trace(cut in 0usize..4000, len in 0usize..64, junk in prop::collection::vec(any::<u8>(), 0..64)) {
        let (bytes, _) = sample(Compression::Lz4);
        let cut = cut % bytes.len();
        let end = (cut + len).min(bytes.len());
        let mut b = bytes[..cut].to_vec();
        b.extend_from_slice(&junk);
        b.extend_from_slice(&bytes[end..]);
        let _ = read(&b);
    }
}
