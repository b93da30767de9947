//! userfaultfd async write-protect + `PAGEMAP_SCAN`: the write-tracking machinery shared by the
//! backends that track anonymous or shmem memory without signals (`async-wp`, `host-import`,
//! `shadow-wp`).
//!
//! One userfaultfd per process ([`tracker`]), opened with `UFFD_USER_MODE_ONLY | O_CLOEXEC |
//! O_NONBLOCK` and `UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED` (plus
//! `WP_HUGETLBFS_SHMEM` when offered). With `WP_ASYNC` a write to a protected page never blocks:
//! the kernel clears the page's write-protect bit and lets the write proceed, and
//! `PAGEMAP_SCAN(PM_SCAN_WP_MATCHING)` reports the unprotected ("written") pages and protects
//! them again under the page-table lock, so a racing write lands either in this scan or in the
//! next. Callers copy a page's bytes only after [`WpTracker::scan`] returned it.
//!
//! Life cycle of a span: [`WpTracker::register`] (page-aligned, counted per page, armed) →
//! [`WpTracker::scan`] as often as needed → [`WpTracker::unregister`].
//!
//! Pages shared by several spans (sub-allocations of one mapping) are registered once and
//! unregistered when their last user leaves. A scan consumes the kernel's written bit, so when
//! one span's scan finds a shared page written, the page is queued for the other spans sharing
//! it and handed to them by their next scan.
//!
//! Transparent huge pages: newly registered pages get `MADV_NOHUGEPAGE` (no new THP is formed
//! there, as Wine does for its write watches). A THP that already exists is split by the kernel
//! on the first write after protection (async-WP resolves write faults at 4 KiB), so the
//! reported set stays exact. A written huge mapping that a scan returns whole (hugetlbfs, or a
//! THP the application collapsed while tracked, which the kernel allows only once every 4 KiB
//! of it was written) is reported whole and counted in [`ScanStats::thp_pages`].
//!
//! After `fork()` the child's copies of the mappings are no longer registered and the inherited
//! descriptors refer to the parent. The first call in the child (detected by pid) opens its own
//! userfaultfd and `/proc/self/pagemap`, registers and arms every span again, and queues every
//! span's pages as written once, since writes made before re-arming are unknown.

use super::{page_size, uapi, BackendKind, GuardError};
use linux_raw_sys::general as sys;
use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Entries in one `PAGEMAP_SCAN` output vector; the walk resumes at `walk_end` when it fills.
const SCAN_VEC_LEN: usize = 512;

mod predict;
mod set;
pub use predict::Prediction;
pub use set::SpanSet;

/// A span registered with [`WpTracker::register`]: the page-aligned cover of the caller's range.
/// Give it back with [`WpTracker::unregister`].
#[derive(Debug)]
pub struct WpSpan {
    id: u64,
    pages: Range<usize>,
}

impl WpSpan {
    /// The page-aligned addresses covered.
    pub fn pages(&self) -> Range<usize> {
        self.pages.clone()
    }
}

/// What one [`WpTracker::scan`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Written pages returned (system pages).
    pub pages: usize,
    /// Of those, pages returned as part of a written huge mapping (the kernel cannot tell which
    /// 4 KiB of it were written).
    pub thp_pages: usize,
    /// `PAGEMAP_SCAN` calls made (more than one when the output vector filled).
    pub ioctls: usize,
    /// Predicted pages compared with their snapshot instead of trapped ([`SpanSet`] only).
    pub predicted: usize,
    /// Of those, pages found changed (counted in `pages` too).
    pub compared_changed: usize,
}

/// The process-wide async write-protect tracker. Safe to use from any thread.
pub struct WpTracker {
    state: RwLock<State>,
    features: u64,
}

struct State {
    pid: libc::pid_t,
    uffd: OwnedFd,
    pagemap: OwnedFd,
    users: PageUsers,
    spans: HashMap<u64, SpanInfo>,
    next_span: u64,
    /// Bumped whenever spans or their sharing change; a [`SpanSet`] rebuilds its plan then.
    generation: u64,
    /// Bumped when a forked child re-arms every span (and queues its pages as written).
    fork_gen: u64,
}

struct SpanInfo {
    pages: Range<usize>,
    /// Spans sharing at least one page with this one.
    sharers: Vec<u64>,
    /// Pages found written by another sharer's scan (or by the fork re-arm), not yet returned.
    pending: Mutex<Vec<Range<usize>>>,
}

/// The process-wide tracker, opened and probed on first use. A failure (no `WP_ASYNC`,
/// userfaultfd refused) is remembered and returned as [`GuardError::Unavailable`] for `kind`.
pub fn tracker(kind: BackendKind) -> Result<&'static WpTracker, GuardError> {
    static TRACKER: once_cell::sync::OnceCell<Result<WpTracker, String>> = once_cell::sync::OnceCell::new();
    match TRACKER.get_or_init(WpTracker::open) {
        Ok(t) => Ok(t),
        Err(reason) => Err(GuardError::Unavailable { backend: kind, reason: reason.clone() }),
    }
}

/// `range` widened to whole pages and clipped to the span's pages; `None` when they do not meet.
fn span_pages(span: &WpSpan, range: &Range<usize>) -> Option<Range<usize>> {
    intersect(&(page_floor(range.start)..page_ceil(range.end)), &span.pages)
}

impl WpTracker {
    fn open() -> Result<WpTracker, String> {
        let (uffd, features) = open_uffd()?;
        let pagemap = open_pagemap().map_err(|e| format!("open /proc/self/pagemap: {e}"))?;
        Ok(WpTracker {
            state: RwLock::new(State {
                pid: getpid(),
                uffd,
                pagemap,
                users: PageUsers::default(),
                spans: HashMap::new(),
                next_span: 1,
                generation: 0,
                fork_gen: 0,
            }),
            features,
        })
    }

    /// The `UFFD_FEATURE_*` bits enabled on the userfaultfd.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Registers the page-aligned cover of `addr..addr + len` for async write-protect and arms
    /// it, so that the first [`scan`](Self::scan) returns the pages written after this call.
    /// Pages already registered by another span stay as they are for that span.
    ///
    /// Fails with [`GuardError::RegionRefused`] (reason included) when the kernel refuses the
    /// range, e.g. `EINVAL` on a driver's `VM_PFNMAP`/`VM_IO` mapping or a disk file mapping.
    pub fn register(&self, addr: usize, len: usize, kind: BackendKind) -> Result<WpSpan, GuardError> {
        let refused = |reason: String| GuardError::refused(kind, addr, len, reason);
        if len == 0 {
            return Err(refused("empty range".into()));
        }
        let end = addr.checked_add(len).ok_or_else(|| refused("range wraps".into()))?;
        let pages = page_floor(addr)..page_ceil(end);
        let mut st = self.write_state()?;
        // Registering pages that are already ours is a no-op for the kernel; it validates every
        // VMA of the range before changing any, so a refusal leaves nothing half-registered.
        uffd_register(&st.uffd, pages.clone()).map_err(|e| refused(format!("UFFDIO_REGISTER(WP): {e}")))?;
        let id = st.next_span;
        st.next_span += 1;
        st.generation += 1;
        let fresh = st.users.add(pages.clone());
        for r in &fresh {
            // Keep tracking at 4 KiB: no new THP here. Refused on some mappings; harmless.
            // SAFETY: advice only, on page-aligned addresses the caller has mapped.
            unsafe { libc::madvise(r.start as *mut libc::c_void, r.len(), libc::MADV_NOHUGEPAGE) };
            if let Err(e) = uffd_writeprotect(&st.uffd, r.clone()) {
                let gone = st.users.remove(pages.clone());
                for g in gone {
                    let _ = uffd_unregister(&st.uffd, g);
                }
                return Err(GuardError::Os { op: "UFFDIO_WRITEPROTECT", source: e });
            }
        }
        // Pages shared with other spans keep their written state for those spans: hand it over
        // to them now (the scan re-protects), so this span starts clean too.
        let sharers: Vec<u64> =
            st.spans.iter().filter(|(_, s)| overlaps(&s.pages, &pages)).map(|(&sid, _)| sid).collect();
        st.spans
            .insert(id, SpanInfo { pages: pages.clone(), sharers: sharers.clone(), pending: Mutex::new(Vec::new()) });
        for &sid in &sharers {
            st.spans.get_mut(&sid).expect("listed").sharers.push(id);
        }
        if !sharers.is_empty() {
            let mut found = Vec::new();
            let mut stats = ScanStats::default();
            let shared: Vec<Range<usize>> =
                sharers.iter().filter_map(|sid| intersect(&st.spans[sid].pages, &pages)).collect();
            for r in normalize(shared) {
                pagemap_scan(&st.pagemap, r, true, &mut found, &mut stats)?;
            }
            fan_out(&st, id, &found);
        }
        Ok(WpSpan { id, pages })
    }

    /// Returns, in `out` (cleared first; sorted, coalesced, page-aligned addresses), the pages of
    /// `range` written since the span's previous scan of them, and protects them again. `range`
    /// is clipped to the span and widened to whole pages. The bytes of a returned page may be
    /// read as soon as this returns: a later write faults again and is returned by the next scan.
    pub fn scan(
        &self,
        span: &WpSpan,
        range: Range<usize>,
        out: &mut Vec<Range<usize>>,
    ) -> Result<ScanStats, GuardError> {
        out.clear();
        let Some(range) = span_pages(span, &range) else { return Ok(ScanStats::default()) };
        self.scan_id(span.id, range, out)
    }

    /// [`scan`](Self::scan) of the span `id` over `range` (whole pages inside the span), appending
    /// to `out`.
    fn scan_id(&self, id: u64, range: Range<usize>, out: &mut Vec<Range<usize>>) -> Result<ScanStats, GuardError> {
        let mut stats = ScanStats::default();
        let stale = || stale_id(id, &range);
        let st = self.read_state()?;
        let info = st.spans.get(&id).ok_or_else(stale)?;
        if info.sharers.is_empty() {
            // No other span sees these pages; registration of a new sharer waits for the write
            // lock, so it cannot slip in between this scan and its result.
            pagemap_scan(&st.pagemap, range.clone(), true, out, &mut stats)?;
            take_pending(info, &range, out, &mut stats);
            return Ok(stats);
        }
        drop(st);
        // Shared pages: the scan and the hand-over to the sharers happen under the write lock,
        // so another sharer's scan cannot see a page protected before its share is queued.
        let st = self.write_state()?;
        let info = st.spans.get(&id).ok_or_else(stale)?;
        let from = out.len();
        pagemap_scan(&st.pagemap, range.clone(), true, out, &mut stats)?;
        fan_out(&st, id, &out[from..]);
        take_pending(info, &range, out, &mut stats);
        Ok(stats)
    }

    /// The pages of `range` written since the span's previous [`scan`](Self::scan) of them, like
    /// `scan` but without protecting them again: a later `scan` still returns them. `out` is
    /// cleared first (sorted, coalesced, page-aligned addresses). Used to learn which pages the
    /// application has written without consuming that knowledge (shadow refresh).
    pub fn written(
        &self,
        span: &WpSpan,
        range: Range<usize>,
        out: &mut Vec<Range<usize>>,
    ) -> Result<ScanStats, GuardError> {
        out.clear();
        let mut stats = ScanStats::default();
        let Some(range) = span_pages(span, &range) else { return Ok(stats) };
        // Under the read lock: a sharer's scan hands its findings over under the write lock, so
        // a page is either still written in the page table or already in `pending` here.
        let st = self.read_state()?;
        let info = st.spans.get(&span.id).ok_or_else(|| stale_span(span))?;
        pagemap_scan(&st.pagemap, range.clone(), false, out, &mut stats)?;
        let pending = info.pending.lock();
        let extra: Vec<Range<usize>> = pending.iter().filter_map(|r| intersect(r, &range)).collect();
        if !extra.is_empty() {
            out.extend(extra);
            *out = normalize(std::mem::take(out));
            stats.pages = out.iter().map(|r| r.len() / page_size()).sum();
        }
        Ok(stats)
    }

    /// Forgets the written state of `range` in `span` and protects it again (a scan whose result
    /// is dropped; shared pages are still handed to the other sharers).
    pub fn rearm(&self, span: &WpSpan, range: Range<usize>) -> Result<(), GuardError> {
        let mut scratch = Vec::new();
        self.scan(span, range, &mut scratch).map(|_| ())
    }

    /// Releases a span. Pages no other span uses are unregistered (which also drops their
    /// protection); shared pages stay registered and armed for the others.
    pub fn unregister(&self, span: WpSpan) -> Result<(), GuardError> {
        let mut st = self.write_state()?;
        let info = st.spans.remove(&span.id).ok_or_else(|| stale_span(&span))?;
        st.generation += 1;
        for sid in &info.sharers {
            if let Some(s) = st.spans.get_mut(sid) {
                s.sharers.retain(|&x| x != span.id);
            }
        }
        let mut first_err = None;
        for r in st.users.remove(span.pages.clone()) {
            if let Err(e) = uffd_unregister(&st.uffd, r) {
                first_err.get_or_insert(GuardError::Os { op: "UFFDIO_UNREGISTER", source: e });
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn read_state(&self) -> Result<RwLockReadGuard<'_, State>, GuardError> {
        loop {
            let st = self.state.read();
            if st.pid == getpid() {
                return Ok(st);
            }
            drop(st);
            drop(self.write_state()?);
        }
    }

    fn write_state(&self) -> Result<RwLockWriteGuard<'_, State>, GuardError> {
        let mut st = self.state.write();
        if st.pid != getpid() {
            reopen_after_fork(&mut st, self.features)?;
        }
        Ok(st)
    }
}

fn stale_id(id: u64, pages: &Range<usize>) -> GuardError {
    GuardError::Os {
        op: "wp span",
        source: io::Error::new(io::ErrorKind::NotFound, format!("span {id} ({pages:#x?}) not registered")),
    }
}

fn stale_span(span: &WpSpan) -> GuardError {
    GuardError::Os {
        op: "wp span",
        source: io::Error::new(io::ErrorKind::NotFound, format!("span {:#x?} not registered", span.pages)),
    }
}

/// In a forked child: own descriptors, every span registered and armed again, and every page
/// queued as written once.
fn reopen_after_fork(st: &mut State, features: u64) -> Result<(), GuardError> {
    let uffd = open_uffd_with(features)
        .map_err(|e| GuardError::Os { op: "userfaultfd after fork", source: io::Error::other(e) })?;
    let pagemap = open_pagemap().map_err(|source| GuardError::Os { op: "open pagemap after fork", source })?;
    for r in st.users.registered() {
        uffd_register(&uffd, r.clone())
            .map_err(|source| GuardError::Os { op: "UFFDIO_REGISTER after fork", source })?;
        uffd_writeprotect(&uffd, r)
            .map_err(|source| GuardError::Os { op: "UFFDIO_WRITEPROTECT after fork", source })?;
    }
    for s in st.spans.values() {
        *s.pending.lock() = vec![s.pages.clone()];
    }
    st.uffd = uffd;
    st.pagemap = pagemap;
    st.pid = getpid();
    st.generation += 1;
    st.fork_gen += 1;
    Ok(())
}

/// Queues the written ranges `found` (by span `from`) for every other span sharing them.
fn fan_out(st: &State, from: u64, found: &[Range<usize>]) {
    let Some(info) = st.spans.get(&from) else {
        return;
    };
    for sid in &info.sharers {
        let Some(other) = st.spans.get(sid) else {
            continue;
        };
        let mut pending = other.pending.lock();
        pending.extend(found.iter().filter_map(|r| intersect(r, &other.pages)));
    }
}

/// Moves the span's pending ranges inside `range` into `out` (kept sorted and coalesced).
fn take_pending(info: &SpanInfo, range: &Range<usize>, out: &mut Vec<Range<usize>>, stats: &mut ScanStats) {
    let mut pending = info.pending.lock();
    if pending.is_empty() {
        return;
    }
    let mut keep = Vec::new();
    let mut taken = Vec::new();
    for r in pending.drain(..) {
        match intersect(&r, range) {
            Some(i) => {
                if r.start < i.start {
                    keep.push(r.start..i.start);
                }
                if i.end < r.end {
                    keep.push(i.end..r.end);
                }
                taken.push(i);
            }
            None => keep.push(r),
        }
    }
    *pending = keep;
    drop(pending);
    if taken.is_empty() {
        return;
    }
    taken.append(out);
    *out = normalize(taken);
    stats.pages = out.iter().map(|r| r.len() / page_size()).sum();
}

/// One `PAGEMAP_SCAN(PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC)` walk over `range` (without
/// `PM_SCAN_WP_MATCHING` when `reset` is false: report only), resumed at `walk_end` until done.
/// Appends the written ranges to `out`, coalescing adjacent ones.
fn pagemap_scan(
    pagemap: &OwnedFd,
    range: Range<usize>,
    reset: bool,
    out: &mut Vec<Range<usize>>,
    stats: &mut ScanStats,
) -> Result<(), GuardError> {
    pagemap_scan_with(pagemap, range, reset, true, out, stats)
}

/// [`pagemap_scan`]; `huge`: also ask whether a run is a huge mapping. Without it the kernel
/// takes its page-table fast path (category and return mask exactly `PAGE_IS_WRITTEN`), about
/// 3x cheaper per page walked (docs/design.md, "Collection at scale"), and huge runs are not
/// counted in [`ScanStats::thp_pages`].
fn pagemap_scan_with(
    pagemap: &OwnedFd,
    range: Range<usize>,
    reset: bool,
    huge: bool,
    out: &mut Vec<Range<usize>>,
    stats: &mut ScanStats,
) -> Result<(), GuardError> {
    let mut vec = [sys::page_region { start: 0, end: 0, categories: 0 }; SCAN_VEC_LEN];
    let mut start = range.start as u64;
    let end = range.end as u64;
    while start < end {
        let mut arg = sys::pm_scan_arg {
            size: std::mem::size_of::<sys::pm_scan_arg>() as u64,
            flags: if reset {
                (sys::PM_SCAN_WP_MATCHING | sys::PM_SCAN_CHECK_WPASYNC) as u64
            } else {
                sys::PM_SCAN_CHECK_WPASYNC as u64
            },
            start,
            end,
            walk_end: 0,
            vec: vec.as_mut_ptr() as u64,
            vec_len: SCAN_VEC_LEN as u64,
            max_pages: 0,
            category_inverted: 0,
            category_mask: sys::PAGE_IS_WRITTEN as u64,
            category_anyof_mask: 0,
            return_mask: if huge {
                (sys::PAGE_IS_WRITTEN | sys::PAGE_IS_HUGE) as u64
            } else {
                sys::PAGE_IS_WRITTEN as u64
            },
        };
        // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points at `SCAN_VEC_LEN` writable
        // page_region entries that outlive the call.
        let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), uapi::PAGEMAP_SCAN as _, &mut arg) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(GuardError::Os { op: "PAGEMAP_SCAN", source: e });
        }
        stats.ioctls += 1;
        for r in &vec[..n as usize] {
            let (s, e) = (r.start as usize, r.end as usize);
            let pages = (e - s) / page_size();
            stats.pages += pages;
            if r.categories & sys::PAGE_IS_HUGE as u64 != 0 {
                stats.thp_pages += pages;
            }
            match out.last_mut() {
                Some(last) if last.end == s => last.end = e,
                _ => out.push(s..e),
            }
        }
        if arg.walk_end >= end {
            break;
        }
        if arg.walk_end <= start {
            return Err(GuardError::Os {
                op: "PAGEMAP_SCAN",
                source: io::Error::other(format!("walk made no progress at {start:#x}")),
            });
        }
        start = arg.walk_end;
    }
    Ok(())
}

fn getpid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

fn open_pagemap() -> io::Result<OwnedFd> {
    let f = std::fs::File::open("/proc/self/pagemap")?;
    Ok(OwnedFd::from(f))
}

/// Opens the userfaultfd with the features this module needs; the reason on failure.
fn open_uffd() -> Result<(OwnedFd, u64), String> {
    // The feature handshake is one-shot per descriptor: ask a throw-away one what is offered.
    let probe = new_uffd()?;
    let offered = uffd_api(&probe, 0).map_err(|e| format!("UFFDIO_API: {e}"))?;
    drop(probe);
    let need = (sys::UFFD_FEATURE_WP_ASYNC | sys::UFFD_FEATURE_WP_UNPOPULATED) as u64;
    if offered & need != need {
        return Err(format!(
            "kernel lacks userfaultfd WP_ASYNC/WP_UNPOPULATED (offered features {offered:#x}; Linux 6.7+ needed)"
        ));
    }
    let want = need | (offered & sys::UFFD_FEATURE_WP_HUGETLBFS_SHMEM as u64);
    let fd = open_uffd_with(want)?;
    Ok((fd, want))
}

fn open_uffd_with(features: u64) -> Result<OwnedFd, String> {
    let fd = new_uffd()?;
    let got = uffd_api(&fd, features).map_err(|e| format!("UFFDIO_API({features:#x}): {e}"))?;
    if got & features != features {
        return Err(format!("UFFDIO_API granted {got:#x}, asked {features:#x}"));
    }
    Ok(fd)
}

fn new_uffd() -> Result<OwnedFd, String> {
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | sys::UFFD_USER_MODE_ONLY as libc::c_int;
    // SAFETY: userfaultfd takes only a flags word.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if fd >= 0 {
        // SAFETY: the syscall just returned this descriptor; nothing else owns it.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    }
    let sys_err = io::Error::last_os_error();
    // Where the syscall is filtered, /dev/userfaultfd may still be allowed.
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/userfaultfd") {
        Ok(dev) => {
            const USERFAULTFD_IOC_NEW: u32 = (sys::USERFAULTFD_IOC) << 8; // _IO(0xAA, 0x00)
                                                                          // SAFETY: USERFAULTFD_IOC_NEW takes the flags word by value.
            let fd = unsafe { libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW as _, flags) };
            if fd >= 0 {
                // SAFETY: the ioctl just returned this descriptor; nothing else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            Err(format!("userfaultfd refused ({sys_err}); /dev/userfaultfd refused ({})", io::Error::last_os_error()))
        }
        Err(e) => Err(format!("userfaultfd refused ({sys_err}); /dev/userfaultfd: {e}")),
    }
}

fn uffd_api(fd: &OwnedFd, features: u64) -> io::Result<u64> {
    let mut api = sys::uffdio_api { api: sys::UFFD_API as u64, features, ioctls: 0 };
    // SAFETY: UFFDIO_API reads and writes one uffdio_api.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), linux_raw_sys::ioctl::UFFDIO_API as _, &mut api) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(api.features)
}

fn uffd_register(fd: &OwnedFd, r: Range<usize>) -> io::Result<()> {
    let mut reg = sys::uffdio_register {
        range: sys::uffdio_range { start: r.start as u64, len: r.len() as u64 },
        mode: sys::UFFDIO_REGISTER_MODE_WP as u64,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_REGISTER reads and writes one uffdio_register; the kernel validates the
    // range.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), linux_raw_sys::ioctl::UFFDIO_REGISTER as _, &mut reg) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn uffd_unregister(fd: &OwnedFd, r: Range<usize>) -> io::Result<()> {
    let range = sys::uffdio_range { start: r.start as u64, len: r.len() as u64 };
    // SAFETY: UFFDIO_UNREGISTER reads one uffdio_range.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), linux_raw_sys::ioctl::UFFDIO_UNREGISTER as _, &range) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn uffd_writeprotect(fd: &OwnedFd, r: Range<usize>) -> io::Result<()> {
    loop {
        let mut wp = sys::uffdio_writeprotect {
            range: sys::uffdio_range { start: r.start as u64, len: r.len() as u64 },
            mode: uapi::UFFDIO_WRITEPROTECT_MODE_WP,
        };
        // SAFETY: UFFDIO_WRITEPROTECT reads one uffdio_writeprotect.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), linux_raw_sys::ioctl::UFFDIO_WRITEPROTECT as _, &mut wp) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        // EAGAIN: the address space is changing under us (e.g. a concurrent fork); retry.
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
}

pub(crate) fn page_floor(a: usize) -> usize {
    a & !(page_size() - 1)
}

pub(crate) fn page_ceil(a: usize) -> usize {
    a.saturating_add(page_size() - 1) & !(page_size() - 1)
}

fn overlaps(a: &Range<usize>, b: &Range<usize>) -> bool {
    a.start < b.end && b.start < a.end
}

pub(crate) fn intersect(a: &Range<usize>, b: &Range<usize>) -> Option<Range<usize>> {
    let r = a.start.max(b.start)..a.end.min(b.end);
    (r.start < r.end).then_some(r)
}

/// Sorts and merges overlapping or touching ranges.
pub(crate) fn normalize(mut v: Vec<Range<usize>>) -> Vec<Range<usize>> {
    v.retain(|r| r.start < r.end);
    v.sort_unstable_by_key(|r| r.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Users per page, as disjoint address segments with a count.
#[derive(Default)]
struct PageUsers {
    segs: BTreeMap<usize, (usize, u32)>,
}

impl PageUsers {
    fn split_at(&mut self, at: usize) {
        if let Some((&s, &(e, c))) = self.segs.range(..at).next_back() {
            if e > at {
                self.segs.insert(s, (at, c));
                self.segs.insert(at, (e, c));
            }
        }
    }

    /// Adds one user to every page of `r`; returns the sub-ranges that had none.
    fn add(&mut self, r: Range<usize>) -> Vec<Range<usize>> {
        self.split_at(r.start);
        self.split_at(r.end);
        let mut fresh = Vec::new();
        let mut cur = r.start;
        let inside: Vec<usize> = self.segs.range(r.start..r.end).map(|(&s, _)| s).collect();
        for s in inside {
            let seg = self.segs.get_mut(&s).expect("listed");
            if s > cur {
                fresh.push(cur..s);
            }
            seg.1 += 1;
            cur = seg.0;
        }
        if cur < r.end {
            fresh.push(cur..r.end);
        }
        for f in &fresh {
            self.segs.insert(f.start, (f.end, 1));
        }
        fresh
    }

    /// Removes one user from every page of `r`; returns the sub-ranges left with none.
    fn remove(&mut self, r: Range<usize>) -> Vec<Range<usize>> {
        self.split_at(r.start);
        self.split_at(r.end);
        let inside: Vec<usize> = self.segs.range(r.start..r.end).map(|(&s, _)| s).collect();
        let mut gone = Vec::new();
        for s in inside {
            let seg = self.segs.get_mut(&s).expect("listed");
            seg.1 -= 1;
            if seg.1 == 0 {
                let e = seg.0;
                self.segs.remove(&s);
                gone.push(s..e);
            }
        }
        normalize(gone)
    }

    /// Every registered page, coalesced.
    fn registered(&self) -> Vec<Range<usize>> {
        normalize(self.segs.iter().map(|(&s, &(e, _))| s..e).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_users_count_per_page() {
        let mut u = PageUsers::default();
        assert_eq!(u.add(0x1000..0x4000), vec![0x1000..0x4000]);
        assert_eq!(u.add(0x3000..0x6000), vec![0x4000..0x6000]);
        assert_eq!(u.add(0x0000..0x8000), vec![0x0000..0x1000, 0x6000..0x8000]);
        assert_eq!(u.remove(0x0000..0x8000), vec![0x0000..0x1000, 0x6000..0x8000]);
        assert_eq!(u.remove(0x1000..0x4000), vec![0x1000..0x3000]);
        assert_eq!(u.registered(), vec![0x3000..0x6000]);
        assert_eq!(u.remove(0x3000..0x6000), vec![0x3000..0x6000]);
        assert!(u.registered().is_empty());
    }

    #[test]
    fn normalize_merges_touching_ranges() {
        assert_eq!(normalize(vec![5..7, 0..2, 2..3, 6..9, 4..4]), vec![0..3, 5..9]);
    }
}
