//! Regions kept across unmap and map (`GuardManager::park` / `resume`, docs/design.md, "Map every
//! frame"): `host-import` keeps its registration and place in the batch, `shadow-wp` its shadow
//! and registration. Every write is reported exactly once: before the park when made before it,
//! at the resume or after it when made while parked (the GPU writing the layer's own memory), and
//! a parked shadow never touches the real memory the driver unmapped.

#[path = "common/anon.rs"]
mod anon;

use anon::Anon;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use vkdirty::guard::arena::ArenaBlock;
use vkdirty::guard::{page_size, BackendKind, GuardError, GuardManager, RegionId, TrackOptions, Tracked};

/// One region of `pages` pages of the layer's own memory, tracked as host-import in `group`.
fn host_import(mgr: &GuardManager, pages: usize, group: u64) -> (Tracked, ArenaBlock) {
    let b = ArenaBlock::new(pages * page_size(), page_size()).unwrap();
    // SAFETY: the block outlives the region (kept beside it by the caller).
    let t = unsafe { mgr.track(b.ptr(), b.len(), BackendKind::OwnedWp, &TrackOptions { group, ..Default::default() }) }
        .unwrap();
    (t, b)
}

fn write(p: *mut u8, off: usize, v: u8) {
    // SAFETY: callers stay inside the region.
    unsafe { std::ptr::write_volatile(p.add(off), v) };
}

fn read(p: *const u8, off: usize) -> u8 {
    // SAFETY: callers stay inside the region.
    unsafe { std::ptr::read_volatile(p.add(off)) }
}

/// Pages of the runs handed to a sink.
#[derive(Default)]
struct Pages(BTreeSet<usize>);

impl Pages {
    fn sink(&mut self) -> impl FnMut(usize, &[u8]) + '_ {
        |off: usize, bytes: &[u8]| {
            let p = page_size();
            self.0.extend(off / p..(off + bytes.len()).div_ceil(p));
        }
    }

    fn take(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.0).into_iter().collect()
    }
}

fn collect_all(mgr: &GuardManager, group: u64, id: RegionId) -> Vec<usize> {
    let mut pages = Pages::default();
    let mut s = pages.sink();
    mgr.collect_all(group, &|_| true, &mut |r: RegionId, off: usize, b: &[u8]| {
        if r == id {
            s(off, b)
        }
    })
    .unwrap();
    drop(s);
    pages.take()
}

#[test]
fn host_import_keeps_its_registration_and_reports_each_write_once() {
    let p = page_size();
    let mgr = GuardManager::new();
    let (a, ablock) = host_import(&mgr, 8, 1);
    let (_b, _bblock) = host_import(&mgr, 8, 1);
    let mut got = Pages::default();
    write(a.app_ptr, 0, 1);
    write(a.app_ptr, p + 5, 2);
    assert!(mgr.park(a.id, &mut got.sink()).unwrap(), "host-import parks");
    assert_eq!(got.take(), vec![0, 1], "written before the unmap: reported at the park");
    assert!(matches!(mgr.collect(a.id, &mut |_: usize, _: &[u8]| {}), Err(GuardError::UnknownRegion(_))));
    assert!(collect_all(&mgr, 1, a.id).is_empty());
    // While unmapped the GPU writes the memory (lavapipe does, with CPU stores).
    write(a.app_ptr, 2 * p, 3);
    assert!(collect_all(&mgr, 1, a.id).is_empty(), "kept for the resume, not reported unmapped");
    write(a.app_ptr, 3 * p, 4);
    // Another address is refused; the region stays parked.
    // SAFETY: never dereferenced: the resume refuses it first.
    assert!(unsafe { mgr.resume(a.id, a.app_ptr.add(p), 7 * p, true, &mut got.sink()) }.is_err());
    // SAFETY: the block is the region's memory, mapped for the test.
    let t = unsafe { mgr.resume(a.id, ablock.ptr(), ablock.len(), true, &mut got.sink()) }.unwrap();
    assert_eq!((t.id, t.app_ptr, t.backend), (a.id, a.app_ptr, BackendKind::OwnedWp));
    assert_eq!(got.take(), vec![2], "found while parked: reported at the resume");
    assert_eq!(collect_all(&mgr, 1, a.id), vec![3], "written while parked, never scanned: next collection");
    assert!(collect_all(&mgr, 1, a.id).is_empty());
    write(a.app_ptr, 2 * p, 5);
    assert_eq!(collect_all(&mgr, 1, a.id), vec![2]);
    // Parked again, then released (the allocation is freed): what it found goes to the untrack.
    assert!(mgr.park(a.id, &mut got.sink()).unwrap());
    assert!(got.take().is_empty());
    write(a.app_ptr, 6 * p, 6);
    assert!(collect_all(&mgr, 1, a.id).is_empty());
    write(a.app_ptr, 7 * p, 7);
    mgr.untrack(a.id, &mut got.sink()).unwrap();
    assert_eq!(got.take(), vec![6, 7]);
    // A driver's own mapping (async-wp) cannot be kept: parking untracks it.
    let m = Anon::expect(4 * p);
    // SAFETY: `m` outlives the region.
    let t = unsafe { mgr.track(m.ptr(), m.len(), BackendKind::AsyncWp, &TrackOptions::default()) }.unwrap();
    write(m.ptr(), 0, 1);
    assert!(!mgr.park(t.id, &mut got.sink()).unwrap());
    assert_eq!(got.take(), vec![0]);
    assert!(matches!(mgr.untrack(t.id, &mut got.sink()), Err(GuardError::UnknownRegion(_))));
}

/// Four writers stamp words into four host-import regions without pause, parked or not (a write
/// while parked stands for the GPU's); the collector collects, parks and resumes one region a
/// round, writing it itself while parked every third round. Every 250 rounds the writers stop, a last collection runs, and the memory rebuilt from
/// every run reported must equal the memory.
#[test]
fn no_write_lost_or_misplaced_while_regions_are_parked_and_resumed_under_racing_writers() {
    const REGIONS: usize = 4;
    const PAGES: usize = 16;
    const ROUNDS: usize = 10_000;
    let p = page_size();
    let len = PAGES * p;
    let mgr = GuardManager::new();
    let regions: Vec<(Tracked, ArenaBlock)> = (0..REGIONS).map(|_| host_import(&mgr, PAGES, 9)).collect();
    let mirrors: Vec<Mutex<Vec<u8>>> = (0..REGIONS).map(|_| Mutex::new(vec![0u8; len])).collect();
    let index = |id: RegionId| regions.iter().position(|(t, _)| t.id == id).unwrap();
    let gate = RwLock::new(());
    let stop = AtomicBool::new(false);
    let stamps = AtomicU64::new(1);
    let apply = |i: usize, off: usize, bytes: &[u8]| mirrors[i].lock()[off..off + bytes.len()].copy_from_slice(bytes);
    std::thread::scope(|s| {
        for w in 0..4u64 {
            let (regions, gate, stop, stamps) = (&regions, &gate, &stop, &stamps);
            s.spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ w;
                while !stop.load(Ordering::Relaxed) {
                    let _g = gate.read();
                    for _ in 0..64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let (t, _) = &regions[(x % REGIONS as u64) as usize];
                        let word = ((x >> 8) as usize % (len / 8)) * 8;
                        let v = stamps.fetch_add(1, Ordering::Relaxed);
                        // SAFETY: an aligned word inside the region's block.
                        unsafe { std::ptr::write_volatile(t.app_ptr.add(word) as *mut u64, v) };
                    }
                }
            });
        }
        let mut parked_pages = 0usize;
        for round in 0..ROUNDS {
            mgr.collect_all(9, &|_| true, &mut |r: RegionId, off: usize, b: &[u8]| apply(index(r), off, b)).unwrap();
            let i = round % REGIONS;
            let (t, block) = &regions[i];
            assert!(mgr.park(t.id, &mut |off: usize, b: &[u8]| apply(i, off, b)).unwrap());
            if round % 3 == 0 {
                // The "GPU" writes it while parked too (the writers may not be scheduled in this
                // short window), and a collection while it is parked keeps what it finds for the
                // resume.
                let word = (round * 8 * 67) % len;
                // SAFETY: an aligned word inside the region's block.
                unsafe {
                    std::ptr::write_volatile(t.app_ptr.add(word) as *mut u64, stamps.fetch_add(1, Ordering::Relaxed))
                };
                mgr.collect_all(9, &|_| true, &mut |r: RegionId, off: usize, b: &[u8]| apply(index(r), off, b))
                    .unwrap();
            }
            // SAFETY: the block is the region's memory.
            let r = unsafe {
                mgr.resume(t.id, block.ptr(), block.len(), true, &mut |off: usize, b: &[u8]| {
                    parked_pages += 1;
                    apply(i, off, b)
                })
            };
            r.unwrap();
            if round % 250 == 249 || round == ROUNDS - 1 {
                let _paused = gate.write();
                mgr.collect_all(9, &|_| true, &mut |r: RegionId, off: usize, b: &[u8]| apply(index(r), off, b))
                    .unwrap();
                for (k, (t, _)) in regions.iter().enumerate() {
                    // SAFETY: the region's block, not written while the gate is held.
                    let mem = unsafe { std::slice::from_raw_parts(t.app_ptr, len) };
                    let m = mirrors[k].lock();
                    let lost: Vec<usize> = (0..len).step_by(8).filter(|&o| mem[o..o + 8] != m[o..o + 8]).collect();
                    assert!(lost.is_empty(), "round {round}, region {k}: words {lost:?} differ");
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(parked_pages > 0, "no write was ever found while parked: the test proves nothing");
    });
    for (t, _) in &regions {
        mgr.untrack(t.id, &mut |_: usize, _: &[u8]| {}).unwrap();
    }
}

#[test]
fn shadow_wp_keeps_its_shadow_and_reads_the_real_memory_only_when_it_may_have_changed() {
    // A memfd shadow, and a private one (memory the device never writes), whose fill at the
    // resume goes through the application's own view and must not count as written.
    for never in [false, true] {
        shadow_wp_keeps_its_shadow(never);
    }
}

fn shadow_wp_keeps_its_shadow(never: bool) {
    let p = page_size();
    let mgr = GuardManager::new();
    let opts = TrackOptions { persistent_key: Some(7), group: 3, device_never_writes: never, ..Default::default() };
    let real = Anon::expect(4 * p).populated(0x11);
    // SAFETY: `real` stays mapped until the park (the driver's mapping until vkUnmapMemory).
    let t = unsafe { mgr.track(real.ptr(), real.len(), BackendKind::ShadowWp, &opts) }.unwrap();
    assert_ne!(t.app_ptr, real.ptr(), "a shadow");
    write(t.app_ptr, p + 3, 0x22);
    let mut got = Pages::default();
    assert!(mgr.park(t.id, &mut got.sink()).unwrap());
    assert_eq!(got.take(), vec![1]);
    assert_eq!(read(real.ptr(), p + 3), 0x22, "copied back at the park");
    // The driver unmaps its memory: a parked shadow must not touch it, and a collection of the
    // group neither.
    drop(real);
    assert!(collect_all(&mgr, 3, t.id).is_empty());
    // A write through the stale pointer (undefined behaviour for the application) is tracked as
    // if made after the next map; a collection while parked keeps it and never touches the real
    // memory.
    write(t.app_ptr, 9, 0x77);
    assert!(collect_all(&mgr, 3, t.id).is_empty());
    // Mapped again elsewhere, where the memory holds what it held (nobody else wrote it): the
    // shadow is reused without a read. The bytes at page 2 differ only to show that it was not
    // read (a real driver's memory would hold 0x11 there).
    let real = Anon::expect(4 * p).populated(0x11);
    write(real.ptr(), p + 3, 0x22);
    write(real.ptr(), 2 * p, 0x33);
    // SAFETY: `real` is mapped for the rest of the test.
    let t2 = unsafe { mgr.resume(t.id, real.ptr(), real.len(), true, &mut got.sink()) }.unwrap();
    assert_eq!(t2.app_ptr, t.app_ptr, "the same pointer again");
    assert_eq!(got.take(), vec![0], "the write while parked, at the resume");
    assert_eq!(read(real.ptr(), 9), 0x77, "and copied to the real memory");
    assert_eq!((read(t2.app_ptr, p + 3), read(t2.app_ptr, 2 * p)), (0x22, 0x11), "unchanged: not read");
    assert!(collect_all(&mgr, 3, t.id).is_empty());
    write(t2.app_ptr, 3 * p, 0x44);
    assert_eq!(collect_all(&mgr, 3, t.id), vec![3]);
    assert_eq!(read(real.ptr(), 3 * p), 0x44, "copied to the new real memory");
    // The device may have written it: filled from the real memory at the resume.
    assert!(mgr.park(t.id, &mut got.sink()).unwrap());
    write(real.ptr(), 2 * p + 1, 0x55);
    // Filled from the real memory: a write while parked is overwritten, as the driver's memory
    // would not have kept it either, and not reported.
    write(t.app_ptr, 3 * p + 9, 0x78);
    // SAFETY: as above.
    let t3 = unsafe { mgr.resume(t.id, real.ptr(), real.len(), false, &mut got.sink()) }.unwrap();
    assert_eq!((read(t3.app_ptr, 2 * p), read(t3.app_ptr, 2 * p + 1)), (0x33, 0x55), "refreshed");
    assert_eq!(read(t3.app_ptr, 3 * p + 9), read(real.ptr(), 3 * p + 9));
    assert!(got.take().is_empty());
    assert!(collect_all(&mgr, 3, t.id).is_empty(), "the refresh is no application write");
    // Another length is refused and the region stays parked; untracking it then works.
    assert!(mgr.park(t.id, &mut got.sink()).unwrap());
    // SAFETY: never dereferenced: refused first.
    assert!(unsafe { mgr.resume(t.id, real.ptr(), 2 * p, true, &mut got.sink()) }.is_err());
    mgr.untrack(t.id, &mut got.sink()).unwrap();
    assert!(got.take().is_empty());
    mgr.release_persistent(7);
}
