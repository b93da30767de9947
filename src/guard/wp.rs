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

use super::{page_size, BackendKind, GuardError};
use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::os::fd::OwnedFd;

mod kernel;
mod predict;
mod ranges;
mod set;
mod trust;
mod vma;
use kernel::{
    getpid, open_pagemap, open_uffd, open_uffd_with, uffd_register, uffd_unprotect, uffd_unregister, uffd_writeprotect,
};
use kernel::{pagemap_scan, pagemap_scan_with};
pub use predict::Prediction;
pub(crate) use ranges::{intersect, normalize, page_ceil, page_floor};
use ranges::{overlaps, PageUsers};
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
    /// Pages reported because a trusted prediction left them unprotected (not compared; counted
    /// in `pages` too): written, or at worst a page too many.
    pub trusted: usize,
    /// Of those, pages whose prediction took no snapshot.
    pub trusted_bare: usize,
}

/// The process-wide async write-protect tracker. Safe to use from any thread.
pub struct WpTracker {
    state: RwLock<State>,
    features: u64,
    /// The ranges of the last [`scan`](Self::scan)s (region collections, flushes, unmaps, parks,
    /// `rearm`), noted before each: such a scan re-protects and reports predicted pages, after
    /// which their marks, not their snapshots, say whether they were written (see `predict.rs`).
    pub(super) foreign: parking_lot::Mutex<predict::ForeignScans>,
}

struct State {
    pid: libc::pid_t,
    uffd: OwnedFd,
    pagemap: OwnedFd,
    users: PageUsers,
    spans: HashMap<u64, SpanInfo>,
    next_span: u64,
    /// Bumped whenever spans start or stop sharing pages (and after a fork); a [`SpanSet`]
    /// rebuilds its plan then. Spans that share nothing come and go without it: a set updates
    /// its plan itself.
    share_gen: u64,
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
                share_gen: 0,
                fork_gen: 0,
            }),
            foreign: parking_lot::Mutex::new(predict::ForeignScans::default()),
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
            st.share_gen += 1;
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
        self.foreign.lock().note(range.clone());
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

    /// Protects `range` of `span` again after writes the caller made there itself (a shadow's
    /// refresh through the application view), without reading the written state as
    /// [`rearm`](Self::rearm) does: a write of anyone else's that landed before the protection is
    /// forgotten, so the caller checks the bytes afterwards ([`mark_written`](Self::mark_written)
    /// where they changed). For pages of this span alone (no sharer would be told).
    pub fn protect(&self, span: &WpSpan, range: Range<usize>) -> Result<(), GuardError> {
        let Some(range) = span_pages(span, &range) else { return Ok(()) };
        let st = self.read_state()?;
        uffd_writeprotect(&st.uffd, range).map_err(|source| GuardError::Os { op: "UFFDIO_WRITEPROTECT", source })
    }

    /// Lifts the protection of `range` of `span`: the next [`scan`](Self::scan) reports it as
    /// written.
    pub fn mark_written(&self, span: &WpSpan, range: Range<usize>) -> Result<(), GuardError> {
        let Some(range) = span_pages(span, &range) else { return Ok(()) };
        let st = self.read_state()?;
        uffd_unprotect(&st.uffd, range).map_err(|source| GuardError::Os { op: "UFFDIO_WRITEPROTECT(0)", source })
    }

    /// Releases a span. Pages no other span uses are unregistered (which also drops their
    /// protection); shared pages stay registered and armed for the others.
    pub fn unregister(&self, span: WpSpan) -> Result<(), GuardError> {
        let mut st = self.write_state()?;
        let info = st.spans.remove(&span.id).ok_or_else(|| stale_span(&span))?;
        if !info.sharers.is_empty() {
            st.share_gen += 1;
        }
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
    st.share_gen += 1;
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
