//! shadow-wp specific checks: refresh from the real memory (what the GPU wrote) into pages the
//! application has not written, never at the cost of an application write, on both kinds of
//! shadow (shared, and private for memory the device was said never to write); the fallback of
//! `auto` onto shadow-wp for a mapping async-wp refuses; persistent shadows; pages the kernel
//! drops from the application view.

#[path = "common/guard.rs"]
mod harness;

use harness::{Mapping, MemKind};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use vkdirty::config::AUTO_ORDER;
use vkdirty::guard::shadow_wp::{RefreshStats, RefreshStep, ShadowWp};
use vkdirty::guard::{page_size, Backend, BackendKind, GuardError, GuardManager, RegionId, TrackOptions};

/// One region tracked directly by a [`ShadowWp`] instance.
struct Tracked<'a> {
    b: &'a ShadowWp,
    id: RegionId,
    app: *mut u8,
    real: *mut u8,
    len: usize,
}

/// The two kinds of shadow: shared (a memfd mapped twice, for memory the device may write) and
/// private (for memory the device never writes; told later that it does, as the layer is when a
/// resource that lets the device write is bound, it is refreshed through the one view).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Shared,
    Private,
}

const KINDS: [Kind; 2] = [Kind::Shared, Kind::Private];

impl Kind {
    fn opts(self, persistent_key: Option<u64>) -> TrackOptions {
        TrackOptions { device_never_writes: self == Kind::Private, persistent_key, ..Default::default() }
    }
}

/// Whether the mapping at `addr` is private anonymous memory (`/proc/self/maps`: flag `p`, no
/// inode).
fn private_anonymous(addr: usize) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| {
            let (a, b) = l.split_whitespace().next().unwrap().split_once('-').unwrap();
            (usize::from_str_radix(a, 16).unwrap()..usize::from_str_radix(b, 16).unwrap()).contains(&addr)
        })
        .unwrap_or_else(|| panic!("{addr:#x} is not mapped"));
    let f: Vec<&str> = line.split_whitespace().collect();
    f[1].ends_with('p') && f[4] == "0"
}

impl<'a> Tracked<'a> {
    /// Tracks a shadow of `kind`; a private one is then told the device writes the memory.
    fn of(b: &'a ShadowWp, id: u64, real: *mut u8, len: usize, kind: Kind, key: Option<u64>) -> Tracked<'a> {
        let t = Tracked::new(b, id, real, len, &kind.opts(key));
        assert_eq!(private_anonymous(t.app as usize), kind == Kind::Private, "{kind:?} shadow");
        if kind == Kind::Private {
            b.device_writes(t.id).unwrap();
        }
        t
    }

    fn new(b: &'a ShadowWp, id: u64, real: *mut u8, len: usize, opts: &TrackOptions) -> Tracked<'a> {
        let id = RegionId(id);
        // SAFETY: test mappings outlive the region, which is untracked before they are dropped.
        let app = unsafe { b.track(id, real, len, opts) }.expect("track");
        assert_ne!(app, real, "shadow-wp hands out a shadow");
        assert_eq!(app as usize % page_size(), real as usize % page_size(), "offset in page kept");
        Tracked { b, id, app, real, len }
    }

    fn app_write(&self, off: usize, v: u8) {
        assert!(off < self.len);
        // SAFETY: in bounds, through the application pointer.
        unsafe { std::ptr::write_volatile(self.app.add(off), v) };
    }

    fn gpu_write(&self, off: usize, v: u8) {
        assert!(off < self.len);
        // SAFETY: in bounds of the real memory, behind the shadow (what a GPU does).
        unsafe { std::ptr::write_volatile(self.real.add(off), v) };
    }

    fn app(&self, off: usize) -> u8 {
        // SAFETY: in bounds.
        unsafe { std::ptr::read_volatile(self.app.add(off)) }
    }

    fn real(&self, off: usize) -> u8 {
        // SAFETY: in bounds.
        unsafe { std::ptr::read_volatile(self.real.add(off)) }
    }

    fn refresh(&self) -> RefreshStats {
        self.b.refresh(self.id, 0..self.len).expect("refresh")
    }

    /// Collects; returns the region-relative pages reported, and checks each run's bytes are
    /// what the application view holds.
    fn collect(&self) -> BTreeSet<usize> {
        let p = page_size();
        let mut pages = BTreeSet::new();
        let mut sink = |off: usize, bytes: &[u8]| {
            for (i, &b) in bytes.iter().enumerate() {
                assert_eq!(b, self.app(off + i), "run byte {} differs from the application view", off + i);
            }
            pages.extend(off / p..(off + bytes.len()).div_ceil(p));
        };
        self.b.collect(self.id, None, &mut sink).expect("collect");
        pages
    }

    fn untrack(self) -> BTreeSet<usize> {
        let p = page_size();
        let mut pages = BTreeSet::new();
        let mut sink = |off: usize, bytes: &[u8]| {
            pages.extend(off / p..(off + bytes.len()).div_ceil(p));
        };
        self.b.untrack(self.id, &mut sink).expect("untrack");
        pages
    }
}

fn set(v: &[usize]) -> BTreeSet<usize> {
    v.iter().copied().collect()
}

#[test]
fn refresh_brings_gpu_writes_into_pages_the_application_did_not_write() {
    let p = page_size();
    for (mem, kind) in harness::MEM_KINDS.into_iter().flat_map(|m| KINDS.map(|k| (m, k))) {
        let mem = (mem, kind);
        let m = Mapping::new(mem.0, 8);
        m.fill(3);
        let b = ShadowWp::new().expect("shadow-wp available");
        let t = Tracked::of(&b, 1, m.ptr, m.len, kind, None);
        assert_eq!(t.app(5), t.real(5), "{mem:?}: the shadow starts as a copy");
        // The application writes pages 1 and 3; the GPU writes pages 1, 2, 3 and 5.
        t.app_write(p + 10, 0xA1);
        t.app_write(3 * p + 20, 0xA3);
        for pg in [1, 2, 3, 5] {
            t.gpu_write(pg * p + 10, 0xB0 + pg as u8);
            t.gpu_write(pg * p + 100, 0xC0 + pg as u8);
        }
        let st = t.refresh();
        assert_eq!(st.pages_written, 2, "{mem:?}: {st:?}");
        assert_eq!(st.pages_compared, 6, "{mem:?}: {st:?}");
        assert_eq!(st.pages_refreshed, 2, "{mem:?}: {st:?}");
        assert_eq!((st.races, st.words_contended), (0, 0), "{mem:?}: {st:?}");
        // Unwritten pages show what the GPU wrote.
        assert_eq!((t.app(2 * p + 10), t.app(2 * p + 100)), (0xB2, 0xC2), "{mem:?}");
        assert_eq!((t.app(5 * p + 10), t.app(5 * p + 100)), (0xB5, 0xC5), "{mem:?}");
        // Written pages keep the application's bytes, all of them.
        assert_eq!(t.app(p + 10), 0xA1, "{mem:?}");
        assert_eq!(t.app(3 * p + 20), 0xA3, "{mem:?}");
        assert_ne!(t.app(3 * p + 10), 0xB3, "{mem:?}: a written page is not refreshed");
        // The refresh is no application write: the collection reports the two written pages.
        assert_eq!(t.collect(), set(&[1, 3]), "{mem:?}");
        assert_eq!(t.real(p + 10), 0xA1, "{mem:?}: copied back");
        assert_eq!(t.collect(), set(&[]), "{mem:?}");
        // Once collected, page 1 is refreshed again.
        t.gpu_write(p + 200, 0xD1);
        let st = t.refresh();
        assert_eq!((st.pages_written, st.pages_refreshed), (0, 1), "{mem:?}: {st:?}");
        assert_eq!(t.app(p + 200), 0xD1, "{mem:?}");
        assert_eq!(t.collect(), set(&[]), "{mem:?}: still no application write");
        // A refresh with nothing new changes nothing.
        let st = t.refresh();
        assert_eq!((st.pages_compared, st.pages_refreshed, st.words), (8, 0, 0), "{mem:?}: {st:?}");
        assert_eq!(t.untrack(), set(&[]), "{mem:?}");
        assert_eq!(b.totals().pages_refreshed, 3, "{mem:?}");
    }
}

#[test]
fn refresh_stays_inside_an_unaligned_region() {
    for kind in KINDS {
        refresh_stays_inside_an_unaligned_region_of(kind);
    }
}

fn refresh_stays_inside_an_unaligned_region_of(kind: Kind) {
    let p = page_size();
    let m = Mapping::new(MemKind::PrivateAnon, 4);
    m.fill(1);
    let b = ShadowWp::new().unwrap();
    let (start, len) = (p - 3, 2 * p + 5); // starts 3 bytes before a page end, ends mid-word
                                           // SAFETY: inside the mapping.
    let real = unsafe { m.ptr.add(start) };
    let t = Tracked::of(&b, 1, real, len, kind, None);
    // The GPU changes every byte of the mapping, inside and outside the region.
    for i in 0..m.len {
        // SAFETY: in bounds of the mapping.
        unsafe { *m.ptr.add(i) ^= 0xFF };
    }
    let st = t.refresh();
    assert_eq!((st.pages_compared, st.pages_refreshed, st.rewritten), (4, 4, 0), "{kind:?}: {st:?}");
    for off in 0..len {
        assert_eq!(t.app(off), t.real(off), "byte {off}");
    }
    // The bytes of the shadow's pages outside the region were not touched: writing them back
    // would change memory that is not the region's. (The shadow keeps the original copy there.)
    // SAFETY: the bytes just before and after the region in the shadow's first and last pages.
    let (before, after) = unsafe { (*t.app.sub(1), *t.app.add(len)) };
    // SAFETY: the real bytes next to the region.
    let (real_before, real_after) = unsafe { (*real.sub(1), *real.add(len)) };
    assert_ne!(before, real_before);
    assert_ne!(after, real_after);
    assert_eq!(t.collect(), set(&[]));
    t.untrack();
}

/// The races a refresh must survive, made deterministic: the test writes through the
/// application pointer at each step of the refresh.
#[test]
fn an_application_write_racing_the_refresh_wins() {
    for kind in KINDS {
        an_application_write_racing_the_refresh_wins_on(kind);
    }
}

fn an_application_write_racing_the_refresh_wins_on(kind: Kind) {
    let p = page_size();
    let m = Mapping::new(MemKind::PrivateAnon, 4);
    m.fill(0);
    let b = ShadowWp::new().unwrap();
    let t = Tracked::of(&b, 1, m.ptr, m.len, kind, None);
    let old = t.app(p + 8);
    let before9 = t.app(p + 9);
    // The GPU rewrites pages 1 and 2 completely.
    for i in p..3 * p {
        t.gpu_write(i, !t.real(i));
    }
    let gpu_byte = t.real(p + 8);
    let app = t.app;
    // 1. Written after the words were read, before the check: the page is left alone.
    let st = b
        .refresh_interleaved(t.id, 0..t.len, &mut |step| {
            if step == RefreshStep::BeforeCheck {
                // SAFETY: in bounds of the application view. On page 1: the application writes
                // the value the byte already had (invisible to a compare-and-swap), and another
                // byte with a new value. Page 2 is left alone.
                unsafe {
                    std::ptr::write_volatile(app.add(p + 8), old);
                    std::ptr::write_volatile(app.add(p + 100), 0x5A);
                }
            }
        })
        .unwrap();
    assert_ne!(gpu_byte, old);
    assert_eq!(st.pages_refreshed, 1, "only page 2: {st:?}");
    assert_eq!(st.races, 1, "page 1 was written during the refresh: {st:?}");
    assert_eq!(st.words_contended, 0, "{st:?}");
    assert_eq!(t.app(p + 8), old, "the application's write of the old value stands");
    assert_eq!(t.app(p + 100), 0x5A, "the application's new value stands");
    assert_eq!(t.app(p + 9), before9, "page 1 reads as if it had not been refreshed");
    assert_eq!(t.app(2 * p + 9), t.real(2 * p + 9), "page 2 was refreshed");
    assert_eq!(t.collect(), set(&[1]));
    assert_eq!((t.real(p + 8), t.real(p + 100)), (old, 0x5A));

    // 2. Written after the check, before the swaps: the written word keeps the application's
    // value; the rest of the page is refreshed.
    let (before17, before24) = (t.app(p + 17), t.app(p + 24));
    assert!(before17 != 0x77 && before24 != 0x77);
    for i in p..2 * p {
        t.gpu_write(i, 0x77);
    }
    let st = b
        .refresh_interleaved(t.id, 0..t.len, &mut |step| {
            if step == RefreshStep::BeforeSwap {
                // SAFETY: in bounds of the application view.
                unsafe { std::ptr::write_volatile(app.add(p + 16), 0x11) };
            }
        })
        .unwrap();
    assert_eq!((st.races, st.words_contended, st.pages_refreshed), (0, 1, 1), "{st:?}");
    // A private shadow finds the page changed after the swaps and marks it written again.
    assert_eq!(st.rewritten, u64::from(kind == Kind::Private), "{kind:?}: {st:?}");
    assert_eq!(t.app(p + 16), 0x11, "written before the swap: kept");
    assert_eq!(t.app(p + 17), before17, "the contended word is not swapped at all");
    assert_eq!(t.app(p + 24), 0x77, "other words of the page are refreshed");
    assert_eq!(t.collect(), set(&[1]));

    // 3. Written after the swaps (the next application store): it simply stands.
    for i in p..2 * p {
        t.gpu_write(i, 0x33);
    }
    let st = t.refresh();
    assert_eq!((st.races, st.words_contended, st.pages_refreshed, st.rewritten), (0, 0, 1, 0), "{st:?}");
    assert_eq!(t.collect(), set(&[]), "{kind:?}: the refresh's own writes are not reported");
    t.app_write(p + 40, 0x33);
    t.app_write(p + 48, 0x44);
    assert_eq!((t.app(p + 40), t.app(p + 48), t.app(p + 56)), (0x33, 0x44, 0x33));
    assert_eq!(t.collect(), set(&[1]));
    assert_eq!((t.real(p + 40), t.real(p + 48)), (0x33, 0x44));
    t.untrack();
}

/// A private shadow's refresh swaps words in through the application's own view, then protects
/// the pages again: a store that lands between the swaps and the protection is kept and
/// collected, whether into a word the refresh brought in or another one; without one, nothing is
/// reported. A shared shadow has no such window (its swaps go through the layer's view).
#[test]
fn a_write_between_the_swaps_and_the_protection_is_collected() {
    let p = page_size();
    for kind in KINDS {
        let m = Mapping::new(MemKind::PrivateAnon, 4);
        m.fill(0);
        let b = ShadowWp::new().unwrap();
        let t = Tracked::of(&b, 1, m.ptr, m.len, kind, None);
        let app = t.app;
        for (round, at) in [(1u8, None), (2, Some(p + 8)), (3, Some(p + 9)), (4, Some(2 * p + 1000))] {
            // The GPU rewrites every byte of pages 1 and 2.
            for i in p..3 * p {
                t.gpu_write(i, 0x10 * round);
            }
            let mut windows = 0;
            let st = b
                .refresh_interleaved(t.id, 0..t.len, &mut |step| {
                    if step == RefreshStep::BeforeProtect {
                        windows += 1;
                        if let Some(at) = at {
                            // SAFETY: in bounds of the application view.
                            unsafe { std::ptr::write_volatile(app.add(at), 0xE0 + round) };
                        }
                    }
                })
                .unwrap();
            assert_eq!(windows, usize::from(kind == Kind::Private), "{kind:?} round {round}");
            assert_eq!(st.pages_refreshed, 2, "{kind:?} round {round}: {st:?}");
            match (kind, at) {
                (Kind::Shared, _) | (_, None) => assert_eq!(st.rewritten, 0, "{kind:?} round {round}: {st:?}"),
                (Kind::Private, Some(_)) => assert_eq!(st.rewritten, 1, "{kind:?} round {round}: {st:?}"),
            }
            // Only a private shadow has the window, so only there was anything written.
            let at = at.filter(|_| windows > 0);
            let want: Vec<usize> = at.map(|a| a / p).into_iter().collect();
            assert_eq!(t.collect(), set(&want), "{kind:?} round {round}");
            if let Some(at) = at {
                assert_eq!((t.app(at), t.real(at)), (0xE0 + round, 0xE0 + round), "{kind:?} round {round}");
            }
            // Every other byte of the two pages is the GPU's.
            for i in (p..3 * p).filter(|&i| Some(i) != at) {
                assert_eq!(t.app(i), 0x10 * round, "{kind:?} round {round}: byte {i}");
            }
            assert_eq!(t.collect(), set(&[]), "{kind:?} round {round}");
        }
        t.untrack();
    }
}

/// A writer thread stamps increasing values into its own words, while a "GPU" thread rewrites
/// other words of the same pages in the real memory (and every word of pages the writer never
/// touches) and this thread refreshes and collects in a loop. No stamp may be lost: at the end
/// every word holds its writer's last stamp.
#[test]
fn no_application_write_lost_to_concurrent_refreshes() {
    for kind in KINDS {
        no_application_write_lost_to_concurrent_refreshes_on(kind);
    }
}

fn no_application_write_lost_to_concurrent_refreshes_on(kind: Kind) {
    const PAGES: usize = 16;
    // The writer's words: the even words of the first half; the rest is the GPU's.
    const SHARED: usize = PAGES / 2;
    let m = Mapping::new(MemKind::PrivateAnon, PAGES);
    m.fill(0);
    let b = ShadowWp::new().unwrap();
    let t = Tracked::of(&b, 1, m.ptr, m.len, kind, None);
    let words = m.len / 8;
    let app_words = SHARED * page_size() / 8;
    let gpu_rounds = AtomicU64::new(0);
    let (app, real) = (t.app as usize, t.real as usize);
    // SAFETY: aligned words of the application view, before any thread starts.
    let last: Vec<AtomicU64> =
        (0..words).map(|w| AtomicU64::new(unsafe { std::ptr::read((app + w * 8) as *const u64) })).collect();
    let stop = AtomicBool::new(false);
    let mut refreshes = 0u64;
    let mut collections = 0u64;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = 0x2545_F491_4F6C_DD1Du64;
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let w = (rng as usize % (app_words / 2)) * 2;
                seq += 1;
                // SAFETY: an aligned word of the application view; only this thread writes it.
                unsafe { AtomicU64::from_ptr((app + w * 8) as *mut u64) }.store(seq, Ordering::Relaxed);
                last[w].store(seq, Ordering::Relaxed);
                if seq % 32 == 0 {
                    std::thread::yield_now();
                }
            }
        });
        s.spawn(|| {
            let mut v = 1u64 << 63;
            while !stop.load(Ordering::Relaxed) {
                v += 1;
                for w in (1..app_words).step_by(2).chain(app_words..words) {
                    // SAFETY: an aligned word of the real memory that only this thread writes.
                    unsafe { AtomicU64::from_ptr((real + w * 8) as *mut u64) }.store(v, Ordering::Relaxed);
                }
                gpu_rounds.fetch_add(1, Ordering::Relaxed);
                std::thread::yield_now();
            }
        });
        // Enough rounds of both sides, however loaded the machine is (bounded in time).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            t.refresh();
            refreshes += 1;
            if refreshes % 4 == 0 {
                t.b.collect(t.id, None, &mut |_: usize, _: &[u8]| {}).unwrap();
                collections += 1;
            }
            if refreshes >= 20_000 && gpu_rounds.load(Ordering::Relaxed) >= 100 {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let tot = b.totals();
    eprintln!("{kind:?}: {refreshes} refreshes, {collections} collections: {tot:?}");
    for w in (0..app_words).step_by(2) {
        // SAFETY: an aligned word of the application view; the writers have stopped.
        let got = unsafe { std::ptr::read_volatile((app + w * 8) as *const u64) };
        assert_eq!(got, last[w].load(Ordering::Relaxed), "application word {w} lost a write ({tot:?})");
    }
    t.collect();
    for w in (0..app_words).step_by(2) {
        // SAFETY: an aligned word of the real memory.
        let got = unsafe { std::ptr::read_volatile((real + w * 8) as *const u64) };
        assert_eq!(got, last[w].load(Ordering::Relaxed), "real word {w} after the last collection");
    }
    assert!(tot.words > 0, "the refreshes brought GPU words in: {tot:?}");
    // SAFETY: an aligned word of the application view, on a page only the GPU writes.
    let gpu_word = unsafe { std::ptr::read_volatile((app + (words - 1) * 8) as *const u64) };
    assert!(gpu_word > 1 << 63, "the GPU-only pages were refreshed: {gpu_word:#x}");
    t.untrack();
}

#[test]
fn a_written_page_the_kernel_dropped_from_the_view_is_still_collected() {
    let p = page_size();
    let m = Mapping::new(MemKind::PrivateAnon, 4);
    m.fill(2);
    let b = ShadowWp::new().unwrap();
    let t = Tracked::new(&b, 1, m.ptr, m.len, &TrackOptions::default());
    t.app_write(p + 1, 0xEE);
    t.app_write(2 * p + 1, 0xEF);
    // Drop the application view's page-table entries of pages 1-3 (reclaim does the same to a
    // shmem page); page 3 was never written.
    // SAFETY: page-aligned pages of the application view.
    let r = unsafe { libc::madvise(t.app.add(p).cast(), 3 * p, libc::MADV_DONTNEED) };
    assert_eq!(r, 0);
    assert_eq!(t.app(p + 1), 0xEE, "shmem keeps the bytes");
    assert_eq!(t.collect(), set(&[1, 2]));
    assert_eq!((t.real(p + 1), t.real(2 * p + 1)), (0xEE, 0xEF));
    assert_eq!(t.collect(), set(&[]));
    t.app_write(p + 2, 0xED);
    assert_eq!(t.collect(), set(&[1]));
    t.untrack();
}

#[test]
fn persistent_shadow_is_kept_across_untrack_and_refreshed_on_reuse() {
    for kind in KINDS {
        persistent_shadow_is_kept_on(kind);
    }
}

fn persistent_shadow_is_kept_on(kind: Kind) {
    let p = page_size();
    let m = Mapping::new(MemKind::PrivateAnon, 4);
    m.fill(4);
    let b = ShadowWp::new().unwrap();
    let opts = kind.opts(Some(42));
    let t = Tracked::new(&b, 1, m.ptr, m.len, &opts);
    let first = t.app;
    t.app_write(p, 1);
    assert_eq!(t.untrack(), set(&[1]));
    assert_eq!(b.kept_count(), 1);
    // While unmapped, the GPU (or the driver) changes the memory.
    // SAFETY: in bounds of the mapping.
    unsafe { *m.ptr.add(2 * p) = 0x99 };
    let t = Tracked::new(&b, 2, m.ptr, m.len, &opts);
    assert_eq!(t.app, first, "same pointer for the same allocation");
    assert_eq!(b.kept_count(), 0);
    assert_eq!(t.app(2 * p), 0x99, "refreshed on reuse");
    assert_eq!(t.app(p), 1);
    assert_eq!(t.collect(), set(&[]), "the refresh on reuse is no application write");
    t.app_write(3 * p, 7);
    assert_eq!(t.collect(), set(&[3]));
    t.untrack();
    b.release_persistent(42);
    assert_eq!(b.kept_count(), 0);
}

/// A mapping userfaultfd refuses, as drivers' are: the submission-queue entries of an io_uring
/// instance, which the kernel maps `VM_MIXEDMAP | VM_DONTEXPAND` (VmFlags `rd wr sh mr mw ms de
/// mm`, the flags of NVIDIA's system-memory mappings but `me dd`), written by the application.
/// Where io_uring is disabled, the control page of a perf event's ring buffer
/// (`VM_DONTEXPAND`). Nothing is submitted or enabled, so the kernel never reads these bytes.
struct SpecialMapping {
    _fd: std::os::fd::OwnedFd,
    ptr: *mut u8,
    len: usize,
    what: &'static str,
}

impl SpecialMapping {
    fn new() -> SpecialMapping {
        Self::io_uring_sqes()
            .or_else(|e| Self::perf_control_page().map_err(|f| format!("{e}; {f}")))
            .unwrap_or_else(|e| panic!("no mapping of the kind userfaultfd refuses can be made here: {e}"))
    }

    fn map(fd: i64, len: usize, offset: i64, what: &'static str) -> Result<SpecialMapping, String> {
        if fd < 0 {
            return Err(format!("{what}: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: the syscall returned a new descriptor we own.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        // SAFETY: a shared mapping of the descriptor, unmapped on drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap {what}: {}", std::io::Error::last_os_error()));
        }
        Ok(SpecialMapping { _fd: fd, ptr: p.cast(), len, what })
    }

    fn io_uring_sqes() -> Result<SpecialMapping, String> {
        // struct io_uring_params is 120 bytes; zero asks for the defaults.
        let mut params = [0u8; 120];
        let entries = (4 * page_size() / 64) as u32; // 64-byte entries: 4 pages
                                                     // SAFETY: a valid params buffer of the size the kernel expects.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, entries, params.as_mut_ptr()) };
        const IORING_OFF_SQES: i64 = 0x1000_0000;
        Self::map(fd, 4 * page_size(), IORING_OFF_SQES, "io_uring submission entries")
    }

    fn perf_control_page() -> Result<SpecialMapping, String> {
        // struct perf_event_attr, version 0 (64 bytes): type, size, config; everything else 0.
        let mut attr = [0u8; 64];
        attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
        attr[4..8].copy_from_slice(&64u32.to_ne_bytes());
        attr[8..16].copy_from_slice(&9u64.to_ne_bytes()); // PERF_COUNT_SW_DUMMY
                                                          // SAFETY: a valid attr buffer; this thread, any CPU, no group, no flags.
        let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0) };
        // Control page plus one data page; only the control page is writable.
        let mut m = Self::map(fd, 2 * page_size(), 0, "perf event control page")?;
        m.len = page_size();
        Ok(m)
    }
}

impl Drop for SpecialMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what `map` mapped (the perf case maps one page more: unmap both).
        unsafe { libc::munmap(self.ptr.cast(), self.len.max(2 * page_size())) };
    }
}

/// `auto` on a mapping async-wp refuses takes shadow-wp, which tracks it exactly. The refusal
/// here has the cause NVIDIA's mappings have (a `VM_SPECIAL` mapping); NVIDIA itself is proven on
/// the device only.
#[test]
fn auto_falls_back_to_shadow_wp_when_async_wp_refuses_the_mapping() {
    let p = page_size();
    let special = SpecialMapping::new();
    let real = special.ptr;
    let len = special.len - 100;
    let mgr = GuardManager::new();
    // SAFETY: the ring stays mapped until after untrack.
    let (t, refusals) = unsafe { mgr.track_first(real, len, &AUTO_ORDER, &TrackOptions::default()) }
        .unwrap_or_else(|e| panic!("no backend: {e:?}"));
    assert_eq!(t.backend, BackendKind::ShadowWp, "{}: refusals: {refusals:?}", special.what);
    assert_eq!(refusals.len(), 1);
    match &refusals[0] {
        GuardError::RegionRefused { backend: BackendKind::AsyncWp, reason, .. } => {
            assert!(reason.contains("UFFDIO_REGISTER"), "{reason}")
        }
        e => panic!("unexpected refusal {e}"),
    }
    let last = (len - 1) / p;
    // SAFETY: in bounds, through the application pointer.
    unsafe {
        *t.app_ptr.add(5) = 0x42;
        *t.app_ptr.add(len - 1) = 0x43;
    }
    let mut pages = std::collections::BTreeSet::new();
    mgr.collect(t.id, &mut |off: usize, b: &[u8]| pages.extend(off / p..(off + b.len()).div_ceil(p))).unwrap();
    assert_eq!(pages, set(&[0, last]), "{}", special.what);
    // SAFETY: in bounds of the special mapping.
    assert_eq!(unsafe { (*real.add(5), *real.add(len - 1)) }, (0x42, 0x43), "reached the real memory");
    let mut again = 0;
    mgr.collect(t.id, &mut |_: usize, _: &[u8]| again += 1).unwrap();
    assert_eq!(again, 0);
    mgr.untrack(t.id, &mut |_: usize, _: &[u8]| ()).unwrap();
}
