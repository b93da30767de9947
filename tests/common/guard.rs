//! Backend-generic checks of the page-guard engine, parametrised by [`BackendKind`] and by the
//! kind of memory tracked. Used by `tests/guard_backends.rs`; a new backend joins by adding its
//! kind to [`BACKENDS`] and, if it does not report written pages exactly, to [`reports`].
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use vkdirty::guard::{page_size, BackendKind, CollectStats, GuardManager, RegionId, TrackOptions, Tracked};

/// The backends this build creates, checked by every generic test.
pub const BACKENDS: &[BackendKind] =
    &[BackendKind::AsyncWp, BackendKind::ShadowWp, BackendKind::Full, BackendKind::Assisted, BackendKind::Shadow];

/// What a backend reports at a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reports {
    /// Exactly the pages written since the last collection (by anyone, at page granularity).
    WrittenPages,
    /// Exactly the ranges declared with `flushed` (the harness declares each write it makes).
    Declared,
    /// Every page of the region (or of the collected range).
    Everything,
    /// Exactly the pages written through this region's own pointer (shadow backends: a write
    /// through another region that shares the page lands in that region's shadow).
    OwnWrites,
}

/// Reports exactly the pages written (by anyone, or through the region's pointer).
pub fn exact(kind: BackendKind) -> bool {
    matches!(reports(kind), Reports::WrittenPages | Reports::OwnWrites)
}

pub fn reports(kind: BackendKind) -> Reports {
    match kind {
        BackendKind::Full => Reports::Everything,
        BackendKind::Assisted => Reports::Declared,
        BackendKind::Shadow | BackendKind::ShadowWp => Reports::OwnWrites,
        _ => Reports::WrittenPages,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemKind {
    PrivateAnon,
    Memfd,
    DevZero,
}

pub const MEM_KINDS: [MemKind; 3] = [MemKind::PrivateAnon, MemKind::Memfd, MemKind::DevZero];

/// A mapping owned by a test, unmapped on drop.
pub struct Mapping {
    pub ptr: *mut u8,
    pub len: usize,
}

// SAFETY: the mapping is plain memory; tests synchronize their own accesses.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub fn new(kind: MemKind, pages: usize) -> Mapping {
        let len = pages * page_size();
        // SAFETY: plain mmap/open/memfd calls with checked results; the descriptor is closed
        // once mapped (the mapping keeps the file alive).
        unsafe {
            let (flags, fd) = match kind {
                MemKind::PrivateAnon => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
                MemKind::Memfd => {
                    let fd = libc::memfd_create(c"vkdirty-test".as_ptr(), libc::MFD_CLOEXEC);
                    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
                    assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
                    (libc::MAP_SHARED, fd)
                }
                MemKind::DevZero => {
                    let fd = libc::open(c"/dev/zero".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
                    assert!(fd >= 0, "open /dev/zero: {}", std::io::Error::last_os_error());
                    (libc::MAP_SHARED, fd)
                }
            };
            let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, 0);
            assert_ne!(p, libc::MAP_FAILED, "mmap {kind:?}: {}", std::io::Error::last_os_error());
            if fd >= 0 {
                libc::close(fd);
            }
            Mapping { ptr: p.cast(), len }
        }
    }

    /// Fills the mapping with a position-dependent pattern (populates every page).
    pub fn fill(&self, seed: u8) {
        for i in 0..self.len {
            // SAFETY: in bounds of the mapping.
            unsafe { *self.ptr.add(i) = (i as u8).wrapping_mul(31).wrapping_add(seed) };
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// One collection, copied out of the sink.
#[derive(Debug, Default)]
pub struct Collected {
    pub runs: Vec<(usize, Vec<u8>)>,
    pub stats: CollectStats,
}

/// A tracked region with a mirror of its real bytes, kept up to date from collections only.
pub struct Subject<'a> {
    pub mgr: &'a GuardManager,
    pub kind: BackendKind,
    pub t: Tracked,
    pub real: *mut u8,
    pub len: usize,
    pub mirror: Vec<u8>,
    pub ctx: String,
}

impl<'a> Subject<'a> {
    pub fn track(mgr: &'a GuardManager, kind: BackendKind, real: *mut u8, len: usize, ctx: &str) -> Subject<'a> {
        // SAFETY: test mappings outlive the subject and are untracked before they are dropped.
        let t = unsafe { mgr.track(real, len, kind, &TrackOptions::default()) }
            .unwrap_or_else(|e| panic!("{ctx}: track: {e}"));
        assert_eq!(t.backend, kind);
        // SAFETY: `real..real+len` is mapped.
        let mirror = unsafe { std::slice::from_raw_parts(real, len) }.to_vec();
        Subject { mgr, kind, t, real, len, mirror, ctx: format!("{ctx} [{kind}]") }
    }

    pub fn id(&self) -> RegionId {
        self.t.id
    }

    /// Writes through the application's pointer and declares the write flushed.
    pub fn write(&self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= self.len);
        // SAFETY: in bounds of the tracked region, through the pointer the application uses.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.t.app_ptr.add(off), bytes.len()) };
        self.mgr.flushed(self.id(), off..off + bytes.len()).unwrap();
    }

    pub fn read(&self, off: usize) -> u8 {
        // SAFETY: in bounds, through the application's pointer.
        unsafe { std::ptr::read_volatile(self.t.app_ptr.add(off)) }
    }

    pub fn collect(&mut self) -> Collected {
        self.collect_range(None)
    }

    pub fn collect_range(&mut self, range: Option<Range<usize>>) -> Collected {
        let mut c = Collected::default();
        let mut sink = |off: usize, b: &[u8]| c.runs.push((off, b.to_vec()));
        c.stats = match range {
            None => self.mgr.collect(self.id(), &mut sink),
            Some(r) => self.mgr.collect_range(self.id(), r, &mut sink),
        }
        .unwrap_or_else(|e| panic!("{}: collect: {e}", self.ctx));
        self.check_and_apply(&c);
        c
    }

    /// [`collect`](Self::collect) through the batch collection (`GuardManager::collect_all`) of
    /// the manager's regions of this kind, group 0: the subject must be the only one there.
    #[allow(dead_code)]
    pub fn collect_all_of_kind(&mut self) -> Collected {
        let mut c = Collected::default();
        let (id, kind) = (self.id(), self.kind);
        let mut sink = |rid: RegionId, off: usize, b: &[u8]| {
            assert_eq!(rid, id, "{kind}: a region of another subject");
            c.runs.push((off, b.to_vec()));
        };
        c.stats = self
            .mgr
            .collect_all(0, &|k| k == kind, &mut sink)
            .unwrap_or_else(|e| panic!("{}: collect_all: {e}", self.ctx));
        self.check_and_apply(&c);
        c
    }

    pub fn untrack(mut self) -> Collected {
        // A shadow is gone after untrack: keep the application's last view to compare.
        let view = (self.t.app_ptr != self.real).then(|| self.app_view().to_vec());
        let mut c = Collected::default();
        let mut sink = |off: usize, b: &[u8]| c.runs.push((off, b.to_vec()));
        c.stats = self.mgr.untrack(self.id(), &mut sink).unwrap_or_else(|e| panic!("{}: untrack: {e}", self.ctx));
        self.check_and_apply(&c);
        self.assert_same("memory", self.real_bytes());
        if let Some(v) = view {
            self.assert_same("the application's view", &v);
        }
        c
    }

    /// Runs lie inside the region, in order, without overlap; the stats agree; bytes go to the
    /// mirror.
    fn check_and_apply(&mut self, c: &Collected) {
        let mut prev_end = 0;
        let mut bytes = 0;
        for (i, (off, b)) in c.runs.iter().enumerate() {
            assert!(!b.is_empty(), "{}: empty run", self.ctx);
            assert!(off + b.len() <= self.len, "{}: run {off}+{} outside region of {}", self.ctx, b.len(), self.len);
            assert!(i == 0 || *off >= prev_end, "{}: runs out of order or overlapping", self.ctx);
            prev_end = off + b.len();
            bytes += b.len();
            self.mirror[*off..off + b.len()].copy_from_slice(b);
        }
        assert_eq!(c.stats.runs, c.runs.len(), "{}: stats.runs", self.ctx);
        assert_eq!(c.stats.bytes, bytes, "{}: stats.bytes", self.ctx);
        assert_eq!(c.stats.pages, self.pages_of(c).len(), "{}: stats.pages", self.ctx);
    }

    /// Absolute page numbers of the region.
    pub fn all_pages(&self) -> BTreeSet<usize> {
        let p = page_size();
        (self.real as usize / p..(self.real as usize + self.len).div_ceil(p)).collect()
    }

    /// Absolute page numbers touched by a collection's runs.
    pub fn pages_of(&self, c: &Collected) -> BTreeSet<usize> {
        pages_from(self.real, c)
    }

    /// Absolute page numbers of region offsets.
    pub fn pages_at(&self, offs: &[usize]) -> BTreeSet<usize> {
        offs.iter().map(|o| (self.real as usize + o) / page_size()).collect()
    }

    /// What this backend must report after the harness wrote (and declared) at `offs`.
    pub fn expect(&self, c: &Collected, offs: &[usize]) {
        let want = match reports(self.kind) {
            Reports::Everything => self.all_pages(),
            Reports::WrittenPages | Reports::Declared | Reports::OwnWrites => self.pages_at(offs),
        };
        assert_eq!(self.pages_of(c), want, "{}: reported pages (written at offsets {offs:?})", self.ctx);
    }

    /// The mirror, built from collections only, equals the real memory byte for byte and (for
    /// shadow backends) the application's view: a write a shadow lost would be missing from
    /// both the mirror and the real memory, but not from the view.
    pub fn assert_mirror(&self) {
        self.assert_same("memory", self.real_bytes());
        if self.t.app_ptr != self.real {
            self.assert_same("the application's view", self.app_view());
        }
    }

    fn real_bytes(&self) -> &[u8] {
        // SAFETY: the region is mapped.
        unsafe { std::slice::from_raw_parts(self.real, self.len) }
    }

    /// What the application reads through its pointer (while tracked).
    fn app_view(&self) -> &[u8] {
        // SAFETY: the application's pointer covers `len` bytes while the region is tracked.
        unsafe { std::slice::from_raw_parts(self.t.app_ptr, self.len) }
    }

    fn assert_same(&self, what: &str, bytes: &[u8]) {
        if let Some(i) = (0..self.len).find(|&i| bytes[i] != self.mirror[i]) {
            panic!("{}: mirror differs from {what} at offset {i} ({} != {})", self.ctx, self.mirror[i], bytes[i]);
        }
    }
}

fn ctx(mem: MemKind, what: &str) -> String {
    format!("{what} on {mem:?}")
}

/// Absolute page numbers touched by runs of a region starting at `base`.
fn pages_from(base: *mut u8, c: &Collected) -> BTreeSet<usize> {
    let p = page_size();
    let base = base as usize;
    c.runs.iter().flat_map(|(off, b)| (base + off) / p..(base + off + b.len()).div_ceil(p)).collect()
}

/// Reported set == written set, on fresh and on populated memory; a rescan reports nothing new.
pub fn exact_set(kind: BackendKind, mem: MemKind) {
    let p = page_size();
    for populated in [false, true] {
        let m = Mapping::new(mem, 16);
        if populated {
            m.fill(7);
        }
        let mgr = GuardManager::new();
        let mut s = Subject::track(&mgr, kind, m.ptr, m.len, &ctx(mem, &format!("exact_set populated={populated}")));
        let offs = [0, 3 * p + 17, 4 * p, 5 * p + p - 1, 9 * p + 100, 15 * p + 4000];
        for (i, &o) in offs.iter().enumerate() {
            s.write(o, &[0xA0 + i as u8]);
        }
        let c = s.collect();
        s.expect(&c, &offs);
        assert_eq!(c.stats.thp_pages, 0, "{}: THP on memory that has none", s.ctx);
        let again = s.collect();
        s.expect(&again, &[]);
        s.assert_mirror();
        s.untrack();
    }
}

/// Reading (including first-touch reads of never-populated pages) is never reported.
pub fn reads_not_reported(kind: BackendKind, mem: MemKind) {
    let p = page_size();
    let m = Mapping::new(mem, 8);
    let mgr = GuardManager::new();
    let mut s = Subject::track(&mgr, kind, m.ptr, m.len, &ctx(mem, "reads_not_reported"));
    let mut sum = 0u32;
    for i in 0..8 {
        sum += s.read(i * p + 5) as u32;
    }
    assert_eq!(sum, 0);
    let c = s.collect();
    s.expect(&c, &[]);
    s.write(2 * p, &[1]);
    let c = s.collect();
    s.expect(&c, &[2 * p]);
    for i in 0..8 {
        sum += s.read(i * p + 9) as u32;
    }
    assert_eq!(sum, 0);
    let c = s.collect();
    s.expect(&c, &[]);
    s.assert_mirror();
    s.untrack();
}

/// A page written twice between collections is reported once.
pub fn written_twice_reported_once(kind: BackendKind, mem: MemKind) {
    let p = page_size();
    let m = Mapping::new(mem, 4);
    m.fill(1);
    let mgr = GuardManager::new();
    let mut s = Subject::track(&mgr, kind, m.ptr, m.len, &ctx(mem, "written_twice"));
    s.write(p + 10, &[1, 2, 3]);
    s.write(p + 10, &[4, 5, 6]);
    s.write(p + 2000, &[7]);
    let c = s.collect();
    s.expect(&c, &[p + 10]);
    if exact(kind) {
        assert_eq!(c.runs.len(), 1, "{}", s.ctx);
        assert_eq!(c.stats.pages, 1, "{}", s.ctx);
    }
    s.assert_mirror();
    s.untrack();
}

/// A region that starts and ends inside pages: runs are clipped to it, offsets are relative
/// to its start, and its first and last bytes are tracked.
pub fn unaligned_region(kind: BackendKind, mem: MemKind) {
    let p = page_size();
    let m = Mapping::new(mem, 8);
    m.fill(3);
    let mgr = GuardManager::new();
    let (start, len) = (123, 5 * p + 77);
    // SAFETY: inside the mapping.
    let real = unsafe { m.ptr.add(start) };
    let mut s = Subject::track(&mgr, kind, real, len, &ctx(mem, "unaligned_region"));
    let offs = [0, len - 1, 3 * p];
    for &o in &offs {
        s.write(o, &[0x55]);
    }
    let c = s.collect();
    s.expect(&c, &offs);
    if reports(kind) != Reports::Declared {
        assert_eq!(c.runs.first().map(|r| r.0), Some(0), "{}: first run starts at the region", s.ctx);
        let last = c.runs.last().unwrap();
        assert_eq!(last.0 + last.1.len(), len, "{}: last run ends at the region's end", s.ctx);
        if exact(kind) {
            assert_eq!(c.runs[0].1.len(), p - start, "{}: first run clipped to the region", s.ctx);
        }
    }
    // A range collection that ends inside a written page loses nothing.
    s.write(2 * p + 10, &[9]);
    s.write(4 * p + 300, &[8]);
    let c = s.collect_range(Some(0..2 * p + 5));
    if exact(kind) {
        assert!(s.pages_of(&c).is_empty() || s.pages_of(&c) == s.pages_at(&[2 * p + 10]), "{}", s.ctx);
    }
    let rest = s.collect();
    let mut seen = s.pages_of(&c);
    seen.extend(s.pages_of(&rest));
    if reports(kind) != Reports::Everything {
        assert_eq!(seen, s.pages_at(&[2 * p + 10, 4 * p + 300]), "{}: range then whole", s.ctx);
    }
    s.assert_mirror();
    s.untrack();
}

/// `collect_range` reports only what lies in the range and keeps the rest for later.
pub fn range_collection(kind: BackendKind, mem: MemKind) {
    let p = page_size();
    let m = Mapping::new(mem, 8);
    let mgr = GuardManager::new();
    let mut s = Subject::track(&mgr, kind, m.ptr, m.len, &ctx(mem, "range_collection"));
    s.write(p + 1, &[1]);
    s.write(5 * p + 1, &[2]);
    let c = s.collect_range(Some(0..3 * p));
    match reports(kind) {
        Reports::Everything => assert_eq!(s.pages_of(&c), (0..3).map(|i| m.ptr as usize / p + i).collect()),
        _ => assert_eq!(s.pages_of(&c), s.pages_at(&[p + 1]), "{}", s.ctx),
    }
    let c = s.collect();
    s.expect(&c, &[5 * p + 1]);
    s.assert_mirror();
    s.untrack();
}

/// Two regions sharing a page: writes on the shared page reach both, whichever collects
/// first; untracking one leaves the other tracked.
pub fn shared_page(kind: BackendKind, mem: MemKind) {
    let p = page_size();
    let m = Mapping::new(mem, 4);
    m.fill(5);
    let mgr = GuardManager::new();
    let split = 2 * p + 50;
    // SAFETY: both inside the mapping.
    let (ra, rb) = unsafe { (m.ptr.add(100), m.ptr.add(split)) };
    let name = ctx(mem, "shared_page");
    let mut a = Subject::track(&mgr, kind, ra, split - 100, &format!("{name} A"));
    let mut b = Subject::track(&mgr, kind, rb, 4 * p - 7 - split, &format!("{name} B"));
    let b_off = |abs: usize| abs - split;
    let a_off = |abs: usize| abs - 100;

    // Both write their own part of the shared page 2.
    a.write(a_off(200), &[1]);
    a.write(a_off(2 * p + 10), &[2]);
    b.write(b_off(2 * p + 60), &[3]);
    b.write(b_off(3 * p + 1), &[4]);
    let ca = a.collect();
    a.expect(&ca, &[a_off(200), a_off(2 * p + 10)]);
    let cb = b.collect();
    b.expect(&cb, &[b_off(2 * p + 60), b_off(3 * p + 1)]);

    // Only A writes the shared page; B collects first, then A.
    a.write(a_off(2 * p + 20), &[5]);
    let cb = b.collect();
    let ca = a.collect();
    a.expect(&ca, &[a_off(2 * p + 20)]);
    match reports(kind) {
        Reports::WrittenPages => assert_eq!(b.pages_of(&cb), b.pages_at(&[0]), "{}: B sees page 2 written", b.ctx),
        Reports::OwnWrites => {
            assert!(cb.runs.is_empty(), "{}: B's own pointer wrote nothing", b.ctx)
        }
        Reports::Declared => assert!(cb.runs.is_empty(), "{}", b.ctx),
        Reports::Everything => assert_eq!(b.pages_of(&cb), b.all_pages()),
    }
    // Only B writes it; A collects first.
    b.write(b_off(2 * p + 70), &[6]);
    let ca = a.collect();
    let cb = b.collect();
    b.expect(&cb, &[b_off(2 * p + 70)]);
    match reports(kind) {
        Reports::WrittenPages => {
            assert_eq!(a.pages_of(&ca), a.pages_at(&[a_off(2 * p)]), "{}: A sees page 2 written by B", a.ctx)
        }
        Reports::OwnWrites => {
            assert!(ca.runs.is_empty(), "{}: A's own pointer wrote nothing", a.ctx)
        }
        _ => {}
    }
    a.assert_mirror();
    b.assert_mirror();

    // A leaves; B keeps tracking its pages, the shared one included.
    let ua = a.untrack();
    if reports(kind) != Reports::Everything {
        assert!(ua.runs.is_empty(), "{name}: nothing outstanding for A");
    }
    b.write(b_off(2 * p + 80), &[7]);
    b.write(b_off(3 * p + 2), &[8]);
    let cb = b.collect();
    b.expect(&cb, &[b_off(2 * p + 80), b_off(3 * p + 2)]);
    let cb = b.collect();
    b.expect(&cb, &[]);
    b.untrack();
}

/// Untrack reports outstanding writes; writes while untracked are not reported after
/// re-tracking; the re-tracked region is exact again.
pub fn untrack_retrack(kind: BackendKind, mem: MemKind) {
    let p = page_size();
    let m = Mapping::new(mem, 8);
    m.fill(9);
    let mgr = GuardManager::new();
    let name = ctx(mem, "untrack_retrack");
    let s = Subject::track(&mgr, kind, m.ptr, m.len, &name);
    s.write(p, &[1]);
    s.write(2 * p, &[2]);
    let id = s.id();
    let out = s.untrack();
    let pages = pages_from(m.ptr, &out);
    match reports(kind) {
        Reports::Everything => assert_eq!(pages.len(), 8),
        _ => assert_eq!(pages, [1usize, 2].iter().map(|i| m.ptr as usize / p + i).collect(), "{name}"),
    }
    assert!(matches!(mgr.collect(id, &mut |_: usize, _: &[u8]| ()), Err(vkdirty::guard::GuardError::UnknownRegion(_))));
    // SAFETY: inside the mapping, now untracked.
    unsafe { *m.ptr.add(3 * p) = 3 };
    let mut s = Subject::track(&mgr, kind, m.ptr, m.len, &format!("{name} again"));
    let c = s.collect();
    s.expect(&c, &[]);
    s.write(4 * p, &[4]);
    let c = s.collect();
    s.expect(&c, &[4 * p]);
    s.assert_mirror();
    s.untrack();
}

/// Copies the application pointer for writer threads.
#[derive(Clone, Copy)]
struct AppPtr(*mut u8);
// SAFETY: the region outlives the writer threads (scoped), and writes are 8-byte stores.
unsafe impl Send for AppPtr {}
// SAFETY: as above.
unsafe impl Sync for AppPtr {}

/// No lost write under concurrency: 4 writers stamp random 8-byte slots of random pages with
/// increasing sequence numbers while this thread collects `collections` times, applying every
/// collection to a mirror; after a final collection the mirror equals the memory byte for byte.
pub fn concurrent_writers(kind: BackendKind, mem: MemKind, collections: usize) {
    const WRITERS: u64 = 4;
    let p = page_size();
    let m = Mapping::new(mem, 48);
    m.fill(11);
    let mgr = GuardManager::new();
    // Unaligned at both ends (8-byte aligned for the stamps).
    // SAFETY: inside the mapping.
    let real = unsafe { m.ptr.add(40) };
    let len = m.len - 40 - 48;
    let mut s = Subject::track(&mgr, kind, real, len, &ctx(mem, "concurrent_writers"));
    let app = AppPtr(s.t.app_ptr);
    let id = s.id();
    // Declared only where it matters: the manager's per-region lock would pace the writers.
    let declare = reports(kind) == Reports::Declared;
    let stop = AtomicBool::new(false);
    let started = AtomicU64::new(0);
    let written = AtomicU64::new(0);
    let mut reported_pages = 0usize;
    std::thread::scope(|sc| {
        for w in 0..WRITERS {
            let (stop, started, written, mgr) = (&stop, &started, &written, &mgr);
            sc.spawn(move || {
                let app = app;
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (w + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
                let mut seq = 0u64;
                started.fetch_add(1, Ordering::Relaxed);
                while !stop.load(Ordering::Relaxed) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let page = (rng % (len / p + 1) as u64) as usize;
                    let slot = ((rng >> 32) as usize % (p / 8)) * 8;
                    let off = (page * p + slot).min(len - 8) & !7;
                    seq += 1;
                    let stamp = (w << 56) | seq;
                    // SAFETY: `off + 8 <= len`, inside the region, through the app pointer.
                    let dst = unsafe { app.0.add(off) };
                    if dst as usize % 8 == 0 {
                        // SAFETY: aligned, in bounds; other threads only store whole stamps.
                        unsafe { AtomicU64::from_ptr(dst.cast()) }.store(stamp, Ordering::Relaxed);
                    } else {
                        // SAFETY: in bounds.
                        unsafe { std::ptr::write_volatile(dst.cast::<[u8; 8]>(), stamp.to_le_bytes()) };
                    }
                    if declare {
                        mgr.flushed(id, off..off + 8).unwrap();
                    }
                    if seq % 64 == 0 {
                        written.fetch_add(64, Ordering::Relaxed);
                        std::thread::yield_now();
                    }
                }
            });
        }
        // Collections must overlap the writes: start once every writer runs, and on a loaded
        // machine go on past `collections` until the writers made a fair number of stamps.
        while started.load(Ordering::Relaxed) < WRITERS {
            std::thread::yield_now();
        }
        let t0 = std::time::Instant::now();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut n = 0;
        while n < collections || (written.load(Ordering::Relaxed) < 50_000 && std::time::Instant::now() < deadline) {
            reported_pages += s.collect().stats.pages;
            n += 1;
            // Let the writers make progress between collections (2 cores, 5 threads).
            let seen = written.load(Ordering::Relaxed);
            let wait = std::time::Instant::now();
            while written.load(Ordering::Relaxed) == seen && wait.elapsed() < std::time::Duration::from_micros(50) {
                std::hint::spin_loop();
            }
        }
        stop.store(true, Ordering::Relaxed);
        eprintln!(
            "{}: {n} collections, {} stamps, {reported_pages} pages reported, {:.2} s",
            s.ctx,
            written.load(Ordering::Relaxed),
            t0.elapsed().as_secs_f64()
        );
    });
    s.collect();
    let ctx = s.ctx.clone();
    s.assert_mirror();
    assert!(written.load(Ordering::Relaxed) > 0, "{ctx}: writers made no writes");
    assert!(reported_pages > 0, "{ctx}: nothing reported while writers ran");
    s.untrack();
}
