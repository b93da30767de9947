//! Write prediction (`GuardManager::with_prediction`): predicted pages are snapshotted and left
//! unprotected, and the next collection compares them instead of trapping their writes. Writers
//! racing the collection lose nothing; a prediction that always misses reports exactly the
//! written pages (and backs off); one that always hits takes the writes without faults and still
//! reports exactly the written pages.

#[path = "common/anon.rs"]
mod anon;

use anon::Anon;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use vkdirty::guard::arena::ArenaBlock;
use vkdirty::guard::wp::Prediction;
use vkdirty::guard::{page_size, BackendKind, CollectStats, GuardManager, RegionId, TrackOptions, Tracked};

const KINDS: [BackendKind; 2] = [BackendKind::OwnedWp, BackendKind::AsyncWp];

/// The tests of this file one at a time: a registration anywhere in the process rebuilds every
/// set's plan, which the deterministic tests' exact counts must not see.
static SERIAL: Mutex<()> = Mutex::new(());

fn on() -> Prediction {
    Prediction { enabled: true, budget: 32 << 20 }
}

struct Region {
    t: Tracked,
    len: usize,
    _block: Option<ArenaBlock>,
}

impl Region {
    fn ptr(&self) -> *mut u8 {
        self.t.app_ptr
    }
}

/// `n` adjacent regions of `pages` pages: arena blocks (host-import) or slices of one anonymous
/// mapping (async-wp: the driver's memory).
fn regions(mgr: &GuardManager, kind: BackendKind, n: usize, pages: usize) -> Vec<Region> {
    let len = pages * page_size();
    // A fresh anonymous mapping, left mapped for the life of the test process.
    let base = (kind == BackendKind::AsyncWp).then(|| Anon::expect(n * len).leak());
    (0..n)
        .map(|i| {
            let (ptr, block) = match base {
                Some(b) => ((b + i * len) as *mut u8, None),
                None => {
                    let b = ArenaBlock::new(len, page_size()).unwrap();
                    (b.ptr(), Some(b))
                }
            };
            // SAFETY: the backing outlives the region (leaked mapping, or the block kept with it).
            let t = unsafe { mgr.track(ptr, len, kind, &TrackOptions::default()) }
                .unwrap_or_else(|e| panic!("{kind}: track: {e}"));
            Region { t, len, _block: block }
        })
        .collect()
}

/// Untracks every region before its memory goes (a span left registered would share its pages
/// with the next test's regions placed there).
fn release(mgr: &GuardManager, rs: Vec<Region>) {
    for r in rs {
        mgr.untrack(r.t.id, &mut |_: usize, _: &[u8]| {}).unwrap();
    }
}

fn stamp(r: &Region, page: usize, word: usize, v: u64) {
    let off = page * page_size() + word * 8;
    assert!(off + 8 <= r.len);
    // SAFETY: inside the region, aligned; the application's pointer.
    unsafe { std::ptr::write_volatile(r.ptr().add(off) as *mut u64, v) };
}

/// Collects every region of `kind`, applying the runs to `mirrors`; returns the stats and the
/// (region index, page) pairs reported.
fn collect(
    mgr: &GuardManager,
    kind: BackendKind,
    by_id: &HashMap<RegionId, usize>,
    mirrors: &mut [Vec<u8>],
) -> (CollectStats, BTreeSet<(usize, usize)>) {
    let p = page_size();
    let mut seen = BTreeSet::new();
    let stats = mgr
        .collect_all(0, &|k| k == kind, &mut |id: RegionId, off: usize, bytes: &[u8]| {
            let i = by_id[&id];
            mirrors[i][off..off + bytes.len()].copy_from_slice(bytes);
            for pg in off / p..(off + bytes.len()).div_ceil(p) {
                seen.insert((i, pg));
            }
        })
        .unwrap();
    (stats, seen)
}

fn assert_mirrors(kind: BackendKind, rs: &[Region], mirrors: &[Vec<u8>], when: &str) {
    for (i, r) in rs.iter().enumerate() {
        // SAFETY: the region is tracked and mapped; no writer runs now.
        let mem = unsafe { std::slice::from_raw_parts(r.ptr(), r.len) };
        if mem != &mirrors[i][..] {
            let p = page_size();
            let bad: Vec<usize> =
                (0..r.len / p).filter(|&pg| mem[pg * p..(pg + 1) * p] != mirrors[i][pg * p..(pg + 1) * p]).collect();
            panic!("{kind}: {when}: region {i}: pages {bad:?} lost");
        }
    }
}

/// Four writers, each streaming through its own region as a ring (a page at a time), keeping two
/// hot pages and now and then writing a random page of any region, race a collector that runs
/// `collections` collections. Every 500 collections the writers pause at a gate and the mirrors
/// rebuilt from the collected runs must equal the memory.
fn racing_writers(kind: BackendKind, collections: usize) {
    const WRITERS: usize = 4;
    const PAGES: usize = 64;
    let _serial = SERIAL.lock();
    let mgr = GuardManager::with_prediction(on());
    let rs = Arc::new(regions(&mgr, kind, WRITERS, PAGES));
    let by_id: HashMap<RegionId, usize> = rs.iter().enumerate().map(|(i, r)| (r.t.id, i)).collect();
    let mut mirrors: Vec<Vec<u8>> = rs.iter().map(|r| vec![0u8; r.len]).collect();
    let gate = Arc::new(RwLock::new(()));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(1));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (rs, gate, stop, counter) = (rs.clone(), gate.clone(), stop.clone(), counter.clone());
            std::thread::spawn(move || {
                let mut ring = 0usize;
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ w as u64;
                while !stop.load(Ordering::Relaxed) {
                    let _g = gate.read();
                    for _ in 0..16 {
                        let v = counter.fetch_add(1, Ordering::Relaxed);
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let word = (x % 512) as usize;
                        stamp(&rs[w], 2 + ring % (PAGES - 2), word, v);
                        ring += 1;
                        stamp(&rs[w], (v % 2) as usize, word, v);
                        if v % 7 == 0 {
                            stamp(&rs[(x >> 20) as usize % WRITERS], (x >> 32) as usize % PAGES, word, v);
                        }
                    }
                }
            })
        })
        .collect();
    let mut total = CollectStats::default();
    let mut seen_count = 0;
    for n in 0..collections {
        // Let the writers make progress between collections (they may start late).
        while counter.load(Ordering::Relaxed) < seen_count + 48 {
            std::thread::yield_now();
        }
        seen_count = counter.load(Ordering::Relaxed);
        if n % 500 == 499 {
            let _g = gate.write();
            collect(&mgr, kind, &by_id, &mut mirrors);
            assert_mirrors(kind, &rs, &mirrors, &format!("after collection {n}"));
        } else {
            total += collect(&mgr, kind, &by_id, &mut mirrors).0;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    collect(&mgr, kind, &by_id, &mut mirrors);
    assert_mirrors(kind, &rs, &mirrors, "at the end");
    release(&mgr, Arc::into_inner(rs).expect("writers joined"));
    assert!(total.predicted > 0, "{kind}: nothing was predicted ({total:?})");
    eprintln!("{kind}: {collections} collections, {total:?}");
}

#[test]
fn racing_writers_lose_nothing_host_import() {
    racing_writers(BackendKind::OwnedWp, 10_000);
}

#[test]
fn racing_writers_lose_nothing_async_wp() {
    racing_writers(BackendKind::AsyncWp, 10_000);
}

/// Rounds of writes (`plan(round)`: region index and page), each followed by a collection that
/// must report exactly those pages and leave the mirrors equal to memory. Returns the stats of
/// every collection.
fn rounds(kind: BackendKind, rounds: usize, plan: &dyn Fn(usize) -> Vec<(usize, usize)>) -> Vec<CollectStats> {
    let _serial = SERIAL.lock();
    let mgr = GuardManager::with_prediction(on());
    let rs = regions(&mgr, kind, 4, 64);
    let by_id: HashMap<RegionId, usize> = rs.iter().enumerate().map(|(i, r)| (r.t.id, i)).collect();
    let mut mirrors: Vec<Vec<u8>> = rs.iter().map(|r| vec![0u8; r.len]).collect();
    let mut v = 1u64;
    let mut out = Vec::new();
    for round in 0..rounds {
        let want: BTreeSet<(usize, usize)> = plan(round).into_iter().collect();
        for &(i, pg) in &want {
            stamp(&rs[i], pg, round % 512, v);
            v += 1;
        }
        let (stats, seen) = collect(&mgr, kind, &by_id, &mut mirrors);
        assert_eq!(seen, want, "{kind}: round {round}: reported pages");
        assert_mirrors(kind, &rs, &mirrors, &format!("round {round}"));
        out.push(stats);
    }
    release(&mgr, rs);
    out
}

#[test]
fn predictions_always_wrong_report_exactly_and_back_off() {
    for kind in KINDS {
        // A two-step stream (pages 4k, 4k+1, then 4k+2, 4k+3: the continuation 4k+4.. is
        // predicted), then the writes move to another region and never come back there.
        let stats = rounds(kind, 200, &|round| {
            let (region, k) = (round / 2 % 4, round / 8 % 15);
            let base = 4 * k + 2 * (round % 2);
            vec![(region, base), (region, base + 1)]
        });
        let predicted: usize = stats.iter().map(|s| s.predicted).sum();
        let changed: usize = stats.iter().map(|s| s.compared_changed).sum();
        assert!(predicted > 0, "{kind}: the stream was never predicted");
        assert_eq!(changed, 0, "{kind}: a wrong prediction reported a change");
        // Backed off: far fewer predicted pages than one stream continuation per round.
        assert!(predicted < 2 * 200 / 4, "{kind}: no back-off ({predicted} pages predicted)");
    }
}

#[test]
fn predictions_always_right_take_no_fault_and_report_exactly() {
    for kind in KINDS {
        // Two hot pages in every region, and a ring of 4 pages a round through region 0.
        let stats = rounds(kind, 100, &|round| {
            let mut w: Vec<(usize, usize)> = (0..4).flat_map(|i| [(i, 0), (i, 1)]).collect();
            w.extend((0..4).map(|j| (0, 2 + (4 * round + j) % 60)));
            w
        });
        for (round, s) in stats.iter().enumerate().skip(3) {
            // The ring wraps every 15 rounds: the two rounds after a wrap are not ring-predicted (the
            // stream must be seen continuing once first).
            if (4 * round) % 60 < 8 {
                continue;
            }
            assert_eq!(s.predicted, 12, "{}: round {round}: {s:?}", kind);
            assert_eq!(s.compared_changed, 12, "{}: round {round}: {s:?}", kind);
        }
    }
}

#[test]
fn prediction_off_predicts_nothing() {
    let _serial = SERIAL.lock();
    let mgr = GuardManager::new();
    let rs = regions(&mgr, BackendKind::OwnedWp, 1, 8);
    let by_id: HashMap<RegionId, usize> = rs.iter().enumerate().map(|(i, r)| (r.t.id, i)).collect();
    let mut mirrors = vec![vec![0u8; rs[0].len]];
    let mut predicted = 0;
    for round in 0..10 {
        stamp(&rs[0], 0, round, round as u64 + 1);
        predicted += collect(&mgr, BackendKind::OwnedWp, &by_id, &mut mirrors).0.predicted;
    }
    assert_eq!(predicted, 0);
    assert_mirrors(BackendKind::OwnedWp, &rs, &mirrors, "end");
    release(&mgr, rs);
}
