//! Collection of every region at once (`GuardManager::collect_all`), with regions that share an
//! arena: host-import blocks carved from one reservation, shadow-wp views placed next to each
//! other, async-wp regions cut from one driver mapping. Every write is reported against the
//! region it hit, a run of adjacent regions costs one `PAGEMAP_SCAN`, and writers racing the
//! collection and the free of their neighbours lose nothing and are never misattributed.

#[path = "common/anon.rs"]
mod anon;

use anon::Anon;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use vkdirty::guard::arena::ArenaBlock;
use vkdirty::guard::{page_size, BackendKind, GuardManager, RegionId, TrackOptions, Tracked};

/// Memory for one region: an arena block (host-import, or the real memory behind shadow-wp), or
/// a slice of one big anonymous mapping (async-wp: the driver's memory).
enum Backing {
    Block(ArenaBlock),
    Slice(usize),
}

impl Backing {
    fn ptr(&self) -> *mut u8 {
        match self {
            Backing::Block(b) => b.ptr(),
            Backing::Slice(a) => *a as *mut u8,
        }
    }
}

struct Region {
    t: Tracked,
    backing: Backing,
    len: usize,
}

/// `never`: the device never writes the memory (shadow-wp: a private shadow, not a memfd).
fn track(mgr: &GuardManager, kind: BackendKind, backing: Backing, len: usize, never: bool) -> Region {
    let opts = TrackOptions { device_never_writes: never, ..Default::default() };
    // SAFETY: the backing outlives the region (untracked before it is dropped).
    let t = unsafe { mgr.track(backing.ptr(), len, kind, &opts) }.unwrap_or_else(|e| panic!("{kind}: track: {e}"));
    Region { t, backing, len }
}

/// A fresh private anonymous mapping, left mapped for the life of the test process.
fn anon(len: usize) -> usize {
    Anon::expect(len).leak()
}

/// `n` regions of `pages` pages each, adjacent.
fn regions(mgr: &GuardManager, kind: BackendKind, n: usize, pages: usize, never: bool) -> Vec<Region> {
    let len = pages * page_size();
    let base = (kind == BackendKind::AsyncWp).then(|| anon(n * len));
    (0..n)
        .map(|i| {
            let backing = match base {
                Some(b) => Backing::Slice(b + i * len),
                None => Backing::Block(ArenaBlock::new(len, page_size()).unwrap()),
            };
            track(mgr, kind, backing, len, never)
        })
        .collect()
}

const KINDS: [BackendKind; 3] = [BackendKind::OwnedWp, BackendKind::AsyncWp, BackendKind::ShadowWp];

#[test]
fn every_write_is_reported_against_its_region_with_one_scan_per_run() {
    let p = page_size();
    // shadow-wp twice: memfd views, and private ones (memory the device never writes).
    for (kind, never) in KINDS.map(|k| (k, false)).into_iter().chain([(BackendKind::ShadowWp, true)]) {
        let mgr = GuardManager::new();
        let rs = regions(&mgr, kind, 64, 16, never);
        let by_id: HashMap<RegionId, usize> = rs.iter().enumerate().map(|(i, r)| (r.t.id, i)).collect();
        for round in 0..3u8 {
            let mut want = BTreeSet::new();
            for (i, r) in rs.iter().enumerate().filter(|(i, _)| (i * 7 + round as usize) % 5 == 0) {
                for pg in [i % 16, (i * 3 + round as usize) % 16] {
                    // SAFETY: inside the region, through the pointer the application uses.
                    unsafe { *r.t.app_ptr.add(pg * p + 9) = round + 1 };
                    want.insert((i, pg));
                }
            }
            let mut got = BTreeSet::new();
            let stats = mgr
                .collect_all(0, &|k| k == kind, &mut |id: RegionId, off: usize, bytes: &[u8]| {
                    let i = by_id[&id];
                    assert!(off + bytes.len() <= rs[i].len, "{kind}: run past its region");
                    assert_eq!(off % p, 0);
                    for pg in off / p..(off + bytes.len()).div_ceil(p) {
                        assert_eq!(bytes[pg * p - off + 9], round + 1, "{kind}: bytes of region {i} page {pg}");
                        got.insert((i, pg));
                    }
                })
                .unwrap();
            assert_eq!(got, want, "{kind} round {round}");
            // One scan per run of address-adjacent regions (other tests of this process may
            // take arena ranges in between; here they are usually all adjacent).
            let mut starts: Vec<usize> = rs.iter().map(|r| r.t.app_ptr as usize).collect();
            starts.sort_unstable();
            let runs = 1 + starts.windows(2).filter(|w| w[1] != w[0] + 16 * p).count();
            assert_eq!(stats.scans, runs, "{kind}: scans for 64 regions in {runs} adjacent runs");
            if runs == 1 && kind != BackendKind::AsyncWp {
                // Adjacent arena blocks merge into one mapping: the scan walks one, not 64
                // (shadow-wp: the views are one memfd's pages, not a memfd each, or pieces of
                // one private reservation).
                let span = starts[0]..starts[63] + 16 * p;
                assert_eq!(mappings_over(&span), 1, "{kind} (private {never}): the 64 views in one mapping");
            }
            if kind == BackendKind::ShadowWp {
                for (i, pg) in &want {
                    assert_eq!(
                        // SAFETY: inside the real memory behind the shadow.
                        unsafe { *rs[*i].backing.ptr().add(pg * p + 9) },
                        round + 1,
                        "copied to the real memory"
                    );
                }
            }
        }
        for r in rs {
            mgr.untrack(r.t.id, &mut |_: usize, _: &[u8]| {}).unwrap();
        }
    }
}

/// The number of mappings of this process that overlap `r` (`/proc/self/maps`).
fn mappings_over(r: &std::ops::Range<usize>) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter(|l| {
            let (a, b) = l.split_once(' ').unwrap().0.split_once('-').unwrap();
            let (a, b) = (usize::from_str_radix(a, 16).unwrap(), usize::from_str_radix(b, 16).unwrap());
            a < r.end && r.start < b
        })
        .count()
}

/// Stamps written into a region: `(slot << 40) | (generation << 20) | counter`, so a value
/// seen in the wrong region or generation is recognised.
fn stamp(slot: usize, generation: u64, counter: u64) -> u64 {
    ((slot as u64) << 40) | (generation << 20) | (counter & 0xf_ffff)
}

/// Writers own a few regions each and keep stamping random words of them; now and then a writer
/// untracks one of its regions, checks that what was collected for it equals its memory, frees
/// it (its arena range goes back and is usually handed out again at once) and tracks a fresh
/// one in its place. A collector runs `collect_all` all the while. Mirrors are rebuilt from the
/// collected runs only; at the end every live region's mirror equals its memory.
fn racing_collect_and_free(kind: BackendKind, rounds: usize) {
    let p = page_size();
    let pages = 4;
    let len = pages * p;
    let writers = 3;
    let per_writer = 6;
    let mgr = Arc::new(GuardManager::new());
    let mirrors: Arc<Mutex<HashMap<RegionId, (usize, u64, Vec<u8>)>>> = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // The async-wp "driver mapping": slots are reused in place, as an arena block would be.
    let base = anon(writers * per_writer * len);
    let new_backing = move |slot: usize| match kind {
        BackendKind::AsyncWp => {
            // A freed driver allocation reads as fresh memory when handed out again.
            // SAFETY: the slot is ours and untracked.
            unsafe { std::ptr::write_bytes((base + slot * len) as *mut u8, 0, len) };
            Backing::Slice(base + slot * len)
        }
        _ => Backing::Block(ArenaBlock::new(len, p).unwrap()),
    };
    let apply =
        move |mirrors: &Mutex<HashMap<RegionId, (usize, u64, Vec<u8>)>>, id: RegionId, off: usize, bytes: &[u8]| {
            let mut m = mirrors.lock();
            let (slot, generation, mirror) = m.get_mut(&id).expect("a run for a region that is not tracked");
            // Every stamp in a collected run is of this region's slot and generation (or zero).
            for w in bytes.chunks_exact(8) {
                let v = u64::from_le_bytes(w.try_into().unwrap());
                assert!(
                    v == 0 || v >> 20 == stamp(*slot, *generation, 0) >> 20,
                    "{kind}: stamp {v:#x} in slot {slot} gen {generation}"
                );
            }
            mirror[off..off + bytes.len()].copy_from_slice(bytes);
        };

    let collector = {
        let (mgr, mirrors, stop) = (mgr.clone(), mirrors.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                mgr.collect_all(0, &|k| k == kind, &mut |id: RegionId, off: usize, bytes: &[u8]| {
                    apply(&mirrors, id, off, bytes)
                })
                .unwrap();
                n += 1;
            }
            n
        })
    };
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (mgr, mirrors) = (mgr.clone(), mirrors.clone());
            std::thread::spawn(move || {
                let mut rng = 0x9e3779b97f4a7c15u64 ^ (w as u64 + 1);
                let mut next = || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let slots: Vec<usize> = (0..per_writer).map(|i| w * per_writer + i).collect();
                let mut gens = vec![0u64; per_writer];
                let track_slot = |slot: usize, generation: u64| {
                    let r = track(&mgr, kind, new_backing(slot), len, false);
                    // SAFETY: the region's bytes, as the application sees them.
                    let seen = unsafe { std::slice::from_raw_parts(r.t.app_ptr, len) }.to_vec();
                    mirrors.lock().insert(r.t.id, (slot, generation, seen));
                    r
                };
                let mut mine: Vec<Region> = slots.iter().map(|&s| track_slot(s, 0)).collect();
                let mut counter = 0u64;
                for round in 0..rounds {
                    let i = (next() % per_writer as u64) as usize;
                    let word = (next() % (len as u64 / 8)) as usize;
                    counter += 1;
                    let v = stamp(slots[i], gens[i], counter);
                    // SAFETY: an aligned word inside the region, through the application's pointer.
                    unsafe { std::ptr::write_volatile((mine[i].t.app_ptr as *mut u64).add(word), v) };
                    if round % 97 == 96 {
                        // Free and replace region i while the others are written and collected.
                        let r = mine.swap_remove(i);
                        let id = r.t.id;
                        mgr.untrack(id, &mut |off: usize, bytes: &[u8]| apply(&mirrors, id, off, bytes)).unwrap();
                        let (_, _, mirror) = mirrors.lock().remove(&id).unwrap();
                        // SAFETY: the region's memory, not freed yet (for shadow-wp the real memory
                        // holds everything copied back at untrack).
                        let now = unsafe { std::slice::from_raw_parts(r.backing.ptr(), len) };
                        assert!(
                            mirror == now,
                            "{kind}: slot {} gen {}: collected bytes differ from memory at free",
                            slots[i],
                            gens[i]
                        );
                        drop(r);
                        gens[i] += 1;
                        let fresh = track_slot(slots[i], gens[i]);
                        mine.push(fresh);
                        mine.swap(i, per_writer - 1);
                    }
                }
                mine
            })
        })
        .collect();
    let live: Vec<Region> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    let collections = collector.join().unwrap();
    mgr.collect_all(0, &|k| k == kind, &mut |id: RegionId, off: usize, bytes: &[u8]| apply(&mirrors, id, off, bytes))
        .unwrap();
    for r in &live {
        let m = mirrors.lock();
        let (slot, _, mirror) = &m[&r.t.id];
        let real = if kind == BackendKind::ShadowWp { r.backing.ptr() } else { r.t.app_ptr };
        // SAFETY: the region's memory.
        let now = unsafe { std::slice::from_raw_parts(real, len) };
        assert!(mirror.as_slice() == now, "{kind}: slot {slot}: mirror differs from memory");
    }
    for r in live {
        mgr.untrack(r.t.id, &mut |_: usize, _: &[u8]| {}).unwrap();
    }
    assert!(collections > 10, "{kind}: the collector ran {collections} times");
    eprintln!("{kind}: {collections} collections raced {rounds} writes per writer");
}

#[test]
fn writers_racing_collection_and_free_in_one_arena() {
    for kind in KINDS {
        racing_collect_and_free(kind, 20_000);
    }
}
