//! Shadow backend: exact written sets, read refresh without copy-back, sub-page regions,
//! persistent shadows, kernel writes, handler chaining and crashes (in child processes), and no
//! lost write under concurrent writers.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use vkdirty::guard::shadow::Shadow;
use vkdirty::guard::{page_size, Backend, BackendKind, GuardManager, RegionId, TrackOptions, Tracked};

// ---------------------------------------------------------------------------------------------
// Helpers

#[derive(Clone, Copy, Debug)]
enum RealKind {
    PrivateAnon,
    Memfd,
    DevZero,
}

const KINDS: [RealKind; 3] = [RealKind::PrivateAnon, RealKind::Memfd, RealKind::DevZero];

/// Real memory "from the driver", unmapped on drop.
struct Real {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: `Real` owns its mapping; tests synchronise the threads that touch it.
unsafe impl Send for Real {}
// SAFETY: as above.
unsafe impl Sync for Real {}

impl Real {
    fn new(kind: RealKind, len: usize) -> Real {
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: fresh mappings; descriptors closed after mapping.
        let p = unsafe {
            match kind {
                RealKind::PrivateAnon => {
                    libc::mmap(std::ptr::null_mut(), len, rw, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
                }
                RealKind::Memfd => {
                    let fd = libc::memfd_create(c"real".as_ptr(), libc::MFD_CLOEXEC);
                    assert!(fd >= 0);
                    assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
                    let p = libc::mmap(std::ptr::null_mut(), len, rw, libc::MAP_SHARED, fd, 0);
                    libc::close(fd);
                    p
                }
                RealKind::DevZero => {
                    let fd = libc::open(c"/dev/zero".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
                    assert!(fd >= 0);
                    let p = libc::mmap(std::ptr::null_mut(), len, rw, libc::MAP_SHARED, fd, 0);
                    libc::close(fd);
                    p
                }
            }
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap {kind:?}");
        Real { ptr: p as *mut u8, len }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: mapped for `len` bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Writes as the GPU would: straight into the real memory.
    fn gpu_write(&self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= self.len);
        // SAFETY: inside the mapping.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(off), bytes.len()) }
    }
}

impl Drop for Real {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// Collected runs, in order.
#[derive(Default, Debug)]
struct Runs(Vec<(usize, Vec<u8>)>);

impl Runs {
    fn sink(&mut self) -> impl FnMut(usize, &[u8]) + '_ {
        |off, bytes: &[u8]| self.0.push((off, bytes.to_vec()))
    }

    /// Pages of the region (counted from its first page, which may start before it) covered.
    fn pages(&self, head: usize) -> BTreeSet<usize> {
        let p = page_size();
        let mut set = BTreeSet::new();
        for (off, b) in &self.0 {
            assert!(!b.is_empty());
            for pg in (head + off) / p..=(head + off + b.len() - 1) / p {
                assert!(set.insert(pg), "page {pg} reported twice");
            }
        }
        set
    }

    /// Runs are sorted, disjoint and coalesced (never adjacent).
    fn assert_coalesced(&self) {
        for w in self.0.windows(2) {
            assert!(w[0].0 + w[0].1.len() < w[1].0, "runs not coalesced: {:?} {:?}", w[0].0, w[1].0);
        }
    }

    fn apply(&self, mirror: &mut [u8]) {
        for (off, b) in &self.0 {
            mirror[*off..off + b.len()].copy_from_slice(b);
        }
    }
}

fn write_app(app: *mut u8, off: usize, bytes: &[u8]) {
    // SAFETY: the tests only write inside tracked regions.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), app.add(off), bytes.len()) }
}

fn read_app(app: *const u8, off: usize) -> u8 {
    // SAFETY: the tests only read inside tracked regions; volatile so the read really happens.
    unsafe { std::ptr::read_volatile(app.add(off)) }
}

fn app_slice<'a>(app: *const u8, len: usize) -> &'a [u8] {
    // SAFETY: a tracked region of `len` bytes (reads may fault and be handled).
    unsafe { std::slice::from_raw_parts(app, len) }
}

/// Small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn track(m: &GuardManager, real: *mut u8, len: usize, opts: &TrackOptions) -> Tracked {
    // SAFETY: every test keeps its real memory mapped until it untracks or drops the manager.
    unsafe { m.track(real, len, BackendKind::Shadow, opts) }.expect("shadow track")
}

fn collect(m: &GuardManager, t: &Tracked) -> Runs {
    let mut r = Runs::default();
    let stats = m.collect(t.id, &mut r.sink()).expect("collect");
    assert_eq!(stats.runs, r.0.len());
    assert_eq!(stats.bytes, r.0.iter().map(|x| x.1.len()).sum::<usize>());
    r.assert_coalesced();
    r
}

fn opts(reads: bool) -> TrackOptions {
    TrackOptions { shadow_reads: reads, ..Default::default() }
}

// ---------------------------------------------------------------------------------------------
// Exact written sets

fn exact_written_set(kind: RealKind, reads: bool) {
    let p = page_size();
    let pages = 64;
    let real = Real::new(kind, pages * p);
    real.gpu_write(0, &vec![7u8; pages * p]);
    let m = GuardManager::new();
    let t = track(&m, real.ptr, real.len, &opts(reads));
    assert_ne!(t.app_ptr, real.ptr, "shadow hands out its own pointer");
    assert_eq!(app_slice(t.app_ptr, real.len), real.bytes(), "shadow starts as a copy");

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ kind as u64);
    for round in 0..4u8 {
        let mut written = BTreeSet::new();
        for _ in 0..20 {
            let pg = rng.below(pages);
            let off = pg * p + rng.below(p - 8);
            write_app(t.app_ptr, off, &[round + 1, 0xAA, round, 0x55]);
            written.insert(pg);
        }
        // Written twice: reported once.
        let twice = *written.iter().next().unwrap();
        write_app(t.app_ptr, twice * p, &[0xEE]);
        write_app(t.app_ptr, twice * p + 1, &[0xEF]);
        // Reads of other pages are never reported.
        for pg in 0..pages {
            read_app(t.app_ptr, pg * p + 100);
        }
        let runs = collect(&m, &t);
        assert_eq!(runs.pages(0), written, "{kind:?} reads={reads} round {round}");
        for (off, b) in &runs.0 {
            assert_eq!(&app_slice(t.app_ptr, real.len)[*off..off + b.len()], &b[..]);
        }
        assert_eq!(app_slice(t.app_ptr, real.len), real.bytes(), "real memory equals the shadow");
        let again = collect(&m, &t);
        assert!(again.0.is_empty(), "nothing written since: {:?}", again.pages(0));
    }
    let mut r = Runs::default();
    m.untrack(t.id, &mut r.sink()).unwrap();
    assert!(r.0.is_empty());
}

#[test]
fn exact_written_set_private_anon() {
    exact_written_set(RealKind::PrivateAnon, false);
    exact_written_set(RealKind::PrivateAnon, true);
}

#[test]
fn exact_written_set_memfd_shared() {
    exact_written_set(RealKind::Memfd, false);
    exact_written_set(RealKind::Memfd, true);
}

#[test]
fn exact_written_set_dev_zero_shared() {
    exact_written_set(RealKind::DevZero, false);
    exact_written_set(RealKind::DevZero, true);
}

#[test]
fn collect_range_reports_only_pages_in_range() {
    let p = page_size();
    let real = Real::new(RealKind::PrivateAnon, 16 * p);
    let m = GuardManager::new();
    let t = track(&m, real.ptr, real.len, &opts(false));
    for pg in [1, 5, 6, 12] {
        write_app(t.app_ptr, pg * p + 3, &[pg as u8]);
    }
    let mut r = Runs::default();
    m.collect_range(t.id, 4 * p + 10..7 * p, &mut r.sink()).unwrap();
    assert_eq!(r.pages(0), BTreeSet::from([5, 6]));
    assert_eq!(collect(&m, &t).pages(0), BTreeSet::from([1, 12]));
}

// ---------------------------------------------------------------------------------------------
// Shadow reads: refresh, and read pages never copied back

#[test]
fn read_fault_refreshes_from_real_and_is_never_copied_back() {
    let p = page_size();
    for kind in KINDS {
        let real = Real::new(kind, 8 * p);
        let m = GuardManager::new();
        let t = track(&m, real.ptr, real.len, &opts(true));
        // The GPU writes after track: a read sees it.
        real.gpu_write(3 * p + 10, b"gpu-data");
        assert_eq!(&app_slice(t.app_ptr, real.len)[3 * p + 10..3 * p + 18], b"gpu-data");

        // Read page 5 (refresh), then the GPU writes it: collection must leave the GPU's bytes.
        assert_eq!(read_app(t.app_ptr, 5 * p), 0);
        real.gpu_write(5 * p, &[0xC0; 64]);
        // A written page next to it is copied back, clipped to that page only.
        write_app(t.app_ptr, 6 * p, b"cpu");
        let runs = collect(&m, &t);
        assert_eq!(runs.pages(0), BTreeSet::from([6]), "{kind:?}");
        assert_eq!(&real.bytes()[5 * p..5 * p + 64], &[0xC0; 64][..], "read page was copied back ({kind:?})");
        assert_eq!(&real.bytes()[3 * p + 10..3 * p + 18], b"gpu-data");
        assert_eq!(&real.bytes()[6 * p..6 * p + 3], b"cpu");

        // Collection re-arms read pages: the next read sees the GPU's newer bytes.
        real.gpu_write(5 * p, &[0xC1; 64]);
        assert_eq!(read_app(t.app_ptr, 5 * p + 63), 0xC1);
        // A write to a never-touched page refreshes it first, so its other bytes are current.
        real.gpu_write(7 * p + 100, b"keep");
        write_app(t.app_ptr, 7 * p, b"w");
        let runs = collect(&m, &t);
        assert_eq!(runs.pages(0), BTreeSet::from([7]));
        assert_eq!(&real.bytes()[7 * p + 100..7 * p + 104], b"keep");
        assert_eq!(real.bytes()[7 * p], b'w');
        assert!(collect(&m, &t).0.is_empty());
        m.untrack(t.id, &mut Runs::default().sink()).unwrap();
    }
}

#[test]
fn invalidate_refreshes_pages_not_written() {
    let p = page_size();
    for reads in [false, true] {
        let real = Real::new(RealKind::PrivateAnon, 8 * p);
        let m = GuardManager::new();
        let t = track(&m, real.ptr, real.len, &opts(reads));
        assert_eq!(read_app(t.app_ptr, 2 * p), 0);
        write_app(t.app_ptr, 4 * p, b"app");
        real.gpu_write(2 * p, b"gpu2");
        real.gpu_write(4 * p + 8, b"gpu4");
        m.invalidate(t.id, 0..real.len).unwrap();
        assert_eq!(&app_slice(t.app_ptr, real.len)[2 * p..2 * p + 4], b"gpu2", "reads={reads}");
        // The written page keeps the application's bytes (and is still reported).
        assert_eq!(&app_slice(t.app_ptr, real.len)[4 * p..4 * p + 3], b"app");
        let runs = collect(&m, &t);
        assert_eq!(runs.pages(0), BTreeSet::from([4]), "reads={reads}");
        assert_eq!(&real.bytes()[2 * p..2 * p + 4], b"gpu2");
        m.untrack(t.id, &mut Runs::default().sink()).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Sub-page regions

#[test]
fn unaligned_start_and_length() {
    let p = page_size();
    for reads in [false, true] {
        let real = Real::new(RealKind::Memfd, 6 * p);
        real.gpu_write(0, &vec![0x55; 6 * p]);
        let (start, len) = (100, 3 * p + 77);
        let m = GuardManager::new();
        // SAFETY: inside `real`.
        let t = track(&m, unsafe { real.ptr.add(start) }, len, &opts(reads));
        assert_eq!(t.app_ptr as usize % p, start, "offset within the first page kept");
        // The GPU changes bytes just outside the region after track.
        real.gpu_write(0, &[0x66; 100]);
        real.gpu_write(start + len, &[0x77; 50]);
        write_app(t.app_ptr, 0, b"first");
        write_app(t.app_ptr, len - 4, b"last");
        write_app(t.app_ptr, 2 * p, b"mid");
        let runs = collect(&m, &t);
        let head = start;
        assert_eq!(runs.pages(head), BTreeSet::from([0, 2, 3]));
        assert_eq!(runs.0.first().unwrap().0, 0, "first run starts at the region start");
        let (lo, lb) = runs.0.last().unwrap();
        assert_eq!(lo + lb.len(), len, "last run clipped to the region end");
        assert_eq!(&real.bytes()[..100], &[0x66; 100][..], "bytes before the region untouched");
        assert_eq!(&real.bytes()[start + len..start + len + 50], &[0x77; 50][..], "bytes after untouched");
        assert_eq!(&real.bytes()[start..start + 5], b"first");
        assert_eq!(&real.bytes()[start + len - 4..start + len], b"last");
        m.untrack(t.id, &mut Runs::default().sink()).unwrap();
    }
}

#[test]
fn two_regions_sharing_a_page() {
    let p = page_size();
    let real = Real::new(RealKind::PrivateAnon, 3 * p);
    let m = GuardManager::new();
    let split = p + 904;
    let a = track(&m, real.ptr, split, &opts(false));
    // SAFETY: inside `real`.
    let b = track(&m, unsafe { real.ptr.add(split) }, 3 * p - split, &opts(true));
    write_app(a.app_ptr, split - 1, &[1]);
    write_app(b.app_ptr, 0, &[2]);
    write_app(b.app_ptr, 3 * p - split - 1, &[3]);
    // Collect B first, then A: neither may overwrite the other's bytes of the shared page.
    let rb = collect(&m, &b);
    let ra = collect(&m, &a);
    assert_eq!(ra.pages(0), BTreeSet::from([1]));
    assert_eq!(ra.0.len(), 1);
    assert_eq!((ra.0[0].0, ra.0[0].1.len()), (p, split - p));
    assert_eq!(rb.pages(split % p), BTreeSet::from([0, 1]));
    assert_eq!(rb.0[0].0, 0);
    assert_eq!(real.bytes()[split - 1], 1);
    assert_eq!(real.bytes()[split], 2);
    assert_eq!(real.bytes()[3 * p - 1], 3);
    // Untracking one leaves the other working.
    m.untrack(a.id, &mut Runs::default().sink()).unwrap();
    write_app(b.app_ptr, 10, &[4]);
    assert_eq!(collect(&m, &b).pages(split % p), BTreeSet::from([0]));
    assert_eq!(real.bytes()[split + 10], 4);
    m.untrack(b.id, &mut Runs::default().sink()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Untrack, re-track and persistent shadows

#[test]
fn untrack_copies_back_then_retrack() {
    let p = page_size();
    let real = Real::new(RealKind::DevZero, 8 * p);
    let m = GuardManager::new();
    let t = track(&m, real.ptr, real.len, &opts(false));
    write_app(t.app_ptr, 3 * p + 5, b"outstanding");
    let mut r = Runs::default();
    let stats = m.untrack(t.id, &mut r.sink()).unwrap();
    assert_eq!(stats.pages, 1);
    assert_eq!(r.pages(0), BTreeSet::from([3]));
    assert_eq!(&real.bytes()[3 * p + 5..3 * p + 16], b"outstanding");
    assert!(m.collect(t.id, &mut Runs::default().sink()).is_err(), "untracked region is unknown");

    let t2 = track(&m, real.ptr, real.len, &opts(false));
    assert_eq!(&app_slice(t2.app_ptr, real.len)[3 * p + 5..3 * p + 16], b"outstanding");
    write_app(t2.app_ptr, 7 * p, b"x");
    assert_eq!(collect(&m, &t2).pages(0), BTreeSet::from([7]));
    m.untrack(t2.id, &mut Runs::default().sink()).unwrap();
}

#[test]
fn persistent_shadow_across_untrack_and_track() {
    let p = page_size();
    for reads in [false, true] {
        let real = Real::new(RealKind::Memfd, 8 * p);
        let s = Shadow::new().unwrap();
        let o = TrackOptions { shadow_reads: reads, persistent_key: Some(77), ..Default::default() };
        // SAFETY: `real` outlives the regions.
        let app = unsafe { s.track(RegionId(1), real.ptr, real.len, &o) }.unwrap();
        write_app(app, p, b"frame1");
        let mut r = Runs::default();
        s.untrack(RegionId(1), &mut r.sink()).unwrap();
        assert_eq!(r.pages(0), BTreeSet::from([1]), "outstanding writes reported at untrack");
        assert_eq!(&real.bytes()[p..p + 6], b"frame1");
        assert_eq!(s.kept_count(), 1);

        // The GPU writes while unmapped; the next map reuses the shadow and sees it.
        real.gpu_write(2 * p, b"gpu");
        // SAFETY: as above.
        let app2 = unsafe { s.track(RegionId(2), real.ptr, real.len, &o) }.unwrap();
        assert_eq!(app2, app, "same pointer for the same key and geometry (reads={reads})");
        assert_eq!(s.kept_count(), 0);
        assert_eq!(&app_slice(app2, real.len)[2 * p..2 * p + 3], b"gpu");
        assert_eq!(&app_slice(app2, real.len)[p..p + 6], b"frame1");
        let mut r = Runs::default();
        s.collect(RegionId(2), None, &mut r.sink()).unwrap();
        assert!(r.0.is_empty(), "re-track starts clean");
        write_app(app2, 5 * p, b"frame2");
        let mut r = Runs::default();
        s.collect(RegionId(2), None, &mut r.sink()).unwrap();
        assert_eq!(r.pages(0), BTreeSet::from([5]));
        s.untrack(RegionId(2), &mut Runs::default().sink()).unwrap();

        // A different geometry replaces the kept shadow.
        // SAFETY: as above.
        let app3 = unsafe { s.track(RegionId(3), real.ptr.add(p), 2 * p, &o) }.unwrap();
        assert_eq!(&app_slice(app3, 2 * p)[..6], b"frame1");
        assert_eq!(&app_slice(app3, 2 * p)[p..p + 3], b"gpu");
        write_app(app3, 10, b"z");
        let mut r = Runs::default();
        s.untrack(RegionId(3), &mut r.sink()).unwrap();
        assert_eq!(r.pages(0), BTreeSet::from([0]));
        assert_eq!(real.bytes()[p + 10], b'z');
        assert_eq!(&real.bytes()[5 * p..5 * p + 6], b"frame2");
        assert_eq!(s.kept_count(), 1);
        s.release_persistent(77);
        assert_eq!(s.kept_count(), 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel writes into the shadow

#[test]
fn read_syscall_into_protected_shadow_page_fails_with_efault() {
    let p = page_size();
    let real = Real::new(RealKind::PrivateAnon, 4 * p);
    let m = GuardManager::new();
    let t = track(&m, real.ptr, real.len, &opts(false));
    // A file with known contents.
    // SAFETY: plain syscalls on a descriptor we own.
    let fd = unsafe { libc::memfd_create(c"src".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    let data = [0x5Au8; 64];
    // SAFETY: as above.
    assert_eq!(unsafe { libc::pwrite(fd, data.as_ptr() as *const libc::c_void, 64, 0) }, 64);

    // Page 1 is write-protected: the kernel's copy fails, no signal, nothing changes.
    // SAFETY: the destination is inside the tracked region.
    let n = unsafe { libc::pread(fd, t.app_ptr.add(p) as *mut libc::c_void, 64, 0) };
    let err = std::io::Error::last_os_error().raw_os_error();
    assert_eq!((n, err), (-1, Some(libc::EFAULT)), "read() into a protected shadow page");
    assert_eq!(read_app(t.app_ptr, p), 0);
    assert!(collect(&m, &t).0.is_empty());

    // Once the page is written from user space it is writable until the next collection.
    write_app(t.app_ptr, p + 1000, &[1]);
    // SAFETY: as above.
    let n = unsafe { libc::pread(fd, t.app_ptr.add(p) as *mut libc::c_void, 64, 0) };
    assert_eq!(n, 64);
    let runs = collect(&m, &t);
    assert_eq!(runs.pages(0), BTreeSet::from([1]));
    assert_eq!(&real.bytes()[p..p + 64], &data[..]);

    // With shadow reads, a system call reading an unrefreshed page fails the same way.
    let t2 = track(&m, real.ptr, real.len, &opts(true));
    // SAFETY: the source is inside the tracked region.
    let n = unsafe { libc::pwrite(fd, t2.app_ptr.add(2 * p) as *const libc::c_void, 64, 0) };
    let err = std::io::Error::last_os_error().raw_os_error();
    assert_eq!((n, err), (-1, Some(libc::EFAULT)), "write() from a PROT_NONE shadow page");
    // SAFETY: plain close.
    unsafe { libc::close(fd) };
    m.untrack(t.id, &mut Runs::default().sink()).unwrap();
    m.untrack(t2.id, &mut Runs::default().sink()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// A thread without an alternate signal stack

struct ThreadArg {
    app: *mut u8,
    had_altstack: bool,
}

extern "C" fn raw_thread(arg: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: `arg` is the ThreadArg the test passes and joins before dropping.
    let a = unsafe { &mut *(arg as *mut ThreadArg) };
    // SAFETY: querying the current alternate stack.
    unsafe {
        let mut ss: libc::stack_t = std::mem::zeroed();
        libc::sigaltstack(std::ptr::null(), &mut ss);
        a.had_altstack = ss.ss_flags & libc::SS_DISABLE == 0;
    }
    write_app(a.app, page_size() * 2 + 1, b"raw");
    std::ptr::null_mut()
}

#[test]
fn fault_on_thread_without_alternate_stack() {
    let p = page_size();
    let real = Real::new(RealKind::PrivateAnon, 4 * p);
    let m = GuardManager::new();
    let t = track(&m, real.ptr, real.len, &opts(false));
    let mut arg = ThreadArg { app: t.app_ptr, had_altstack: true };
    // SAFETY: the thread only uses `arg`, which outlives the join.
    unsafe {
        let mut th: libc::pthread_t = std::mem::zeroed();
        let rc = libc::pthread_create(&mut th, std::ptr::null(), raw_thread, &mut arg as *mut _ as *mut libc::c_void);
        assert_eq!(rc, 0);
        assert_eq!(libc::pthread_join(th, std::ptr::null_mut()), 0);
    }
    assert!(!arg.had_altstack, "a raw pthread has no alternate stack");
    assert_eq!(collect(&m, &t).pages(0), BTreeSet::from([2]));
    assert_eq!(&real.bytes()[2 * p + 1..2 * p + 4], b"raw");
    m.untrack(t.id, &mut Runs::default().sink()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// No lost write under concurrency

fn check_stamps(mirror: &[u8], expected: &[AtomicU64], lines: usize, at: usize, reads: bool) {
    for (i, e) in expected.iter().enumerate() {
        let stamp = e.load(Ordering::Relaxed);
        if stamp != 0 {
            let off = (i % lines) * 64 + (i / lines) * 8;
            let got = u64::from_le_bytes(mirror[off..off + 8].try_into().unwrap());
            assert_eq!(got, stamp, "stamp at {off} lost by collection {at} (reads={reads})");
        }
    }
}

/// Writer threads, stopped and joined on drop (also when an assertion fails, so they never
/// outlive the tracked memory).
struct Writers(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl Drop for Writers {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for w in self.1.drain(..) {
            w.join().unwrap();
        }
    }
}

fn concurrent_writers(reads: bool, churn: bool) {
    let p = page_size();
    let pages = 64;
    let len = pages * p - 123;
    let real = Real::new(RealKind::PrivateAnon, pages * p);
    let m = Arc::new(GuardManager::new());
    let t = track(&m, real.ptr, len, &opts(reads));
    let mut mirror = real.bytes()[..len].to_vec();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicUsize::new(0));
    // Writers hold still while the collector checks the mirror against the application's view.
    let pause = Arc::new(AtomicBool::new(false));
    // The last stamp each writer put in each of its slots: the oracle the mirror must match.
    let lines = (pages - 1) * (p / 64);
    let expected: Arc<Vec<AtomicU64>> = Arc::new((0..4 * lines).map(|_| AtomicU64::new(0)).collect());
    let paused = Arc::new(AtomicUsize::new(0));
    let app = t.app_ptr as usize;
    let writers = Writers(
        stop.clone(),
        (0..4u64)
            .map(|w| {
                let stop = stop.clone();
                let writes = writes.clone();
                let (pause, paused, expected) = (pause.clone(), paused.clone(), expected.clone());
                std::thread::spawn(move || {
                    let mut rng = Rng(0x1234_5678 + w * 7919);
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if pause.load(Ordering::SeqCst) {
                            paused.fetch_add(1, Ordering::SeqCst);
                            while pause.load(Ordering::SeqCst) && !stop.load(Ordering::Relaxed) {
                                std::thread::yield_now();
                            }
                            paused.fetch_sub(1, Ordering::SeqCst);
                        }
                        seq += 1;
                        // Each writer owns 8 bytes of every 64-byte line (the last page is left out).
                        let line = rng.below(lines);
                        let off = line * 64 + w as usize * 8;
                        let stamp = (w << 56) | seq;
                        write_app(app as *mut u8, off, &stamp.to_le_bytes());
                        expected[w as usize * lines + line].store(stamp, Ordering::Relaxed);
                        if reads && seq % 3 == 0 {
                            read_app(app as *const u8, rng.below(len));
                        }
                        writes.fetch_add(1, Ordering::Relaxed);
                        if seq % 64 == 0 {
                            // Leave the collector a core (2 cores, 5 threads).
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect(),
    );

    // Regions tracked and untracked while the writers fault: the table changes under them.
    let churn_real = Real::new(RealKind::PrivateAnon, 4 * p);
    let mut collections = 0;
    let mut reported = 0;
    // Start collecting once every writer is writing, so the collections race with them.
    while writes.load(Ordering::Relaxed) < 4096 {
        std::thread::yield_now();
    }
    let mut raced = 0;
    while collections < 10_000 {
        // Give the writers a moment between collections when they are running (on a loaded
        // machine they may not be scheduled; then collect anyway).
        let seen = writes.load(Ordering::Relaxed);
        let t0 = std::time::Instant::now();
        while t0.elapsed() < std::time::Duration::from_micros(50) {
            if writes.load(Ordering::Relaxed) > seen + 8 {
                raced += 1;
                break;
            }
        }
        let runs = collect(&m, &t);
        reported += runs.0.len();
        runs.apply(&mut mirror);
        collections += 1;
        if collections % 500 == 0 {
            // A write lost by a collection is only visible until the page is written again
            // (the next copy-back heals it), so look often.
            pause.store(true, Ordering::SeqCst);
            while paused.load(Ordering::SeqCst) < 4 {
                std::thread::yield_now();
            }
            collect(&m, &t).apply(&mut mirror);
            check_stamps(&mirror, &expected, lines, collections, reads);
            assert!(mirror == app_slice(t.app_ptr, len), "lost write by collection {collections} (reads={reads})");
            assert!(mirror == real.bytes()[..len]);
            pause.store(false, Ordering::SeqCst);
        }
        if churn && collections % 10 == 0 {
            let c = track(&m, churn_real.ptr, churn_real.len, &opts(false));
            write_app(c.app_ptr, p, &[collections as u8]);
            let mut r = Runs::default();
            m.untrack(c.id, &mut r.sink()).unwrap();
            assert_eq!(r.pages(0), BTreeSet::from([1]));
        }
    }
    drop(writers);
    collect(&m, &t).apply(&mut mirror);
    check_stamps(&mirror, &expected, lines, collections, reads);
    // What the application wrote (its view, the shadow) reached the mirror and the real memory.
    let app_view = app_slice(t.app_ptr, len).to_vec();
    let mut r = Runs::default();
    m.untrack(t.id, &mut r.sink()).unwrap();
    assert!(r.0.is_empty(), "nothing written since the last collection");
    let writes = writes.load(Ordering::Relaxed);
    eprintln!("reads={reads} churn={churn}: {writes} writes, {reported} runs in {collections} collections ({raced} with writers running)");
    assert!(writes > 0 && reported > 0);
    assert!(app_view.iter().any(|&b| b != 0));
    assert!(mirror == app_view, "mirror differs from the application's view (reads={reads})");
    assert!(mirror == real.bytes()[..len], "mirror differs from the real memory (reads={reads})");
}

#[test]
fn no_lost_write_under_concurrency() {
    concurrent_writers(false, false);
}

#[test]
fn no_lost_write_under_concurrency_with_shadow_reads_and_table_churn() {
    concurrent_writers(true, true);
}

// ---------------------------------------------------------------------------------------------
// Signal handler chaining and genuine crashes, each in a fresh child process

const CHILD_ENV: &str = "VKDIRTY_SHADOW_CHILD";
const CHILD_OK: i32 = 42;

fn run_child_output(scenario: &str) -> std::process::Output {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_scenario_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, scenario)
        .output()
        .unwrap();
    eprintln!("child {scenario}: {:?}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

fn run_child(scenario: &str) -> std::process::ExitStatus {
    run_child_output(scenario).status
}

fn expect_ok(scenario: &str) {
    assert_eq!(run_child(scenario).code(), Some(CHILD_OK), "{scenario}");
}

fn expect_sigsegv(scenario: &str) {
    let st = run_child(scenario);
    assert_eq!(st.signal(), Some(libc::SIGSEGV), "{scenario}: {st:?}");
}

/// The application's guard page and what its handler saw.
static GUARD: AtomicUsize = AtomicUsize::new(0);
static OWN_FAULTS: AtomicUsize = AtomicUsize::new(0);
static ALL_FAULTS: AtomicUsize = AtomicUsize::new(0);
static mut APP_PREV: std::mem::MaybeUninit<libc::sigaction> = std::mem::MaybeUninit::uninit();

fn map_guard_page() -> *mut u8 {
    // SAFETY: a fresh PROT_NONE page.
    let g = unsafe {
        libc::mmap(std::ptr::null_mut(), page_size(), libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    assert_ne!(g, libc::MAP_FAILED);
    GUARD.store(g as usize, Ordering::SeqCst);
    g as *mut u8
}

/// Opens the guard page; returns whether `addr` was in it.
fn open_guard(addr: usize) -> bool {
    let g = GUARD.load(Ordering::SeqCst);
    if addr < g || addr >= g + page_size() {
        return false;
    }
    OWN_FAULTS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the application's own page.
    unsafe { libc::mprotect(g as *mut libc::c_void, page_size(), libc::PROT_READ | libc::PROT_WRITE) };
    true
}

extern "C" fn app_siginfo_handler(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    ALL_FAULTS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: kernel-provided info.
    let addr = unsafe { (*info).si_addr() } as usize;
    if !open_guard(addr) {
        // Not the application's: a real application would crash here.
        // SAFETY: async-signal-safe exit.
        unsafe { libc::_exit(3) };
    }
}

extern "C" fn app_plain_handler(_sig: libc::c_int) {
    ALL_FAULTS.fetch_add(1, Ordering::SeqCst);
    // A plain handler has no address: it opens its guard page.
    let g = GUARD.load(Ordering::SeqCst);
    OWN_FAULTS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the application's own page.
    unsafe { libc::mprotect(g as *mut libc::c_void, page_size(), libc::PROT_READ | libc::PROT_WRITE) };
}

/// Installed after ours: handles its guard page and chains everything else to the previous
/// action (ours), as a well-behaved handler does. Each call prints `<app-handler>` on stderr
/// (async-signal-safe `write`), so a crash can be counted from outside.
extern "C" fn app_chaining_handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    ALL_FAULTS.fetch_add(1, Ordering::SeqCst);
    let mark = b"<app-handler>";
    // SAFETY: write(2) on stderr is async-signal-safe.
    unsafe { libc::write(2, mark.as_ptr().cast(), mark.len()) };
    // SAFETY: kernel-provided info; APP_PREV was written before this handler was installed.
    unsafe {
        if open_guard((*info).si_addr() as usize) {
            return;
        }
        let prev = (*std::ptr::addr_of!(APP_PREV)).assume_init_ref();
        assert!(prev.sa_flags & libc::SA_SIGINFO != 0);
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            std::mem::transmute(prev.sa_sigaction);
        f(sig, info, ctx);
    }
}

fn install_app_handler(handler: libc::sighandler_t, siginfo: bool) {
    // SAFETY: sigaction with valid pointers; APP_PREV is written before the handler can run.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler;
        act.sa_flags = if siginfo { libc::SA_SIGINFO } else { 0 };
        libc::sigemptyset(&mut act.sa_mask);
        let prev = &mut *std::ptr::addr_of_mut!(APP_PREV);
        assert_eq!(libc::sigaction(libc::SIGSEGV, &act, prev.as_mut_ptr()), 0);
    }
}

fn set_sigsegv(disposition: libc::sighandler_t) {
    // SAFETY: as above.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = disposition;
        assert_eq!(libc::sigaction(libc::SIGSEGV, &act, std::ptr::null_mut()), 0);
    }
}

/// Tracks a region and checks one write is tracked exactly; returns what the child needs to
/// keep alive.
fn tracked_write_works(m: &GuardManager) -> (Real, Tracked) {
    let p = page_size();
    let real = Real::new(RealKind::PrivateAnon, 4 * p);
    let t = track(m, real.ptr, real.len, &opts(false));
    write_app(t.app_ptr, 2 * p + 7, b"tracked");
    let runs = collect(m, &t);
    assert_eq!(runs.pages(0), BTreeSet::from([2]));
    assert_eq!(&real.bytes()[2 * p + 7..2 * p + 14], b"tracked");
    (real, t)
}

fn touch_guard(g: *mut u8) {
    // SAFETY: the application's guard page; its handler opens it.
    unsafe { std::ptr::write_volatile(g.add(16), 0x42) };
    // SAFETY: as above, now open.
    assert_eq!(unsafe { std::ptr::read_volatile(g.add(16)) }, 0x42);
}

fn crash_outside_tracked_memory() -> ! {
    let g = map_guard_page();
    // SAFETY: deliberately faults: a PROT_NONE page nobody tracks.
    unsafe { std::ptr::write_volatile(g, 1) };
    // Not reached when the fault crashes the process.
    std::process::exit(CHILD_OK)
}

fn child(scenario: &str) {
    // No core files from the crash scenarios.
    // SAFETY: plain setrlimit.
    unsafe {
        let lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::setrlimit(libc::RLIMIT_CORE, &lim);
    }
    match scenario {
        "app_before_siginfo" | "app_before_plain" => {
            let g = map_guard_page();
            if scenario == "app_before_siginfo" {
                install_app_handler(app_siginfo_handler as *const () as usize, true);
            } else {
                install_app_handler(app_plain_handler as *const () as usize, false);
            }
            let m = GuardManager::new();
            let _keep = tracked_write_works(&m);
            assert_eq!(ALL_FAULTS.load(Ordering::SeqCst), 0, "our faults never reach the app");
            touch_guard(g);
            assert_eq!(OWN_FAULTS.load(Ordering::SeqCst), 1);
            assert_eq!(ALL_FAULTS.load(Ordering::SeqCst), 1);
        }
        "app_after" => {
            let m = GuardManager::new();
            m.backend(BackendKind::Shadow).unwrap();
            let g = map_guard_page();
            install_app_handler(app_chaining_handler as *const () as usize, true);
            // Tracking puts ours back in front of the application's, chaining to it.
            let _keep = tracked_write_works(&m);
            assert_eq!(ALL_FAULTS.load(Ordering::SeqCst), 0, "our faults never reach the app");
            assert!(vkdirty::guard::shadow::handler_reinstalls() >= 1);
            touch_guard(g);
            assert_eq!(OWN_FAULTS.load(Ordering::SeqCst), 1);
            assert_eq!(ALL_FAULTS.load(Ordering::SeqCst), 1);
        }
        "app_after_first_map_no_chain" => {
            // The application installs a handler that passes nothing on, after the first map.
            let p = page_size();
            let m = GuardManager::new();
            let real = Real::new(RealKind::PrivateAnon, 4 * p);
            let t = track(&m, real.ptr, real.len, &opts(false));
            write_app(t.app_ptr, 7, b"before");
            assert_eq!(collect(&m, &t).pages(0), BTreeSet::from([0]));
            let g = map_guard_page();
            let before = vkdirty::guard::shadow::handler_reinstalls();
            install_app_handler(app_siginfo_handler as *const () as usize, true);
            // The next collection checks the handler and puts ours back in front.
            assert!(collect(&m, &t).pages(0).is_empty());
            assert_eq!(vkdirty::guard::shadow::handler_reinstalls(), before + 1);
            write_app(t.app_ptr, 3 * p + 1, b"after");
            assert_eq!(collect(&m, &t).pages(0), BTreeSet::from([3]));
            assert_eq!(&real.bytes()[3 * p + 1..3 * p + 6], b"after");
            assert_eq!(ALL_FAULTS.load(Ordering::SeqCst), 0, "the app's handler never saw our faults");
            // Its own faults still reach it.
            touch_guard(g);
            assert_eq!((OWN_FAULTS.load(Ordering::SeqCst), ALL_FAULTS.load(Ordering::SeqCst)), (1, 1));
            // Checked again: nothing changed, nothing re-installed.
            let _ = collect(&m, &t);
            assert_eq!(vkdirty::guard::shadow::handler_reinstalls(), before + 1);
            m.untrack(t.id, &mut Runs::default().sink()).unwrap();
        }
        "crash_app_chains_back" => {
            // Ours in front of an application handler that chains back to ours: a fault nobody
            // owns goes round once, then takes the default action (no endless loop).
            let m = GuardManager::new();
            m.backend(BackendKind::Shadow).unwrap();
            install_app_handler(app_chaining_handler as *const () as usize, true);
            let _keep = tracked_write_works(&m);
            // A PROT_NONE page neither we nor the application's handler own.
            // SAFETY: a fresh PROT_NONE page.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    page_size(),
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            // SAFETY: deliberately faults.
            unsafe { std::ptr::write_volatile(p as *mut u8, 1) };
            std::process::exit(CHILD_OK);
        }
        "crash_std_handler" => {
            // The previous handler is the Rust runtime's (stack overflow detection).
            let m = GuardManager::new();
            let _keep = tracked_write_works(&m);
            crash_outside_tracked_memory();
        }
        "crash_dfl" | "crash_ign" => {
            set_sigsegv(if scenario == "crash_dfl" { libc::SIG_DFL } else { libc::SIG_IGN });
            let m = GuardManager::new();
            let _keep = tracked_write_works(&m);
            crash_outside_tracked_memory();
        }
        "crash_user_sent" => {
            set_sigsegv(libc::SIG_DFL);
            let m = GuardManager::new();
            let _keep = tracked_write_works(&m);
            // Thread-directed (kill() may pick another thread and race with the exit below).
            // SAFETY: plain raise.
            unsafe { libc::raise(libc::SIGSEGV) };
            std::process::exit(CHILD_OK);
        }
        "crash_persistent_unmapped" => {
            let p = page_size();
            let real = Real::new(RealKind::PrivateAnon, 2 * p);
            let m = GuardManager::new();
            let o = TrackOptions { persistent_key: Some(5), ..Default::default() };
            let t = track(&m, real.ptr, real.len, &o);
            m.untrack(t.id, &mut Runs::default().sink()).unwrap();
            // Writing the kept shadow while unmapped crashes like unmapped memory.
            write_app(t.app_ptr, 0, &[1]);
            std::process::exit(CHILD_OK);
        }
        other => panic!("unknown scenario {other}"),
    }
    std::process::exit(CHILD_OK);
}

/// Entry point of the child processes (does nothing in the parent run).
#[test]
fn child_scenario_entry() {
    if let Ok(s) = std::env::var(CHILD_ENV) {
        child(&s);
    }
}

#[test]
fn app_handler_installed_before_ours_gets_its_own_faults() {
    expect_ok("app_before_siginfo");
    expect_ok("app_before_plain");
}

#[test]
fn app_handler_installed_after_ours_gets_its_own_faults() {
    expect_ok("app_after");
}

/// A handler installed after the first map that passes nothing on: the next collection puts
/// ours back in front (chaining to it), so later writes are tracked and its own faults still
/// reach it.
#[test]
fn app_handler_installed_after_the_first_map_is_put_behind_ours() {
    expect_ok("app_after_first_map_no_chain");
}

#[test]
fn a_handler_chaining_back_to_ours_does_not_loop() {
    let o = run_child_output("crash_app_chains_back");
    assert_eq!(o.status.signal(), Some(libc::SIGSEGV), "{:?}", o.status);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("<app-handler>").count(), 1, "{err}");
}

#[test]
fn genuine_crash_outside_tracked_memory_still_crashes() {
    expect_sigsegv("crash_std_handler");
    expect_sigsegv("crash_dfl");
    expect_sigsegv("crash_ign");
    expect_sigsegv("crash_user_sent");
    expect_sigsegv("crash_persistent_unmapped");
}
