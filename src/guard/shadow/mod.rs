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
//! eagerly without shadow reads, lazily page by page with them, and not at all when the caller
//! says the real memory is unchanged since ([`TrackOptions::unchanged`]). A different geometry replaces the
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
//!
//! # Modules
//! `guarded.rs` a tracked region's pages (states, locks, refresh, copy back); `fault_table.rs`
//! the table the handler finds regions in; `handler.rs` the `SIGSEGV` handler; this file the
//! [`Backend`].

use super::*;
use parking_lot::Mutex;
use std::sync::Arc;

mod fault_table;
mod guarded;
mod handler;

pub use fault_table::TABLE_CAPACITY;
use fault_table::{table_insert, table_remove};
use guarded::{Guarded, ShadowMap, ARMED};
use handler::install_handler;
pub use handler::{handler_reinstalls, restore_handler};

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
        let mut filled = false;
        let map = match reuse {
            Some(kept) if kept.head == head && kept.len == len => {
                for s in kept.map.states.iter() {
                    s.store(ARMED as u32, Ordering::Relaxed);
                }
                // The whole application view is ours and out of the fault table.
                kept.map.view.protect_app(base)?;
                // Unchanged real memory: the kept shadow holds its bytes already.
                filled = opts.unchanged;
                kept.map
            }
            _ => ShadowMap::new(span, base)?,
        };
        let g = Box::new(Guarded { map, real, head, len, reads });
        if !reads && !filled {
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
