//! Arenas for the memory the layer owns and hands to the driver (`host-import`): allocations are
//! carved from a few large address-space reservations, lowest address first, so the allocations
//! an application keeps mapped lie next to each other and a collection scans each run of them
//! with one `PAGEMAP_SCAN` ([`super::wp::SpanSet`]) instead of one per allocation.
//!
//! Host memory arenas are private anonymous memory: async write-protect faults are cheaper there
//! than on shared memory, and an unprotect leaves a written page writable (no fault, no populate;
//! docs/design.md, "host-import's arenas: private memory"). Across `fork()` they are inherited as
//! private memory is: the child gets the bytes as they were at the fork; pages a driver pinned
//! for DMA are copied for the child at once and stay the parent's. Each allocation is its own
//! range of whole pages (never shared with another allocation, so a write is attributed to the
//! allocation whose pages it hit and nothing else), made readable and writable when handed out.
//! Freeing drops the range's pages (`MADV_DONTNEED`: they go back to the system at once and the
//! range reads as zero when handed out again) and makes it `PROT_NONE` again, so a stale pointer
//! faults instead of writing into a later allocation.
//!
//! The arenas of [`ArenaBlock::private_shadow`] (`shadow-wp`'s shadows of memory the device never
//! writes) are private anonymous memory like host memory, in arenas of their own.
//!
//! The arenas of [`ArenaBlock::dual`] (`shadow-wp`'s other shadows) are one memfd each, mapped twice:
//! the view handed to the application and the layer's own view of the same pages. Blocks taken
//! next to each other are contiguous pages of one file, so the kernel merges their application
//! views into one mapping: a `PAGEMAP_SCAN` over them pays the per-mapping cost once, not once
//! per shadow. Freeing punches the range out of the memfd (`MADV_REMOVE`: the hole shows in both
//! views). An arena with no allocation left is unmapped whole.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Address space reserved per arena (reserved only: `PROT_NONE`, `MAP_NORESERVE`, no memory
/// until handed out). Larger allocations get an arena of their own.
pub const ARENA_BYTES: usize = 256 << 20;

struct Arena {
    /// The memfd behind a dual arena and the address of its second (the layer's own) view.
    dual: Option<(OwnedFd, usize)>,
    base: usize,
    len: usize,
    /// Free ranges: start → end.
    free: BTreeMap<usize, usize>,
    used: usize,
}

/// Arenas of host memory ([`ArenaBlock::new`]).
static ARENAS: Mutex<Vec<Arena>> = Mutex::new(Vec::new());
/// Dual arenas ([`ArenaBlock::dual`]): kept apart, so each kind's blocks stay next to each other.
static DUALS: Mutex<Vec<Arena>> = Mutex::new(Vec::new());
/// Private shadow arenas ([`ArenaBlock::private_shadow`]), kept apart for the same reason.
static SHADOWS: Mutex<Vec<Arena>> = Mutex::new(Vec::new());

/// Memory from an arena: `len` bytes at an address aligned as asked, readable and writable,
/// zero when handed out, given back on drop.
pub struct ArenaBlock {
    addr: usize,
    len: usize,
    /// The same pages in the arena's second view (dual arenas), else 0.
    own: usize,
    pool: &'static Mutex<Vec<Arena>>,
}

impl ArenaBlock {
    /// `len` bytes (rounded up to whole pages) aligned to `align` (a power of two; at least the
    /// page size is used).
    pub fn new(len: usize, align: usize) -> io::Result<ArenaBlock> {
        Self::new_in(&ARENAS, len, align)
    }

    /// [`ArenaBlock::new`] from the given arenas (tests use their own, so that blocks other
    /// threads take meanwhile cannot change which addresses they get).
    fn new_in(pool: &'static Mutex<Vec<Arena>>, len: usize, align: usize) -> io::Result<ArenaBlock> {
        Self::take(pool, len, align, false)
    }

    /// `len` bytes of shadow memory with two views of the same pages: [`ptr`](Self::ptr), to
    /// hand to the application, and [`own`](Self::own), never handed out (the layer's copies go
    /// through it). Zero when handed out.
    pub fn dual(len: usize) -> io::Result<ArenaBlock> {
        Self::take(&DUALS, len, super::page_size(), true)
    }

    /// `len` bytes of private shadow memory (`shadow-wp` for memory the device never writes:
    /// the layer writes it only while the application has no pointer to it, so it needs no
    /// second view). Zero when handed out.
    pub fn private_shadow(len: usize) -> io::Result<ArenaBlock> {
        Self::take(&SHADOWS, len, super::page_size(), false)
    }

    fn take(pool: &'static Mutex<Vec<Arena>>, len: usize, align: usize, dual: bool) -> io::Result<ArenaBlock> {
        let page = super::page_size();
        let align = align.max(page);
        if len == 0 || !align.is_power_of_two() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let len = len.checked_next_multiple_of(page).ok_or(io::ErrorKind::InvalidInput)?;
        let mut arenas = pool.lock();
        let found = arenas.iter_mut().find_map(|a| a.take(len, align).map(|at| (at, a.own_of(at))));
        let (addr, own) = match found {
            Some(found) => found,
            None => {
                let size = if len.saturating_add(align) > ARENA_BYTES / 4 {
                    len.checked_add(align).ok_or(io::ErrorKind::InvalidInput)?
                } else {
                    ARENA_BYTES
                };
                let mut a = Arena::reserve(size, dual)?;
                let addr = a.take(len, align).ok_or(io::ErrorKind::OutOfMemory)?;
                let own = a.own_of(addr);
                arenas.push(a);
                (addr, own)
            }
        };
        let b = ArenaBlock { addr, len, own, pool };
        drop(arenas);
        // SAFETY: `b` is a range of our reservation just taken off the free list: nothing else
        // uses it (on failure, dropping `b` gives it back).
        if unsafe { libc::mprotect(b.addr as *mut libc::c_void, b.len, libc::PROT_READ | libc::PROT_WRITE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // Base pages, so dirty tracking stays 4 KiB exact. Advice only.
        // SAFETY: as above.
        unsafe { libc::madvise(b.addr as *mut libc::c_void, b.len, libc::MADV_NOHUGEPAGE) };
        Ok(b)
    }

    pub fn ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The layer's own view of the block's pages ([`ArenaBlock::dual`]), else null.
    pub fn own(&self) -> *mut u8 {
        self.own as *mut u8
    }
}

impl Drop for ArenaBlock {
    fn drop(&mut self) {
        release(&mut self.pool.lock(), self.addr, self.len);
    }
}

/// Bytes handed out and bytes reserved, over every arena (for tests and reports).
pub fn usage() -> (usize, usize) {
    let (a, p, s) = (ARENAS.lock(), DUALS.lock(), SHADOWS.lock());
    let all = || a.iter().chain(p.iter()).chain(s.iter());
    (all().map(|a| a.used).sum(), all().map(|a| a.len).sum())
}

fn release(arenas: &mut Vec<Arena>, addr: usize, len: usize) {
    let Some(i) = arenas.iter().position(|a| addr >= a.base && addr < a.base + a.len) else { return };
    let a = &mut arenas[i];
    a.give_back(addr, len);
    if a.used == 0 {
        let a = arenas.swap_remove(i);
        // SAFETY: the whole reservation (and its second view); nothing is handed out from it any
        // more. The memfd closes with `a`.
        unsafe {
            libc::munmap(a.base as *mut libc::c_void, a.len);
            if let Some((_, own)) = &a.dual {
                libc::munmap(*own as *mut libc::c_void, a.len);
            }
        }
    }
}

impl Arena {
    /// Host memory (private anonymous), or with `dual` a memfd mapped twice.
    fn reserve(len: usize, dual: bool) -> io::Result<Arena> {
        let len = len.checked_next_multiple_of(super::page_size()).ok_or(io::ErrorKind::InvalidInput)?;
        let fd = if dual { Some(memfd(len)?) } else { None };
        let raw = fd.as_ref().map_or(-1, |f| f.as_raw_fd());
        let kind = if dual { libc::MAP_SHARED } else { libc::MAP_PRIVATE | libc::MAP_ANONYMOUS };
        let map = |prot| {
            // SAFETY: a fresh mapping (shared of our memfd, or private anonymous); the kernel
            // picks the address.
            let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, kind | libc::MAP_NORESERVE, raw, 0) };
            if p == libc::MAP_FAILED {
                Err(io::Error::last_os_error())
            } else {
                Ok(p as usize)
            }
        };
        let base = if dual { map(libc::PROT_NONE)? } else { private_reservation(len, map)? };
        let dual = match fd {
            Some(fd) => match map(libc::PROT_READ | libc::PROT_WRITE) {
                Ok(own) => Some((fd, own)),
                Err(e) => {
                    // SAFETY: the view just mapped above, used by nobody.
                    unsafe { libc::munmap(base as *mut libc::c_void, len) };
                    return Err(e);
                }
            },
            None => None,
        };
        Ok(Arena { dual, base, len, free: BTreeMap::from([(base, base + len)]), used: 0 })
    }

    fn own_of(&self, addr: usize) -> usize {
        self.dual.as_ref().map_or(0, |(_, own)| own + (addr - self.base))
    }

    /// First fit, lowest address first.
    fn take(&mut self, len: usize, align: usize) -> Option<usize> {
        let (start, end, at) = self.free.iter().find_map(|(&s, &e)| {
            let at = s.checked_next_multiple_of(align)?;
            (at.checked_add(len)? <= e).then_some((s, e, at))
        })?;
        self.free.remove(&start);
        if start < at {
            self.free.insert(start, at);
        }
        if at + len < end {
            self.free.insert(at + len, end);
        }
        self.used += len;
        Some(at)
    }

    fn give_back(&mut self, addr: usize, len: usize) {
        // Private memory: dropping the pages returns them and the range reads as zero again. A
        // dual arena's pages are the memfd's: punched out of it, the hole shows in both views.
        let drop_pages = if self.dual.is_some() { libc::MADV_REMOVE } else { libc::MADV_DONTNEED };
        // SAFETY: a range of our arena that was handed out and is being given back; its owner is
        // gone (the driver's memory importing it was freed, or the shadow untracked).
        let ok = unsafe {
            libc::madvise(addr as *mut libc::c_void, len, drop_pages) == 0
                && libc::mprotect(addr as *mut libc::c_void, len, libc::PROT_NONE) == 0
        };
        if !ok {
            // Keep the range out of the free list: handing it out again could expose old bytes.
            return;
        }
        self.used -= len;
        let mut start = addr;
        let mut end = addr + len;
        if let Some((&s, &e)) = self.free.range(..start).next_back() {
            if e == start {
                self.free.remove(&s);
                start = s;
            }
        }
        if let Some(e) = self.free.remove(&end) {
            end = e;
        }
        self.free.insert(start, end);
    }
}

/// A private anonymous reservation, `PROT_NONE`, whose pieces can all merge again. The kernel
/// merges neighbouring private mappings only when they have the same `anon_vma` (or one has none
/// yet), and a piece split off a reservation without one gets its own at its first page fault
/// whenever its neighbour's flags differ then (the neighbour registered with userfaultfd, say):
/// blocks populated and registered one after another would then stay a mapping each, and a
/// collection would pay the per-mapping walk for each (docs/design.md, "host-import's arenas:
/// private memory"). So the reservation gets its `anon_vma` first, by one write while it is
/// still one mapping; every piece split off later shares it.
fn private_reservation(len: usize, map: impl Fn(libc::c_int) -> io::Result<usize>) -> io::Result<usize> {
    let base = map(libc::PROT_READ | libc::PROT_WRITE)?;
    // SAFETY: our fresh mapping, read-write and used by nobody; the page written is dropped
    // again and the whole range made inaccessible until handed out.
    let ok = unsafe {
        std::ptr::write_volatile(base as *mut u8, 0);
        libc::madvise(base as *mut libc::c_void, super::page_size(), libc::MADV_DONTNEED) == 0
            && libc::mprotect(base as *mut libc::c_void, len, libc::PROT_NONE) == 0
    };
    if !ok {
        let e = io::Error::last_os_error();
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(base as *mut libc::c_void, len) };
        return Err(e);
    }
    Ok(base)
}

/// A memfd of `len` bytes (no memory until written).
fn memfd(len: usize) -> io::Result<OwnedFd> {
    let name = c"vkdirty-shadow";
    // SAFETY: valid NUL-terminated name; flags are plain bits.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_NOEXEC_SEAL) };
    if fd < 0 {
        // Kernels before 6.3 refuse MFD_NOEXEC_SEAL.
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned here alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let size = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: our memfd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Arena bookkeeping, tested without the memory calls' effects mattering.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_adjacent_aligned_and_reused() {
        static OWN: Mutex<Vec<Arena>> = Mutex::new(Vec::new());
        let p = crate::guard::page_size();
        let a = ArenaBlock::new_in(&OWN, 16 * p, p).unwrap();
        let b = ArenaBlock::new_in(&OWN, 3 * p + 1, p).unwrap();
        let c = ArenaBlock::new_in(&OWN, p, 64 * 1024).unwrap();
        assert_eq!(b.addr, a.addr + 16 * p, "allocations follow each other");
        assert_eq!(b.len, 4 * p);
        assert_eq!(c.addr % (64 * 1024), 0);
        // SAFETY: inside the blocks.
        unsafe {
            *a.ptr().add(5) = 1;
            *b.ptr().add(b.len - 1) = 2;
        }
        let (addr_b, len_b) = (b.addr, b.len);
        drop(b);
        let d = ArenaBlock::new_in(&OWN, 2 * p, p).unwrap();
        assert_eq!(d.addr, addr_b, "a freed range is handed out again, lowest first");
        // SAFETY: inside the new block, which must read as zero.
        assert!(unsafe { std::slice::from_raw_parts(d.ptr(), d.len) }.iter().all(|&x| x == 0));
        assert!(len_b > d.len);
        drop((a, c, d));
    }

    #[test]
    fn a_large_block_gets_its_own_arena_and_goes_back_whole() {
        static OWN: Mutex<Vec<Arena>> = Mutex::new(Vec::new());
        let big = ArenaBlock::new_in(&OWN, ARENA_BYTES, 4096).unwrap();
        assert!(big.len() >= ARENA_BYTES);
        let addr = big.addr;
        drop(big);
        assert!(!OWN.lock().iter().any(|a| addr >= a.base && addr < a.base + a.len), "empty arena unmapped");
    }

    /// Mappings of the process that overlap `r`.
    fn mappings_over(r: std::ops::Range<usize>) -> usize {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .filter(|l| {
                let (a, b) = l.split_once(' ').unwrap().0.split_once('-').unwrap();
                let (a, b) = (usize::from_str_radix(a, 16).unwrap(), usize::from_str_radix(b, 16).unwrap());
                a < r.end && r.start < b
            })
            .count()
    }

    /// Adjacent blocks of host memory, written (so each has its pages), are one mapping of the
    /// process, so one `PAGEMAP_SCAN` walks them with the kernel's per-mapping cost paid once;
    /// still so after a block in the middle was freed and handed out again.
    #[test]
    fn adjacent_blocks_are_one_mapping() {
        static OWN: Mutex<Vec<Arena>> = Mutex::new(Vec::new());
        let p = crate::guard::page_size();
        // As the layer does: each block populated when handed out, then given a flag of its own
        // (there: the userfaultfd registration at the map; here `MADV_DONTDUMP`) before the next
        // one is taken, so a block's first page fault sees a neighbour whose flags differ.
        let mut blocks: Vec<ArenaBlock> = (0..64)
            .map(|_| {
                let b = ArenaBlock::new_in(&OWN, 4 * p, p).unwrap();
                // SAFETY: the block's own pages.
                unsafe {
                    assert_eq!(libc::madvise(b.ptr().cast(), b.len(), libc::MADV_POPULATE_WRITE), 0);
                    assert_eq!(libc::madvise(b.ptr().cast(), b.len(), libc::MADV_DONTDUMP), 0);
                }
                b
            })
            .collect();
        for b in &blocks {
            // SAFETY: inside the block.
            unsafe { *b.ptr().add(p + 3) = 1 };
        }
        let span = blocks[0].addr..blocks[63].addr + blocks[63].len;
        assert_eq!(span.len(), 64 * 4 * p, "blocks follow each other");
        assert_eq!(mappings_over(span.clone()), 1, "64 written blocks in one mapping");
        let mid = blocks.remove(30);
        let at = mid.addr;
        drop(mid);
        assert_eq!(mappings_over(span.clone()), 3, "a freed block is a PROT_NONE hole between two mappings");
        let again = ArenaBlock::new_in(&OWN, 4 * p, p).unwrap();
        assert_eq!(again.addr, at);
        // SAFETY: inside the block, which reads as zero.
        unsafe {
            assert_eq!(*again.ptr().add(p + 3), 0);
            *again.ptr() = 2;
            assert_eq!(libc::madvise(again.ptr().cast(), again.len, libc::MADV_DONTDUMP), 0);
        }
        assert_eq!(mappings_over(span), 1, "merged again once handed out");
        drop((blocks, again));
    }

    fn rss_anon_kib() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Freeing a block inside an arena that stays (another block lives there) gives its pages
    /// back at once, and the range reads as zero when handed out again.
    #[test]
    fn a_freed_block_returns_its_pages() {
        static OWN: Mutex<Vec<Arena>> = Mutex::new(Vec::new());
        let keeper = ArenaBlock::new_in(&OWN, 4096, 4096).unwrap();
        let big = ArenaBlock::new_in(&OWN, 16 << 20, 4096).unwrap();
        // SAFETY: the whole block is mapped read-write.
        unsafe { std::ptr::write_bytes(big.ptr(), 1, big.len()) };
        let (addr, len) = (big.addr, big.len);
        let before = rss_anon_kib();
        drop(big);
        let after = rss_anon_kib();
        assert!(before >= after + 12 * 1024, "RssAnon {before} kB -> {after} kB after freeing 16 MiB");
        let again = ArenaBlock::new_in(&OWN, len, 4096).unwrap();
        assert_eq!(again.addr, addr, "the same range handed out again");
        // SAFETY: inside the new block.
        assert!(unsafe { std::slice::from_raw_parts(again.ptr(), again.len) }.iter().all(|&x| x == 0));
        drop((keeper, again));
    }

    /// Host memory is private: a forked child reads the parent's bytes as they were at the
    /// fork, and its writes stay its own.
    #[test]
    fn a_forked_child_gets_a_copy_of_host_memory() {
        let b = ArenaBlock::new(4096, 4096).unwrap();
        // SAFETY: inside the block.
        unsafe { *b.ptr() = 0x5c };
        // SAFETY: fork in a test; the child only reads and writes the block and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: the block is mapped in the child too (inherited, not MADV_DONTFORK).
            unsafe {
                let seen = *b.ptr();
                *b.ptr() = 0x77;
                libc::_exit(if seen == 0x5c { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child read other bytes: {status:#x}");
        // SAFETY: inside the block.
        assert_eq!(unsafe { *b.ptr() }, 0x5c, "the child's write stayed the child's");
    }
}
