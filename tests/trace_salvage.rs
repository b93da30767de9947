//! The salvaging reader on a corpus of damaged blocks: every block of a sample trace is damaged
//! in several ways in turn; the reader must skip exactly that block, report its byte range, and
//! yield every other block unchanged (data lost = the damaged block only). Plus declared sizes
//! checked against plausibility, and `verify` / `info` / `dump` on damaged traces.

mod trace_common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use trace_common::*;
use vkdirty::trace::format::BLOCK_HEADER_LEN;
use vkdirty::trace::*;

/// Every block's (offset, file length, event).
fn blocks(bytes: &[u8]) -> Vec<(u64, u64, Option<Event>)> {
    TraceReader::new(bytes).unwrap().map(|b| b.unwrap()).map(|b| (b.offset, b.file_len(), b.event)).collect()
}

struct Salvaged {
    events: Vec<Event>,
    damage: Vec<Damage>,
    truncated: bool,
}

fn salvage(bytes: &[u8]) -> Salvaged {
    let mut r = TraceReader::new(bytes).unwrap().salvage(true);
    let mut events = Vec::new();
    while let Some(b) = r.next_block().expect("salvage never fails on damage") {
        events.extend(b.event);
    }
    Salvaged { events, damage: r.damage().to_vec(), truncated: r.truncation().is_some() }
}

/// Ways to damage the block at `off` of length `len`.
fn damage_kinds() -> Vec<(&'static str, Box<dyn Fn(&mut Vec<u8>, usize, usize)>)> {
    vec![
        (
            "payload bit",
            Box::new(|b: &mut Vec<u8>, off, len| b[off + BLOCK_HEADER_LEN + (len - BLOCK_HEADER_LEN) / 2] ^= 0x10),
        ),
        ("crc byte", Box::new(|b: &mut Vec<u8>, off, _| b[off + 12] ^= 0xff)),
        ("type code", Box::new(|b: &mut Vec<u8>, off, _| b[off] ^= 0x03)),
        ("length grown", Box::new(|b: &mut Vec<u8>, off, _| b[off + 5] ^= 0x40)),
        ("length shrunk", Box::new(|b: &mut Vec<u8>, off, _| b[off + 4] ^= 0x01)),
        ("length huge", Box::new(|b: &mut Vec<u8>, off, _| b[off + 7] = 0xff)),
        ("zeroed", Box::new(|b: &mut Vec<u8>, off, len| b[off..off + len].fill(0))),
        (
            "random",
            Box::new(|b: &mut Vec<u8>, off, len| {
                for (i, x) in b[off..off + len].iter_mut().enumerate() {
                    *x = (i as u32).wrapping_mul(2654435761).rotate_left(7) as u8;
                }
            }),
        ),
    ]
}

/// The corpus: every block × every kind × both compressions. Counts runs and checks that
/// nothing but the damaged block is lost.
#[test]
fn damaged_block_corpus() {
    let mut runs = 0;
    for c in [Compression::Lz4, Compression::None] {
        let bytes = write_trace(&sample_events(), opts(c));
        let all = blocks(&bytes);
        for (i, &(off, len, _)) in all.iter().enumerate() {
            for (kind, f) in damage_kinds() {
                let mut b = bytes.clone();
                f(&mut b, off as usize, len as usize);
                let s = salvage(&b);
                runs += 1;
                let want: Vec<Event> =
                    all.iter().enumerate().filter(|&(j, _)| j != i).filter_map(|(_, x)| x.2.clone()).collect();
                assert_eq!(s.events, want, "{c:?} block {i} {kind}: every other block is read");
                let last = i + 1 == all.len();
                if last && s.damage.is_empty() {
                    // A grown length on the last block reads as a cut file: nothing follows it.
                    assert!(s.truncated && kind.starts_with("length"), "{c:?} {kind}");
                    continue;
                }
                assert_eq!(s.damage.len(), 1, "{c:?} block {i} {kind}: {:?}", s.damage);
                let d = &s.damage[0];
                assert_eq!(d.offset, off, "{c:?} block {i} {kind}");
                if last {
                    // The end block: the damage runs to the end of the file, which has no end.
                    assert_eq!(d.offset + d.len, b.len() as u64, "{c:?} {kind}");
                    assert!(s.truncated, "{c:?} {kind}");
                } else {
                    assert_eq!(
                        d.offset + d.len,
                        all[i + 1].0,
                        "{c:?} block {i} {kind}: resynchronised on the next block"
                    );
                    assert!(!s.truncated, "{c:?} block {i} {kind}");
                }
                assert!(!d.reason.is_empty());
            }
        }
    }
    eprintln!("damaged-block corpus: {runs} runs, 0 failures, 0 intact blocks lost");
    assert!(runs >= 2 * 17 * 8);
}

/// Two damaged ranges, and garbage inserted between blocks: each reported, the rest read.
#[test]
fn several_damaged_ranges_and_inserted_garbage() {
    let bytes = write_trace(&sample_events(), opts(Compression::Lz4));
    let all = blocks(&bytes);
    let mut b = bytes.clone();
    b[all[2].0 as usize + 20] ^= 1;
    b[all[9].0 as usize + 3] ^= 1;
    let at = all[5].0 as usize;
    b.splice(at..at, std::iter::repeat(0xa5u8).take(1000));
    let s = salvage(&b);
    assert_eq!(s.damage.len(), 3, "{:?}", s.damage);
    assert_eq!(s.damage[1], Damage { offset: at as u64, len: 1000, reason: s.damage[1].reason.clone() });
    assert_eq!(s.events.len(), all.len() - 2);
    assert!(!s.truncated);
}

/// A reader that is not salvaging still stops at the first damage (the strict contract).
#[test]
fn strict_reader_still_stops() {
    let bytes = write_trace(&sample_events(), opts(Compression::Lz4));
    let all = blocks(&bytes);
    let mut b = bytes.clone();
    b[all[4].0 as usize + 20] ^= 1;
    let mut r = TraceReader::new(&b[..]).unwrap();
    let mut n = 0;
    let err = loop {
        match r.next_block() {
            Ok(Some(_)) => n += 1,
            Ok(None) => panic!("no error"),
            Err(e) => break e,
        }
    };
    assert_eq!(n, 4);
    assert!(err.to_string().contains(&format!("byte {}", all[4].0)), "{err}");
}

/// The checker says which allocations a damaged range may have held data for.
#[test]
fn damage_impact_names_live_host_visible_allocations() {
    let bytes = write_trace(&sample_events(), opts(Compression::None));
    let all = blocks(&bytes);
    // The Dirty block of allocation 1 for submit 2 (after Submit 1).
    let i = all.iter().position(|b| matches!(&b.2, Some(Event::Dirty(d)) if d.submit == 2)).unwrap();
    let mut b = bytes.clone();
    b[all[i].0 as usize + 30] ^= 1;
    let mut r = TraceReader::new(&b[..]).unwrap().salvage(true);
    let mut ch = Checker::new();
    ch.follow(&mut r, |_, ok| {
        assert!(ok);
        Ok(())
    })
    .unwrap();
    assert_eq!(ch.impacts().len(), 1);
    let imp = &ch.impacts()[0];
    assert_eq!(imp.intact_through, 1);
    assert_eq!(imp.allocations.iter().copied().collect::<Vec<_>>(), vec![1, 2]);
    assert!(ch.affecting(1, Some(1)).is_empty(), "as of submit 1 it is intact");
    assert_eq!(ch.affecting(1, Some(2)).len(), 1);
    assert_eq!(ch.affecting(1, None).len(), 1);
    assert!(ch.affecting(3, None).is_empty());
}

fn vkdirty(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vkdirty")).args(args).output().expect("run vkdirty")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn cli_on_a_damaged_trace() {
    let bytes = write_trace(&sample_events(), opts(Compression::None));
    let all = blocks(&bytes);
    let i = all.iter().position(|b| matches!(&b.2, Some(Event::Dirty(d)) if d.submit == 2)).unwrap();
    let mut b = bytes.clone();
    b[all[i].0 as usize + 30] ^= 1;
    let path = tmp_path("salvage.vkd");
    std::fs::write(&path, &b).unwrap();

    let o = vkdirty(&["verify", s(&path)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains(&format!("bytes {}..{}", all[i].0, all[i + 1].0)), "{out}");
    assert!(out.contains("allocations 1, 2 may miss writes after submit 1"), "{out}");
    assert!(out.contains("not whole: 1 damaged range"), "{out}");

    let o = vkdirty(&["info", s(&path)]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("submits      2"), "the summary of the readable part: {out}");
    assert!(out.contains("status       DAMAGED: 1 range(s)"), "{out}");
    assert!(out.contains(&format!("damage       bytes {}..{}", all[i].0, all[i + 1].0)), "{out}");
    let o = vkdirty(&["info", "--json", s(&path)]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["damage"][0]["allocations"], serde_json::json!([1, 2]));

    let dump = tmp_path("salvage.bin");
    // Before the damage: intact, written.
    let o = vkdirty(&["dump", s(&path), "--alloc", "1", "--at-submit", "1", "-o", s(&dump)]);
    assert!(o.status.success(), "{}", text(&o));
    let mut want = vec![0u8; 3 * 4096];
    want[..4096].fill(0x11);
    assert_eq!(std::fs::read(&dump).unwrap(), want);
    // After it: refused, naming the damage and the intact submit.
    let o = vkdirty(&["dump", s(&path), "--alloc", "1", "--at-submit", "2", "-o", s(&dump)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("may be incomplete") && text(&o).contains("--at-submit 1"), "{}", text(&o));
    let o = vkdirty(&["dump", s(&path), "--alloc", "1", "--allow-damage", "-o", s(&dump)]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&dump).unwrap(), want, "what is readable");
    for p in [&path, &dump] {
        std::fs::remove_file(p).unwrap();
    }
}

/// A crafted trace with valid CRCs declaring an absurd allocation: `verify` fails, `dump`
/// refuses; a large but plausible one is refused above --max-size and written sparse with
/// --force.
#[test]
fn declared_sizes_are_checked() {
    let huge = vec![
        Event::Allocation(Allocation {
            id: 1,
            handle: 1,
            device: 1,
            size: 1 << 60,
            memory_type: 0,
            property_flags: 6,
            heap: 0,
        }),
        Event::Dirty(Dirty { alloc: 1, submit: 1, runs: vec![(0, 16)], data: vec![7; 16] }),
    ];
    let path = tmp_path("huge.vkd");
    std::fs::write(&path, write_trace(&huge, opts(Compression::None))).unwrap();
    let o = vkdirty(&["verify", s(&path)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("implausible size"), "{}", text(&o));
    let dump = tmp_path("huge.bin");
    let o = vkdirty(&["dump", s(&path), "--alloc", "1", "--force", "-o", s(&dump)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!dump.exists());

    let big = vec![
        Event::Allocation(Allocation {
            id: 1,
            handle: 1,
            device: 1,
            size: 8 << 30,
            memory_type: 0,
            property_flags: 6,
            heap: 0,
        }),
        Event::Dirty(Dirty { alloc: 1, submit: 1, runs: vec![(5 << 30, 4096)], data: vec![9; 4096] }),
    ];
    std::fs::write(&path, write_trace(&big, opts(Compression::Lz4))).unwrap();
    let o = vkdirty(&["dump", s(&path), "--alloc", "1", "-o", s(&dump)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("--force"), "{}", text(&o));
    assert!(!dump.exists());
    let o = vkdirty(&["dump", s(&path), "--alloc", "1", "--force", "-o", s(&dump)]);
    assert!(o.status.success(), "{}", text(&o));
    let m = std::fs::metadata(&dump).unwrap();
    assert_eq!(m.len(), 8 << 30);
    assert!(m.blocks() * 512 <= 1 << 20, "sparse: {} bytes on disk", m.blocks() * 512);
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&dump).unwrap();
    let mut page = vec![0u8; 4096];
    f.seek(SeekFrom::Start(5 << 30)).unwrap();
    f.read_exact(&mut page).unwrap();
    assert!(page.iter().all(|&x| x == 9));
    for p in [&path, &dump] {
        std::fs::remove_file(p).unwrap();
    }
}

/// Crafted bytes where every 16th offset looks like the header of a long block: resynchronising
/// stays bounded (it gives up, and the rest is one damaged range) instead of checksumming the
/// file once per offset.
#[test]
fn resync_work_is_bounded() {
    let mut bytes = write_trace(&sample_events()[..2], opts(Compression::None));
    // Drop the end block.
    bytes.truncate(blocks(&bytes).last().unwrap().0 as usize);
    let header = format::BlockHeader { type_code: 7, flags: 0, stored_len: 8 << 20, raw_len: 8 << 20, crc: 0 }.encode();
    let start = bytes.len();
    for _ in 0..(24 << 20) / 16 {
        bytes.extend_from_slice(&header);
    }
    let t0 = std::time::Instant::now();
    let s = salvage(&bytes);
    assert!(t0.elapsed() < std::time::Duration::from_secs(60), "{:?}", t0.elapsed());
    assert_eq!(s.events.len(), 2);
    assert_eq!(s.damage.len(), 1);
    assert_eq!((s.damage[0].offset, s.damage[0].offset + s.damage[0].len), (start as u64, bytes.len() as u64));
    assert!(s.truncated);
}

/// Random damage (1 to 3 flipped bytes) in a trace of many blocks, `VKDIRTY_STRESS_RUNS` times
/// (default 200; scripts/reliability.sh runs more): exactly the blocks holding a flipped byte
/// are lost, every other block is read unchanged. Prints runs, failures and intact dirty bytes
/// lost.
#[test]
fn random_damage_loses_only_damaged_blocks() {
    let runs: u64 = std::env::var("VKDIRTY_STRESS_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let mut events = sample_events();
    events.pop();
    events.pop();
    for seq in 3..40u64 {
        let data: Vec<u8> =
            (0..4096 + seq as usize * 7).map(|i| (i as u64 * seq).wrapping_mul(0x9e37_79b9) as u8 >> 3).collect();
        events.push(Event::Dirty(Dirty {
            alloc: 2,
            submit: seq,
            runs: vec![(0, data.len().min(8192) as u64)],
            data: data[..data.len().min(8192)].to_vec(),
        }));
        events.push(Event::Submit(Submit { seq, ..Submit::default() }));
    }
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut failures, mut lost) = (0u64, 0u64);
    for run in 0..runs {
        let c = if run % 2 == 0 { Compression::Lz4 } else { Compression::None };
        let bytes = write_trace(&events, opts(c));
        let all = blocks(&bytes);
        let first = all[0].0 as usize;
        let mut b = bytes.clone();
        let flips: Vec<usize> = (0..1 + next() % 3).map(|_| first + (next() as usize) % (b.len() - first)).collect();
        for &f in &flips {
            b[f] ^= 1 << (next() % 8);
        }
        let hit = |&(off, len, _): &(u64, u64, Option<Event>)| {
            flips.iter().any(|&f| (f as u64) >= off && (f as u64) < off + len)
        };
        let want: Vec<Event> = all.iter().filter(|x| !hit(x)).filter_map(|x| x.2.clone()).collect();
        let got = salvage(&b).events;
        if got != want {
            failures += 1;
            let missing: u64 = want
                .iter()
                .filter(|e| !got.contains(e))
                .map(|e| if let Event::Dirty(d) = e { d.data.len() as u64 } else { 0 })
                .sum();
            lost += missing;
            eprintln!("run {run}: flips at {flips:?}: {} events, want {}", got.len(), want.len());
        }
    }
    eprintln!("random damage: {runs} runs, {failures} failures, {lost} intact dirty bytes lost");
    assert_eq!((failures, lost), (0, 0));
}
