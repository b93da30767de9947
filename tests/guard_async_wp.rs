//! async-wp specifics: kernel-made writes, transparent huge pages, refused regions and the
//! fallback, the host-import kind, collect racing untrack.

#[path = "common/guard.rs"]
mod harness;

use harness::{Mapping, MemKind, Subject, MEM_KINDS};
use std::os::fd::AsRawFd;
use vkdirty::guard::{page_size, wp, BackendKind, GuardError, GuardManager, TrackOptions};

/// A `read()` syscall writing into tracked memory is reported like a CPU write.
#[test]
fn kernel_made_writes_are_reported() {
    let p = page_size();
    for mem in MEM_KINDS {
        let m = Mapping::new(mem, 8);
        m.fill(2);
        let mgr = GuardManager::new();
        let mut s = Subject::track(&mgr, BackendKind::AsyncWp, m.ptr, m.len, &format!("read() on {mem:?}"));
        let data: Vec<u8> = (0..2 * p).map(|i| (i % 251) as u8).collect();
        let file = std::env::temp_dir().join(format!("vkdirty-read-{}-{mem:?}", std::process::id()));
        std::fs::write(&file, &data).unwrap();
        let f = std::fs::File::open(&file).unwrap();
        let off = p + 100;
        // SAFETY: reads 2 pages into the tracked region, inside the mapping.
        let n = unsafe { libc::read(f.as_raw_fd(), s.t.app_ptr.add(off).cast(), data.len()) };
        std::fs::remove_file(&file).unwrap();
        assert_eq!(n as usize, data.len(), "read(): {}", std::io::Error::last_os_error());
        let c = s.collect();
        s.expect(&c, &[off, off + p, off + 2 * p - 1]);
        assert_eq!(&s.mirror[off..off + data.len()], &data[..]);
        s.assert_mirror();
        s.untrack();
    }
}

fn anon_huge_kb(addr: usize) -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((a, b)) = range.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                    inside = (a..b).contains(&addr);
                    continue;
                }
            }
        }
        if inside {
            if let Some(v) = line.strip_prefix("AnonHugePages:") {
                return v.trim().trim_end_matches("kB").trim().parse().unwrap();
            }
        }
    }
    0
}

/// Memory backed by transparent huge pages before tracking is still reported at 4 KiB: the
/// kernel splits a protected huge page on its first write. A huge page formed while tracked
/// (the application re-enables THP and collapses; possible only once every 4 KiB of it was
/// written, so nothing extra is reported) comes back whole and is counted in `thp_pages` (by the
/// per-region collection; the batch one takes the kernel's fast path, which reports it whole too
/// but cannot tell it from 512 pages).
#[test]
fn transparent_huge_pages() {
    thp_case(false);
}

#[test]
fn transparent_huge_pages_batch() {
    thp_case(true);
}

fn thp_case(batch: bool) {
    let p = page_size();
    let huge = 2 << 20;
    let m = Mapping::new(MemKind::PrivateAnon, 3 * huge / p);
    let base = (m.ptr as usize).next_multiple_of(huge) as *mut u8;
    // SAFETY: advice on a range inside the mapping.
    assert_eq!(unsafe { libc::madvise(base.cast(), huge, libc::MADV_HUGEPAGE) }, 0);
    // SAFETY: inside the mapping.
    unsafe { std::ptr::write_bytes(base, 1, huge) };
    let thp_kb = anon_huge_kb(base as usize);
    eprintln!("AnonHugePages before tracking: {thp_kb} kB");
    if thp_kb == 0 {
        eprintln!("no THP formed here (THP disabled or no free huge page): nothing to check");
        return;
    }
    let mgr = GuardManager::new();
    let mut s = Subject::track(&mgr, BackendKind::AsyncWp, base, huge, &format!("THP, batch {batch}"));
    let collect = |s: &mut Subject| if batch { s.collect_all_of_kind() } else { s.collect() };
    let offs = [0, 5 * p + 1, 300 * p, huge - 1];
    for round in 0..2 {
        for &o in &offs {
            s.write(o, &[0x70 + round]);
        }
        let c = collect(&mut s);
        eprintln!("round {round}: {} pages reported, thp_pages {}", c.stats.pages, c.stats.thp_pages);
        s.expect(&c, &offs);
        assert_eq!(c.stats.thp_pages, 0);
        s.assert_mirror();
    }
    assert_eq!(anon_huge_kb(base as usize), 0, "the written huge page was split");

    // Every page written, then collapsed into a huge page while tracked.
    // SAFETY: inside the mapping; advice on it.
    unsafe { std::ptr::write_bytes(base, 2, huge) };
    const MADV_COLLAPSE: i32 = 25;
    // SAFETY: advice on a range inside the mapping.
    let collapsed = unsafe {
        libc::madvise(base.cast(), huge, libc::MADV_HUGEPAGE) == 0
            && libc::madvise(base.cast(), huge, MADV_COLLAPSE) == 0
    };
    if !collapsed || anon_huge_kb(base as usize) == 0 {
        eprintln!(
            "MADV_COLLAPSE did not form a huge page ({}): THP accounting not exercised",
            std::io::Error::last_os_error()
        );
    } else {
        let c = collect(&mut s);
        let thp = if batch { 0 } else { huge / p };
        assert_eq!((c.stats.pages, c.stats.thp_pages), (huge / p, thp), "returned whole (counted as THP per region)");
        s.assert_mirror();
        s.write(7 * p, &[3]);
        let c = collect(&mut s);
        s.expect(&c, &[7 * p]);
        assert_eq!(c.stats.thp_pages, 0, "split again by the next write");
        s.assert_mirror();
    }
    s.untrack();
}

/// A kernel driver's own mapping (here an io_uring ring: shared, writable, special like a GPU
/// driver's) cannot be write-protected: the region is refused with the reason, and the manager
/// falls back to the next backend.
#[test]
fn refused_region_falls_back() {
    let p = page_size();
    // struct io_uring_params is 120 bytes; all zero asks for defaults.
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup writes the 120-byte params block it is given.
    let ring = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) };
    if ring < 0 {
        eprintln!("io_uring unavailable ({}): nothing to refuse", std::io::Error::last_os_error());
        return;
    }
    // SAFETY: maps the ring's first page (IORING_OFF_SQ_RING = 0) of the descriptor just made.
    let ptr = unsafe {
        libc::mmap(std::ptr::null_mut(), p, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, ring as i32, 0)
    };
    assert_ne!(ptr, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
    let mgr = GuardManager::new();
    // SAFETY: the mapping stays until the end of the test, after untrack.
    let err = unsafe { mgr.track(ptr.cast(), p, BackendKind::AsyncWp, &TrackOptions::default()) }.unwrap_err();
    match &err {
        GuardError::RegionRefused { backend, addr, len, reason } => {
            assert_eq!(*backend, BackendKind::AsyncWp);
            assert_eq!((*addr, *len), (ptr as usize, p));
            assert!(reason.contains("UFFDIO_REGISTER"), "{reason}");
        }
        e => panic!("expected RegionRefused, got {e}"),
    }
    eprintln!("refused as expected: {err}");
    // SAFETY: as above.
    let (t, refusals) =
        unsafe { mgr.track_first(ptr.cast(), p, &[BackendKind::AsyncWp, BackendKind::Full], &TrackOptions::default()) }
            .unwrap();
    assert_eq!(t.backend, BackendKind::Full);
    assert_eq!(refusals.len(), 1);
    assert!(matches!(refusals[0], GuardError::RegionRefused { .. }));
    let mut bytes = 0;
    mgr.untrack(t.id, &mut |_: usize, b: &[u8]| bytes += b.len()).unwrap();
    assert_eq!(bytes, p);
    // A refusal leaves the backend usable for other regions.
    let m = Mapping::new(MemKind::PrivateAnon, 2);
    let mut s = Subject::track(&mgr, BackendKind::AsyncWp, m.ptr, m.len, "after refusal");
    s.write(p, &[1]);
    let c = s.collect();
    s.expect(&c, &[p]);
    s.untrack();
    // SAFETY: unmaps the mapping made above and closes the ring.
    unsafe {
        libc::munmap(ptr, p);
        libc::close(ring as i32);
    }
}

#[test]
fn host_import_is_async_wp_under_its_own_kind() {
    let p = page_size();
    let m = Mapping::new(MemKind::PrivateAnon, 4);
    let mgr = GuardManager::new();
    assert_eq!(mgr.backend(BackendKind::OwnedWp).unwrap().kind(), BackendKind::OwnedWp);
    assert_eq!(mgr.backend(BackendKind::AsyncWp).unwrap().kind(), BackendKind::AsyncWp);
    let mut s = Subject::track(&mgr, BackendKind::OwnedWp, m.ptr, m.len, "host-import");
    s.write(3 * p, &[1]);
    let c = s.collect();
    s.expect(&c, &[3 * p]);
    s.untrack();
}

#[test]
fn tracker_reports_its_features() {
    let t = wp::tracker(BackendKind::AsyncWp).unwrap();
    let need =
        (linux_raw_sys::general::UFFD_FEATURE_WP_ASYNC | linux_raw_sys::general::UFFD_FEATURE_WP_UNPOPULATED) as u64;
    assert_eq!(t.features() & need, need);
}

/// Collections from one thread racing untrack from another: each collection either works or
/// finds the region gone; none touches released state, and writes until untrack are reported.
#[test]
fn collect_racing_untrack() {
    let p = page_size();
    for _ in 0..50 {
        let m = Mapping::new(MemKind::PrivateAnon, 16);
        let mgr = GuardManager::new();
        // SAFETY: the mapping outlives the tracking.
        let t = unsafe { mgr.track(m.ptr, m.len, BackendKind::AsyncWp, &TrackOptions::default()) }.unwrap();
        let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
        // SAFETY: inside the mapping.
        unsafe {
            *m.ptr.add(p) = 1;
            *m.ptr.add(7 * p) = 1;
        }
        std::thread::scope(|sc| {
            sc.spawn(|| loop {
                let mut sink = |off: usize, _: &[u8]| {
                    seen.lock().unwrap().insert(off / p);
                };
                match mgr.collect(t.id, &mut sink) {
                    Ok(_) => continue,
                    Err(GuardError::UnknownRegion(_)) => break,
                    Err(e) => panic!("{e}"),
                }
            });
            std::thread::yield_now();
            let mut sink = |off: usize, _: &[u8]| {
                seen.lock().unwrap().insert(off / p);
            };
            mgr.untrack(t.id, &mut sink).unwrap();
        });
        assert_eq!(*seen.lock().unwrap(), [1, 7].into_iter().collect());
    }
}

/// A written page whose entry the kernel dropped before the collection (reclaim of a shmem
/// page does it; here `MADV_DONTNEED` on shared memory, which keeps the bytes) has no entry
/// and no write-protect marker left; an unwritten one keeps its marker. Both the per-region and
/// the batch collection report exactly the written pages, on both kinds of shared memory.
#[test]
fn a_written_page_the_kernel_dropped_is_still_collected() {
    let p = page_size();
    for (mem, batch) in [MemKind::Memfd, MemKind::DevZero].into_iter().flat_map(|m| [(m, false), (m, true)]) {
        let m = Mapping::new(mem, 4);
        m.fill(2);
        let mgr = GuardManager::new();
        let mut s = Subject::track(&mgr, BackendKind::AsyncWp, m.ptr, m.len, &format!("{mem:?}, batch {batch}"));
        s.write(p + 1, &[0xEE]);
        s.write(2 * p + 1, &[0xEF]);
        // SAFETY: page-aligned pages of the tracked mapping; shared memfd pages keep their bytes.
        assert_eq!(unsafe { libc::madvise(m.ptr.add(p).cast(), 3 * p, libc::MADV_DONTNEED) }, 0);
        assert_eq!(s.read(p + 1), 0xEE, "shmem keeps the bytes");
        let c = if batch { s.collect_all_of_kind() } else { s.collect() };
        s.expect(&c, &[p + 1, 2 * p + 1]);
        s.assert_mirror();
        s.untrack();
    }
}
