//! Shadow backend: the application gets an anonymous shadow of the real memory; writes (and,
//! with [`TrackOptions::shadow_reads`], reads) are trapped with `mprotect` and a `SIGSEGV`
//! handler; a collection copies the written pages back to the real memory.
//!
//! # Shadow memory
//! Each region gets a page-aligned span covering it. The pointer handed to the application keeps
//! the region's offset within its first page, so shadow pages and real pages line up one to one.
//! The span is a `memfd` mapped twice: the *application view* (protected, the pointer the
//! application uses) and the *engine view* (always read-write, never handed out). The engine view
//! lets the backend refresh a protected page from the real memory without ever making the
//! application view writable behind the tracker's back, and copy pages out while the application
//! view is already re-protected. Every copy is clipped to the region's bytes, so two regions that
//! share a real page never overwrite each other's bytes.
//!
//! # Page states
//! One atomic word per page: `ARMED` (protected: `PROT_READ`, or `PROT_NONE` with shadow reads),
//! `READ` (shadow reads only: refreshed from the real memory, `PROT_READ`), `DIRTY` (written,
//! `PROT_READ | PROT_WRITE`), plus a lock bit (a waiter spins briefly, then sleeps on the word
//! with `futex`, which is a plain system call and so usable in the handler). Every change of a
//! page's state *and protection* is made under its lock, by the fault handler or by the
//! collector, so a refresh can never overwrite a write and a re-protection can never lose one:
//! - write fault: (`ARMED` with shadow reads: refresh the page first) → `DIRTY`, read-write;
//! - read fault (`ARMED`, shadow reads): refresh from the real memory → `READ`, read-only;
//! - collection: lock the run of `DIRTY` (and `READ`) pages, re-protect it, *then* copy the
//!   `DIRTY` pages shadow → real, unlock as `ARMED`. A write racing with the collection either
//!   landed before the re-protection (and is in the copy) or faults afterwards, waits for the
//!   lock and marks the page `DIRTY` for the next collection: never lost.
//! - Only `DIRTY` pages are ever copied back. A page the application only read is never copied
//!   back, since that would overwrite bytes the GPU wrote in the real memory since the refresh.
//!
//! # The fault handler
//! Installed once per process (`SA_SIGINFO | SA_ONSTACK`, every signal masked while it runs, so
//! nothing interrupts it while it holds a page lock). It is async-signal-safe: no allocation, no
//! lock any thread can hold across a blocking call. Regions are found in a fixed-capacity table
//! of `(start, end, region)` slots sorted by address and searched by bisection (O(log n)). The
//! table is double-buffered ("left-right"): the handler picks the current buffer, announces
//! itself in that buffer's reader count and re-checks that it is still current; a writer
//! (`track`/`untrack`, serialised by a mutex) fills the other buffer once its readers have left,
//! flips, then waits for the old buffer's readers to leave before freeing an untracked region.
//! Readers never wait for writers, so a fault can never deadlock against table updates.
//! Read and write faults are told apart from the signal context: x86-64 bit 1 of the page-fault
//! error code (`REG_ERR`), aarch64 the WnR bit of the ESR record in `__reserved`. Where neither is
//! available, a fault on a page that is already readable must be a write.
//! Faults that are not ours (outside every shadow, user-sent, instruction fetches) go to the
//! handler that was installed before ours: its `SA_SIGINFO` or plain handler, or for `SIG_DFL`
//! (and `SIG_IGN`, which the kernel treats as `SIG_DFL` for a fault) the default action is
//! restored and the fault re-executes, so a genuine crash still crashes.
//! Collectors block asynchronous signals while they hold page locks, so a handler of the
//! application's that writes tracked memory on the collecting thread cannot deadlock.
//!
//! # Persistent shadows
//! With [`TrackOptions::persistent_key`] (an allocation id), `untrack` keeps the shadow for that
//! key: outstanding writes are copied back and reported as usual, then the whole application
//! view is made `PROT_NONE` and removed from the fault table (touching it while unmapped crashes,
//! like touching unmapped memory). The next `track` with the same key and the same geometry (same
//! length and offset within the first page) reuses it and returns the *same* pointer, skipping the
//! mapping and page population; its contents are refreshed from the (possibly moved) real memory:
//! eagerly without shadow reads, lazily page by page with them. A different geometry replaces the
//! kept shadow. One shadow is kept per key; [`Backend::release_persistent`] drops it (at
//! `vkFreeMemory`). A key tracked twice at once gets a second, fresh shadow; whichever is
//! untracked last is kept.
//!
//! # Limitations
//! - A system call that writes into the application view (`read()` into a mapped pointer)
//!   meets a write-protected page inside the kernel: no signal is raised and the call fails with
//!   `EFAULT` (or returns a short count), unless the page was already written since the last
//!   collection. Write tracked memory from user space, or read into a bounce buffer.
//! - A thread that blocks `SIGSEGV` and writes tracked memory is killed by the kernel (a fault
//!   with `SIGSEGV` blocked takes the default action). A `SIGSEGV` handler installed after ours
//!   takes the faults until the next collection (or unmap, free, track), where ours goes back in
//!   front and chains to it; writes made in between are lost if that handler does not chain to
//!   ours. A handler that chains back to ours for a fault nobody owns ends in the default action.
//! - `SA_ONSTACK` uses a thread's alternate stack when it has one and is ignored otherwise; the
//!   handler needs little stack.
//! - Each protected run of pages is a kernel VMA; a scattered dirty set costs up to one VMA per
//!   page (`vm.max_map_count`). If the handler cannot change a protection it prints a
//!   diagnostic and aborts, since going on would lose writes.
//! - Tracking is per page: a page the CPU wrote is copied back whole (clipped to the region),
//!   including bytes the GPU wrote in it since the last refresh.
//! - After `fork()`, the child shares the application view with the parent (as it would share
//!   the driver's `MAP_SHARED` memory), but the child's writes are not tracked for the parent.

use super::*;
use parking_lot::Mutex;
use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize};
use std::sync::Arc;

const ARMED: u8 = 0;
const READ: u8 = 1;
const DIRTY: u8 = 2;
const STATE_MASK: u8 = 3;
const LOCK: u32 = 0x80;
/// Someone sleeps on the page's futex waiting for the lock.
const WAITERS: u32 = 0x40;

/// Regions the fault handler can find at once.
pub const TABLE_CAPACITY: usize = 8192;

// ---------------------------------------------------------------------------------------------
// Shadow mappings

/// The two views of one shadow span (the backend's own one is the engine view) and its page
/// states.
struct ShadowMap {
    view: DualView,
    /// One word per page (a futex word): state, `LOCK`, `WAITERS`.
    states: Box<[AtomicU32]>,
}

impl ShadowMap {
    fn new(span: usize, prot: libc::c_int) -> Result<ShadowMap, GuardError> {
        // A child has no use for the engine view.
        let view = DualView::new(c"vkdirty-shadow", span, prot, true)?;
        let pages = span / page_size();
        let states = (0..pages).map(|_| AtomicU32::new(ARMED as u32)).collect();
        Ok(ShadowMap { view, states })
    }

    fn pages(&self) -> usize {
        self.states.len()
    }
}

/// A tracked region, as the fault handler sees it. Immutable once published, except for the
/// atomic page states.
struct Guarded {
    map: ShadowMap,
    real: *mut u8,
    /// Offset of the region within its first page (also within the shadow span).
    head: usize,
    len: usize,
    reads: bool,
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
    fn refresh(&self, first: usize, end: usize) {
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
    fn on_fault(&self, addr: usize, access: Access) -> bool {
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
    fn collect_runs(&self, range: Option<Range<usize>>) -> Result<(Vec<(usize, usize)>, usize), GuardError> {
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
    fn invalidate(&self, range: Range<usize>) -> Result<(), GuardError> {
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

// ---------------------------------------------------------------------------------------------
// Fault table (read by the signal handler)

struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    region: AtomicPtr<Guarded>,
}

struct Table {
    len: AtomicUsize,
    slots: [Slot; TABLE_CAPACITY],
}

struct FaultTable {
    current: AtomicUsize,
    readers: [AtomicUsize; 2],
    tables: [Table; 2],
}

const fn empty_table() -> Table {
    Table {
        len: AtomicUsize::new(0),
        slots: [const {
            Slot { start: AtomicUsize::new(0), end: AtomicUsize::new(0), region: AtomicPtr::new(std::ptr::null_mut()) }
        }; TABLE_CAPACITY],
    }
}

static FAULTS: FaultTable = FaultTable {
    current: AtomicUsize::new(0),
    readers: [AtomicUsize::new(0), AtomicUsize::new(0)],
    tables: [empty_table(), empty_table()],
};

/// The authoritative list (start, end, region), sorted by start; the writers' lock.
static TABLE_WRITER: Mutex<Vec<(usize, usize, usize)>> = parking_lot::const_mutex(Vec::new());

fn wait_readers(buf: usize) {
    while FAULTS.readers[buf].load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
}

/// Publishes `list` into the inactive buffer, flips, and waits until no handler still reads the
/// old one.
fn publish(list: &[(usize, usize, usize)]) {
    let cur = FAULTS.current.load(Ordering::SeqCst);
    let next = cur ^ 1;
    wait_readers(next);
    let t = &FAULTS.tables[next];
    for (slot, &(s, e, r)) in t.slots.iter().zip(list) {
        slot.start.store(s, Ordering::Relaxed);
        slot.end.store(e, Ordering::Relaxed);
        slot.region.store(r as *mut Guarded, Ordering::Relaxed);
    }
    t.len.store(list.len(), Ordering::Relaxed);
    FAULTS.current.store(next, Ordering::SeqCst);
    wait_readers(cur);
}

fn table_insert(g: &Guarded) -> bool {
    let mut list = TABLE_WRITER.lock();
    if list.len() >= TABLE_CAPACITY {
        return false;
    }
    let start = g.map.view.app as usize;
    let at = list.partition_point(|e| e.0 < start);
    list.insert(at, (start, start + g.map.view.span, g as *const Guarded as usize));
    publish(&list);
    true
}

/// Removes `g`; on return no fault handler refers to it any more.
fn table_remove(g: &Guarded) {
    let mut list = TABLE_WRITER.lock();
    let me = g as *const Guarded as usize;
    list.retain(|e| e.2 != me);
    publish(&list);
}

/// Finds the region whose application view holds `addr` and runs `f` on it while the table
/// buffer is pinned. Async-signal-safe.
fn with_region<R>(addr: usize, f: impl FnOnce(&Guarded) -> R) -> Option<R> {
    let buf = loop {
        let b = FAULTS.current.load(Ordering::SeqCst);
        FAULTS.readers[b].fetch_add(1, Ordering::SeqCst);
        if FAULTS.current.load(Ordering::SeqCst) == b {
            break b;
        }
        FAULTS.readers[b].fetch_sub(1, Ordering::SeqCst);
    };
    let t = &FAULTS.tables[buf];
    let n = t.len.load(Ordering::Relaxed).min(TABLE_CAPACITY);
    // Last slot whose start is <= addr.
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if t.slots[mid].start.load(Ordering::Relaxed) <= addr {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let mut out = None;
    if lo > 0 {
        let s = &t.slots[lo - 1];
        if addr < s.end.load(Ordering::Relaxed) {
            let r = s.region.load(Ordering::Relaxed);
            // SAFETY: a region in the current buffer stays alive until this buffer's readers
            // (us included) have left (`table_remove` waits for them).
            out = Some(f(unsafe { &*r }));
        }
    }
    FAULTS.readers[buf].fetch_sub(1, Ordering::SeqCst);
    out
}

// ---------------------------------------------------------------------------------------------
// Signal handler

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Access {
    Read,
    Write,
    /// The context does not say (then a fault on a readable page must be a write).
    Unknown,
}

/// What kind of access faulted; `None` for faults that can't be ours (instruction fetch,
/// protection keys).
///
/// # Safety
/// `ctx` is the `ucontext_t` the kernel passed to an `SA_SIGINFO` handler.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
unsafe fn fault_access(ctx: *mut libc::c_void) -> Option<Access> {
    if ctx.is_null() {
        return Some(Access::Unknown);
    }
    // SAFETY: caller contract: `ctx` points to the kernel's ucontext_t.
    let err = unsafe { (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_ERR as usize] } as u64;
    const WRITE: u64 = 1 << 1;
    const FETCH: u64 = 1 << 4;
    const PKEY: u64 = 1 << 5;
    if err & (FETCH | PKEY) != 0 {
        None
    } else if err & WRITE != 0 {
        Some(Access::Write)
    } else {
        Some(Access::Read)
    }
}

/// aarch64: the ESR record in `uc_mcontext.__reserved` (a chain of `{magic, size}` records).
///
/// # Safety
/// `ctx` is the `ucontext_t` the kernel passed to an `SA_SIGINFO` handler.
#[cfg(all(target_arch = "aarch64", target_os = "linux"))]
unsafe fn fault_access(ctx: *mut libc::c_void) -> Option<Access> {
    // `__reserved` follows `pstate`, 16-byte aligned (private in `libc`).
    const RESERVED_OFFSET: usize = (std::mem::offset_of!(libc::mcontext_t, pstate) + 8 + 15) & !15;
    if ctx.is_null() {
        return Some(Access::Unknown);
    }
    // SAFETY: caller contract: the kernel's ucontext_t, whose mcontext ends with the
    // 4096-byte `__reserved` area.
    let reserved = unsafe {
        let mc = std::ptr::addr_of!((*(ctx as *const libc::ucontext_t)).uc_mcontext) as *const u8;
        std::slice::from_raw_parts(mc.add(RESERVED_OFFSET), ESR_RESERVED_SIZE)
    };
    esr_access(reserved)
}

/// Size of aarch64's `sigcontext.__reserved`.
#[cfg_attr(not(all(target_arch = "aarch64", target_os = "linux")), allow(dead_code))]
const ESR_RESERVED_SIZE: usize = 4096;

/// Reads the access kind from aarch64 signal-frame records (`_aarch64_ctx { magic, size }`
/// chain, terminated by magic 0): the ESR record's exception class says data or instruction
/// abort, its WnR bit (6) write or read. Plain byte parsing, so it is tested on every target.
#[cfg_attr(not(all(target_arch = "aarch64", target_os = "linux")), allow(dead_code))]
fn esr_access(reserved: &[u8]) -> Option<Access> {
    const ESR_MAGIC: u32 = 0x4553_5201;
    const EC_IABT_LOW: u64 = 0x20;
    const EC_IABT_CUR: u64 = 0x21;
    const EC_DABT_LOW: u64 = 0x24;
    const EC_DABT_CUR: u64 = 0x25;
    const WNR: u64 = 1 << 6;
    let word = |at: usize| u32::from_ne_bytes(reserved[at..at + 4].try_into().unwrap());
    let mut off = 0usize;
    while off + 8 <= reserved.len() {
        let (magic, size) = (word(off), word(off + 4) as usize);
        if magic == 0 || size < 8 || off + size > reserved.len() {
            break;
        }
        if magic == ESR_MAGIC && size >= 16 {
            let esr = u64::from_ne_bytes(reserved[off + 8..off + 16].try_into().unwrap());
            return match (esr >> 26) & 0x3f {
                EC_IABT_LOW | EC_IABT_CUR => None,
                EC_DABT_LOW | EC_DABT_CUR if esr & WNR != 0 => Some(Access::Write),
                EC_DABT_LOW | EC_DABT_CUR => Some(Access::Read),
                _ => Some(Access::Unknown),
            };
        }
        off += size;
    }
    Some(Access::Unknown)
}

/// Other targets: the page state decides.
///
/// # Safety
/// None; kept `unsafe` for symmetry with the other targets.
#[cfg(not(any(all(target_arch = "x86_64", target_os = "linux"), all(target_arch = "aarch64", target_os = "linux"))))]
unsafe fn fault_access(_ctx: *mut libc::c_void) -> Option<Access> {
    Some(Access::Unknown)
}

/// Writes `msg` to stderr and aborts; async-signal-safe.
fn fatal(msg: &[u8]) -> ! {
    // SAFETY: write and abort are async-signal-safe; `msg` is a valid buffer.
    unsafe {
        libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
        libc::abort()
    }
}

/// A `SIGSEGV` action ours chains to; written once, before the handler that reads it is installed.
struct PrevAction(UnsafeCell<MaybeUninit<libc::sigaction>>);
// SAFETY: each slot is written once under `INSTALL` before `PREV_AT` points at it, then read only.
unsafe impl Sync for PrevAction {}

/// Another library (or the application) may put its own action over ours, or restore the one it
/// saw before it (as gfxreconstruct's page guard does when its last mapping goes). Ours then goes
/// back on top, chaining to what is there now (as gfxreconstruct's own watcher does), in a fresh
/// slot unless an identical action is already kept: a handler running meanwhile still reads the
/// old one.
const PREV_SLOTS: usize = 8;
/// Times ours was put back in front of another action (the layer logs the first).
static REINSTALLS: AtomicUsize = AtomicUsize::new(0);
static PREVS: [PrevAction; PREV_SLOTS] = [const { PrevAction(UnsafeCell::new(MaybeUninit::uninit())) }; PREV_SLOTS];
/// 1 + the slot of the action ours chains to now; 0 before ours is installed.
static PREV_AT: AtomicUsize = AtomicUsize::new(0);
static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Puts the fault handler back when another library took it away (an unmap or free below may
/// have: gfxreconstruct's page guard restores the action it found when its last mapping goes).
/// Nothing before the shadow backend was first used.
pub fn restore_handler() {
    if PREV_AT.load(Ordering::Acquire) != 0 {
        let _ = install_handler();
    }
}

/// Installs the fault handler, or puts it back when another action replaced it.
fn install_handler() -> Result<(), GuardError> {
    let r = (|| {
        let _serialised = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
        let ours =
            on_sigsegv as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as libc::sighandler_t;
        // SAFETY: sigaction with valid pointers; a slot is written before PREV_AT points at it
        // and before our handler (which reads it) is installed over the action it holds.
        unsafe {
            let mut cur = MaybeUninit::<libc::sigaction>::zeroed().assume_init();
            if libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut cur) != 0 {
                return Err(format!("sigaction: {}", std::io::Error::last_os_error()));
            }
            let at = PREV_AT.load(Ordering::Acquire);
            if at != 0 && cur.sa_sigaction == ours {
                return Ok(());
            }
            // An action over ours may not pass our faults on: ours goes in front of it and
            // chains to it (a handler that chains back to ours ends in the default action, see
            // `on_sigsegv`).
            let same = |k: usize| {
                let p = (*PREVS[k].0.get()).assume_init_ref();
                p.sa_sigaction == cur.sa_sigaction && p.sa_flags == cur.sa_flags
            };
            match (0..at).find(|&k| same(k)) {
                Some(k) => PREV_AT.store(k + 1, Ordering::Release),
                None if at == PREV_SLOTS => {
                    return Err(format!("the SIGSEGV handler was replaced by {PREV_SLOTS} different actions"));
                }
                None => {
                    (*PREVS[at].0.get()).write(cur);
                    PREV_AT.store(at + 1, Ordering::Release);
                }
            }
            if at != 0 {
                REINSTALLS.fetch_add(1, Ordering::Relaxed);
            }
            let mut act = MaybeUninit::<libc::sigaction>::zeroed().assume_init();
            act.sa_sigaction =
                on_sigsegv as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as libc::sighandler_t;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
            // Nothing may interrupt the handler while it holds a page lock.
            libc::sigfillset(&mut act.sa_mask);
            if libc::sigaction(libc::SIGSEGV, &act, std::ptr::null_mut()) != 0 {
                return Err(format!("sigaction: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(())
    })();
    r.map_err(|reason| GuardError::Unavailable { backend: BackendKind::Shadow, reason })
}

/// Times ours was put back in front of another `SIGSEGV` action since the process started.
pub fn handler_reinstalls() -> usize {
    REINSTALLS.load(Ordering::Relaxed)
}

thread_local! {
    /// The fault this thread is passing on, and roughly where the stack was: an action that
    /// chains back to ours re-enters with the same fault, deeper on the stack.
    static CHAINING: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

extern "C" fn on_sigsegv(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes valid `info` and `ctx` to an SA_SIGINFO handler; the
    // thread-local is const-initialised without a destructor (a plain TLS access).
    unsafe {
        let errno = *libc::__errno_location();
        let handled = handle_fault(info, ctx);
        *libc::__errno_location() = errno;
        if !handled {
            let addr = if info.is_null() { 0 } else { (*info).si_addr() as usize };
            let here = &addr as *const usize as usize;
            let (busy_addr, busy_sp) = CHAINING.with(|c| c.get());
            if busy_sp != 0 && busy_addr == addr && here < busy_sp {
                // Passed back to us by the action we passed it to: nobody owns it.
                return default_action(sig, info);
            }
            CHAINING.with(|c| c.set((addr, here)));
            chain(sig, info, ctx);
            CHAINING.with(|c| c.set((0, 0)));
        }
    }
}

/// # Safety
/// Called from the handler with the kernel's arguments.
unsafe fn handle_fault(info: *mut libc::siginfo_t, ctx: *mut libc::c_void) -> bool {
    // SAFETY: caller contract.
    unsafe {
        // User-sent signals (si_code <= 0) are never ours.
        if info.is_null() || (*info).si_code <= 0 {
            return false;
        }
        let Some(access) = fault_access(ctx) else { return false };
        let addr = (*info).si_addr() as usize;
        with_region(addr, |g| g.on_fault(addr, access)).unwrap_or(false)
    }
}

/// Hands a fault that is not ours to the previously installed action.
///
/// # Safety
/// Called from the handler with the kernel's arguments.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the slot PREV_AT names was written before it was published; the calls are
    // async-signal-safe; the previous handler gets the arguments the kernel gave us.
    unsafe {
        let at = PREV_AT.load(Ordering::Acquire);
        if at == 0 {
            return default_action(sig, info);
        }
        let prev = (*PREVS[at - 1].0.get()).assume_init_ref();
        let h = prev.sa_sigaction;
        if h == libc::SIG_DFL || h == libc::SIG_IGN {
            let user_sent = !info.is_null() && (*info).si_code <= 0;
            if h == libc::SIG_IGN && user_sent {
                return;
            }
            // A fault cannot be ignored: the kernel applies the default action.
            return default_action(sig, info);
        }
        // Run it under the mask it would have had: the interrupted mask, its own sa_mask and,
        // unless SA_NODEFER, the signal itself.
        if !ctx.is_null() {
            let mut mask = (*(ctx as *const libc::ucontext_t)).uc_sigmask;
            for s in 1..=libc::SIGRTMAX() {
                if libc::sigismember(&prev.sa_mask, s) == 1 {
                    libc::sigaddset(&mut mask, s);
                }
            }
            if prev.sa_flags & libc::SA_NODEFER == 0 {
                libc::sigaddset(&mut mask, sig);
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
        }
        if prev.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = std::mem::transmute(h);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(h);
            f(sig);
        }
    }
}

/// Restores the default action; a fault then re-executes and kills, a user-sent signal is
/// re-raised (delivered when the handler returns and unblocks it).
///
/// # Safety
/// Called from the handler.
unsafe fn default_action(sig: libc::c_int, info: *mut libc::siginfo_t) {
    // SAFETY: sigaction and raise are async-signal-safe.
    unsafe {
        let mut act = MaybeUninit::<libc::sigaction>::zeroed().assume_init();
        act.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &act, std::ptr::null_mut());
        if info.is_null() || (*info).si_code <= 0 {
            libc::raise(sig);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backend

struct Region {
    key: Option<u64>,
    /// Serialises collect, invalidate and untrack; `None` once untracked.
    inner: Mutex<Option<Box<Guarded>>>,
}

/// A persistent shadow while its allocation is unmapped.
struct Kept {
    map: ShadowMap,
    head: usize,
    len: usize,
}

pub struct Shadow {
    regions: Mutex<HashMap<RegionId, Arc<Region>>>,
    kept: Mutex<HashMap<u64, Kept>>,
}

impl Shadow {
    /// Installs the process-wide fault handler (once).
    pub fn new() -> Result<Shadow, GuardError> {
        install_handler()?;
        Ok(Shadow { regions: Mutex::new(HashMap::new()), kept: Mutex::new(HashMap::new()) })
    }

    fn region(&self, id: RegionId) -> Result<Arc<Region>, GuardError> {
        self.regions.lock().get(&id).cloned().ok_or(GuardError::UnknownRegion(id))
    }

    /// Persistent shadows kept now (for tests and statistics).
    pub fn kept_count(&self) -> usize {
        self.kept.lock().len()
    }

    fn emit(g: &Guarded, runs: &[(usize, usize)], pages: usize, sink: &mut dyn DirtySink) -> CollectStats {
        let mut stats = CollectStats { pages, ..Default::default() };
        for &(off, n) in runs {
            // SAFETY: the run lies inside the real region, mapped while tracked; only this
            // collection (holding the region's lock) writes it on the CPU side.
            let bytes = unsafe { std::slice::from_raw_parts(g.real.add(off), n) };
            sink.run(off, bytes);
            stats.runs += 1;
            stats.bytes += n;
        }
        stats
    }
}

impl Backend for Shadow {
    fn kind(&self) -> BackendKind {
        BackendKind::Shadow
    }

    unsafe fn track(
        &self,
        id: RegionId,
        real: *mut u8,
        len: usize,
        opts: &TrackOptions,
    ) -> Result<*mut u8, GuardError> {
        let refuse = |reason: &str| GuardError::refused(BackendKind::Shadow, real as usize, len, reason);
        check_region(BackendKind::Shadow, real, len)?;
        install_handler()?;
        let page = page_size();
        let head = real as usize & (page - 1);
        let span = (head + len).div_ceil(page) * page;
        let reads = opts.shadow_reads;
        let base = if reads { libc::PROT_NONE } else { libc::PROT_READ };

        let reuse = opts.persistent_key.and_then(|k| self.kept.lock().remove(&k));
        let map = match reuse {
            Some(kept) if kept.head == head && kept.len == len => {
                for s in kept.map.states.iter() {
                    s.store(ARMED as u32, Ordering::Relaxed);
                }
                // The whole application view is ours and out of the fault table.
                kept.map.view.protect_app(base)?;
                kept.map
            }
            _ => ShadowMap::new(span, base)?,
        };
        let g = Box::new(Guarded { map, real, head, len, reads });
        if !reads {
            // With shadow reads every page is refreshed on first access instead.
            g.refresh(0, g.map.pages());
        }
        if !table_insert(&g) {
            return Err(refuse("shadow fault table full"));
        }
        let app = g.map.view.app;
        let region = Arc::new(Region { key: opts.persistent_key, inner: Mutex::new(Some(g)) });
        self.regions.lock().insert(id, region);
        // SAFETY: `head` < page <= span.
        Ok(unsafe { app.add(head) })
    }

    fn collect(
        &self,
        id: RegionId,
        range: Option<Range<usize>>,
        sink: &mut dyn DirtySink,
    ) -> Result<CollectStats, GuardError> {
        // The application (or a library) may have installed its own handler since the last
        // collection; ours goes back in front before writes are missed.
        restore_handler();
        let region = self.region(id)?;
        let inner = region.inner.lock();
        let g = inner.as_ref().ok_or(GuardError::UnknownRegion(id))?;
        let (runs, pages) = g.collect_runs(range)?;
        Ok(Self::emit(g, &runs, pages, sink))
    }

    fn invalidate(&self, id: RegionId, range: Range<usize>) -> Result<(), GuardError> {
        let region = self.region(id)?;
        let inner = region.inner.lock();
        inner.as_ref().ok_or(GuardError::UnknownRegion(id))?.invalidate(range)
    }

    fn untrack(&self, id: RegionId, sink: &mut dyn DirtySink) -> Result<CollectStats, GuardError> {
        let region = self.regions.lock().remove(&id).ok_or(GuardError::UnknownRegion(id))?;
        let g = region.inner.lock().take().ok_or(GuardError::UnknownRegion(id))?;
        // Out of the table first: from here no handler touches the page states, and any access
        // to a protected page faults like an access to unmapped memory.
        table_remove(&g);
        let result = g.collect_runs(None).map(|(runs, pages)| Self::emit(&g, &runs, pages, sink));
        if let Some(key) = region.key {
            let Guarded { map, head, len, .. } = *g;
            if map.view.protect_app(libc::PROT_NONE).is_ok() {
                self.kept.lock().insert(key, Kept { map, head, len });
            }
        }
        result
    }

    fn release_persistent(&self, key: u64) {
        self.kept.lock().remove(&key);
    }
}

impl Drop for Shadow {
    fn drop(&mut self) {
        // The real memory may be gone already: leave the table and unmap without copying.
        for (_, region) in self.regions.get_mut().drain() {
            if let Some(g) = region.inner.lock().take() {
                table_remove(&g);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(buf: &mut Vec<u8>, magic: u32, payload: &[u8]) {
        buf.extend_from_slice(&magic.to_ne_bytes());
        buf.extend_from_slice(&((8 + payload.len()) as u32).to_ne_bytes());
        buf.extend_from_slice(payload);
    }

    /// A `__reserved` area as the arm64 kernel lays it out: FPSIMD record (528 bytes), then
    /// the ESR record when there is one, then the terminator.
    fn frame(esr: Option<u64>) -> Vec<u8> {
        let mut b = Vec::new();
        record(&mut b, 0x4650_8001, &[0u8; 520]);
        if let Some(esr) = esr {
            record(&mut b, 0x4553_5201, &esr.to_ne_bytes());
        }
        record(&mut b, 0, &[]);
        b.resize(ESR_RESERVED_SIZE, 0);
        b
    }

    #[test]
    fn esr_record_tells_read_write_and_fetch() {
        let dabt_low = 0x24u64 << 26;
        let dabt_cur = 0x25u64 << 26;
        assert_eq!(esr_access(&frame(Some(dabt_low | 1 << 6 | 0xf))), Some(Access::Write));
        assert_eq!(esr_access(&frame(Some(dabt_low | 0xf))), Some(Access::Read));
        assert_eq!(esr_access(&frame(Some(dabt_cur | 1 << 6))), Some(Access::Write));
        assert_eq!(esr_access(&frame(Some(0x20u64 << 26))), None, "instruction abort");
        assert_eq!(esr_access(&frame(Some(0x15u64 << 26))), Some(Access::Unknown), "svc");
        assert_eq!(esr_access(&frame(None)), Some(Access::Unknown), "no ESR record");
        // A corrupt size never reads past the area.
        let mut bad = frame(Some(dabt_low));
        bad[4..8].copy_from_slice(&5000u32.to_ne_bytes());
        assert_eq!(esr_access(&bad), Some(Access::Unknown));
    }
}
