//! A tracked region as the fault handler and the collector see it: its shadow views, one atomic
//! state word per page with its lock, and the fault, collection and refresh steps (the page
//! states are described in the module above).

use super::handler::{fatal, Access};
use crate::guard::*;
use std::mem::MaybeUninit;
use std::sync::atomic::AtomicU32;

pub(super) const ARMED: u8 = 0;
pub(super) const READ: u8 = 1;
pub(super) const DIRTY: u8 = 2;
pub(super) const STATE_MASK: u8 = 3;
const LOCK: u32 = 0x80;
/// Someone sleeps on the page's futex waiting for the lock.
const WAITERS: u32 = 0x40;

/// The two views of one shadow span (the backend's own one is the engine view) and its page
/// states.
pub(super) struct ShadowMap {
    pub(super) view: DualView,
    /// One word per page (a futex word): state, `LOCK`, `WAITERS`.
    pub(super) states: Box<[AtomicU32]>,
}

impl ShadowMap {
    pub(super) fn new(span: usize, prot: libc::c_int) -> Result<ShadowMap, GuardError> {
        // A child has no use for the engine view.
        let view = DualView::new(c"vkdirty-shadow", span, prot, true)?;
        let pages = span / page_size();
        let states = (0..pages).map(|_| AtomicU32::new(ARMED as u32)).collect();
        Ok(ShadowMap { view, states })
    }

    pub(super) fn pages(&self) -> usize {
        self.states.len()
    }
}

/// A tracked region, as the fault handler sees it. Immutable once published, except for the
/// atomic page states.
pub(super) struct Guarded {
    pub(super) map: ShadowMap,
    pub(super) real: *mut u8,
    /// Offset of the region within its first page (also within the shadow span).
    pub(super) head: usize,
    pub(super) len: usize,
    pub(super) reads: bool,
}

// SAFETY: `real` is only dereferenced under the track contract (mapped until untrack); all
// shared mutation goes through atomics.
unsafe impl Send for Guarded {}
// SAFETY: as above.
unsafe impl Sync for Guarded {}

fn prot_of(state: u8) -> libc::c_int {
    match state {
        DIRTY => libc::PROT_READ | libc::PROT_WRITE,
        READ => libc::PROT_READ,
        _ => libc::PROT_NONE,
    }
}

impl Guarded {
    fn base_prot(&self) -> libc::c_int {
        if self.reads {
            libc::PROT_NONE
        } else {
            libc::PROT_READ
        }
    }

    /// Protection of a page in `state`.
    fn prot(&self, state: u8) -> libc::c_int {
        if state == ARMED {
            self.base_prot()
        } else {
            prot_of(state)
        }
    }

    /// The region bytes covered by pages `first..end`, as (shadow offset, length).
    fn clip(&self, first: usize, end: usize) -> (usize, usize) {
        let page = page_size();
        let lo = (first * page).max(self.head);
        let hi = (end * page).min(self.head + self.len);
        (lo, hi.saturating_sub(lo))
    }

    /// Pages covering region offsets `range` (clamped to the region).
    fn page_range(&self, range: Option<Range<usize>>) -> Range<usize> {
        let page = page_size();
        let r = range.unwrap_or(0..self.len);
        let (s, e) = (r.start.min(self.len), r.end.min(self.len));
        if s >= e {
            return 0..0;
        }
        (self.head + s) / page..(self.head + e).div_ceil(page)
    }

    fn state(&self, i: usize) -> u8 {
        (self.map.states[i].load(Ordering::Acquire) & STATE_MASK as u32) as u8
    }

    /// Takes page `i`'s lock and returns its state. Holders never wait on the waiters, so the
    /// wait ends; after a short spin the waiter sleeps on the page's futex, so a preempted
    /// holder is not fought for the CPU. Async-signal-safe (atomics and `futex`).
    fn lock(&self, i: usize) -> u8 {
        let cell = &self.map.states[i];
        let mut spins = 0u32;
        loop {
            let s = cell.load(Ordering::Relaxed);
            if s & LOCK == 0 {
                if cell.compare_exchange_weak(s, s | LOCK, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    return (s & STATE_MASK as u32) as u8;
                }
                continue;
            }
            if spins < 100 {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            if s & WAITERS == 0
                && cell.compare_exchange_weak(s, s | WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            // SAFETY: `cell` is a live, aligned u32; FUTEX_WAIT returns at once if it changed.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    cell.as_ptr(),
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    s | WAITERS,
                    std::ptr::null::<libc::timespec>(),
                )
            };
        }
    }

    fn unlock(&self, i: usize, state: u8) {
        let cell = &self.map.states[i];
        if cell.swap(state as u32, Ordering::Release) & WAITERS != 0 {
            // SAFETY: as in `lock`; wakes every waiter, one wins, the others wait again.
            unsafe {
                libc::syscall(libc::SYS_futex, cell.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX)
            };
        }
    }

    /// Changes the protection of pages `first..end` of the application view.
    fn protect(&self, first: usize, end: usize, prot: libc::c_int) -> bool {
        let page = page_size();
        // SAFETY: the pages lie inside our application view.
        unsafe {
            libc::mprotect(self.map.view.app.add(first * page) as *mut libc::c_void, (end - first) * page, prot) == 0
        }
    }

    /// Copies the real bytes of pages `first..end` into the shadow (through the engine view).
    pub(super) fn refresh(&self, first: usize, end: usize) {
        let (off, n) = self.clip(first, end);
        // SAFETY: the real region is mapped while tracked (track contract); the engine view is
        // ours and read-write; the ranges are clipped to the region.
        unsafe { std::ptr::copy_nonoverlapping(self.real.add(off - self.head), self.map.view.own.add(off), n) }
    }

    /// Copies the shadow bytes of pages `first..end` to the real memory; returns the region
    /// offset and length copied.
    fn copy_back(&self, first: usize, end: usize) -> (usize, usize) {
        let (off, n) = self.clip(first, end);
        // SAFETY: as in `refresh`, in the other direction.
        unsafe { std::ptr::copy_nonoverlapping(self.map.view.own.add(off), self.real.add(off - self.head), n) }
        (off - self.head, n)
    }

    /// The fault handler's part: `addr` lies in this region's application view.
    ///
    /// Async-signal-safe: atomics, `memcpy` and `mprotect` only.
    pub(super) fn on_fault(&self, addr: usize, access: Access) -> bool {
        let i = (addr - self.map.view.app as usize) / page_size();
        if i >= self.map.pages() {
            return false;
        }
        let s = self.lock(i) & STATE_MASK;
        let readable = s != ARMED || !self.reads;
        let write = match access {
            Access::Write => true,
            Access::Read => false,
            Access::Unknown => readable,
        };
        let new = if write && s != DIRTY {
            if s == ARMED && self.reads {
                self.refresh(i, i + 1);
            }
            if !self.protect(i, i + 1, libc::PROT_READ | libc::PROT_WRITE) {
                fatal(b"vkdirty: shadow: mprotect(PROT_READ|PROT_WRITE) failed in the fault handler (vm.max_map_count?)\n");
            }
            DIRTY
        } else if !write && s == ARMED && self.reads {
            self.refresh(i, i + 1);
            if !self.protect(i, i + 1, libc::PROT_READ) {
                fatal(b"vkdirty: shadow: mprotect(PROT_READ) failed in the fault handler (vm.max_map_count?)\n");
            }
            READ
        } else {
            // The page already allows this access: another thread's fault changed it first.
            // Re-apply its protection in case someone else changed it, so the access cannot
            // fault forever.
            self.protect(i, i + 1, self.prot(s));
            s
        };
        self.unlock(i, new);
        true
    }

    /// Locks the run of pages from `i` (below `end`) whose state satisfies `pred`, pushing their
    /// states to `held`; returns the end of the run.
    fn lock_run(&self, mut i: usize, end: usize, pred: impl Fn(u8) -> bool, held: &mut Vec<u8>) -> usize {
        held.clear();
        while i < end && pred(self.state(i)) {
            let s = self.lock(i) & STATE_MASK;
            if !pred(s) {
                self.unlock(i, s);
                break;
            }
            held.push(s);
            i += 1;
        }
        i
    }

    fn unlock_run(&self, first: usize, states: impl Iterator<Item = u8>) {
        for (k, s) in states.enumerate() {
            self.unlock(first + k, s);
        }
    }

    /// Re-arms written (and, with shadow reads, read) pages in `range` and copies the written
    /// ones back; returns the coalesced runs copied (region offset, length) and the page count.
    /// The caller holds the region's operation lock.
    pub(super) fn collect_runs(&self, range: Option<Range<usize>>) -> Result<(Vec<(usize, usize)>, usize), GuardError> {
        let reads = self.reads;
        let eligible = move |s: u8| s == DIRTY || (reads && s == READ);
        let pages = self.page_range(range);
        let mut runs = Vec::new();
        let mut count = 0;
        let mut held = Vec::with_capacity(pages.len());
        let _blocked = BlockedSignals::new();
        let mut i = pages.start;
        while i < pages.end {
            if !eligible(self.state(i)) {
                i += 1;
                continue;
            }
            let first = i;
            i = self.lock_run(first, pages.end, eligible, &mut held);
            if i == first {
                continue;
            }
            // Re-protect before copying: a racing write now faults and waits for the lock.
            if !self.protect(first, i, self.base_prot()) {
                let err = GuardError::os("mprotect shadow");
                self.unlock_run(first, held.iter().copied());
                return Err(err);
            }
            let mut k = first;
            while k < i {
                if held[k - first] != DIRTY {
                    k += 1;
                    continue;
                }
                let d = k;
                while k < i && held[k - first] == DIRTY {
                    k += 1;
                }
                count += k - d;
                let (off, n) = self.copy_back(d, k);
                match runs.last_mut() {
                    // A page that turned dirty while the previous run was being locked.
                    Some((o, l)) if *o + *l == off => *l += n,
                    _ if n > 0 => runs.push((off, n)),
                    _ => {}
                }
            }
            self.unlock_run(first, held.iter().map(|_| ARMED));
        }
        Ok((runs, count))
    }

    /// Refreshes pages of `range` the application has not written.
    pub(super) fn invalidate(&self, range: Range<usize>) -> Result<(), GuardError> {
        let pages = self.page_range(Some(range));
        let mut held = Vec::with_capacity(pages.len());
        let _blocked = BlockedSignals::new();
        let mut i = pages.start;
        while i < pages.end {
            // With shadow reads, re-arming read pages makes the next access refresh them.
            let target = if self.reads { READ } else { ARMED };
            if self.state(i) != target {
                i += 1;
                continue;
            }
            let first = i;
            i = self.lock_run(first, pages.end, |s| s == target, &mut held);
            if i == first {
                continue;
            }
            if self.reads {
                if !self.protect(first, i, libc::PROT_NONE) {
                    let err = GuardError::os("mprotect shadow");
                    self.unlock_run(first, held.iter().copied());
                    return Err(err);
                }
            } else {
                self.refresh(first, i);
            }
            self.unlock_run(first, held.iter().map(|_| ARMED));
        }
        Ok(())
    }
}

/// Blocks asynchronous signals on this thread while it holds page locks.
struct BlockedSignals(libc::sigset_t);

impl BlockedSignals {
    fn new() -> BlockedSignals {
        // SAFETY: sigset_t is plain data, initialised by sigfillset/pthread_sigmask.
        unsafe {
            let mut set = MaybeUninit::<libc::sigset_t>::zeroed().assume_init();
            let mut old = MaybeUninit::<libc::sigset_t>::zeroed().assume_init();
            libc::sigfillset(&mut set);
            for s in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGTRAP] {
                libc::sigdelset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            BlockedSignals(old)
        }
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}
