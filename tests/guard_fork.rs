//! Tracking across `fork()`: the child gets its own userfaultfd and `/proc/self/pagemap` (the
//! inherited ones belong to the parent), and neither process sees the other's writes, on a
//! driver's private mapping (`async-wp`) and on host-import's arena memory, where a page pinned
//! for a device stays the parent's.
//! One test in this file: the child of a multi-threaded test runner must stay simple.

#[path = "common/guard.rs"]
mod harness;

use harness::{Mapping, MemKind, Subject};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use vkdirty::guard::arena::ArenaBlock;
use vkdirty::guard::{page_size, BackendKind, GuardManager};

/// The physical frame behind `addr` (`None` without the privilege to see frames).
fn pfn(addr: usize) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap").ok()?;
    let mut e = [0u8; 8];
    f.read_exact_at(&mut e, (addr / page_size() * 8) as u64).ok()?;
    let e = u64::from_ne_bytes(e);
    let frame = e & ((1 << 55) - 1);
    (e >> 63 == 1 && frame != 0).then_some(frame)
}

/// Pins `len` bytes at `addr` the way a device driver does (`pin_user_pages` with
/// `FOLL_LONGTERM`: io_uring's registered buffers); the pin lasts as long as the descriptor.
fn pin(addr: *mut u8, len: usize) -> Result<OwnedFd, std::io::Error> {
    // struct io_uring_params is 120 bytes; all zero asks for defaults.
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup writes the 120-byte block it is given.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned to us alone.
    let ring = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let iov = libc::iovec { iov_base: addr.cast(), iov_len: len };
    // SAFETY: IORING_REGISTER_BUFFERS (0) with one valid iovec over mapped memory.
    if unsafe { libc::syscall(libc::SYS_io_uring_register, ring.as_raw_fd(), 0, &iov, 1) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ring)
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors owned here.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn signal(fd: &OwnedFd) {
    // SAFETY: one byte from a valid buffer.
    assert_eq!(unsafe { libc::write(fd.as_raw_fd(), [1u8].as_ptr().cast(), 1) }, 1);
}

fn wait_for(fd: &OwnedFd) {
    let mut b = [0u8];
    // SAFETY: one byte into a valid buffer.
    assert_eq!(unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 1) }, 1, "the other process is gone");
}

#[test]
fn forked_child_tracks_with_its_own_descriptors() {
    let p = page_size();
    let m = Mapping::new(MemKind::PrivateAnon, 8);
    m.fill(4);
    let mgr = GuardManager::new();
    let mut s = Subject::track(&mgr, BackendKind::AsyncWp, m.ptr, m.len, "fork");
    s.write(p, &[1]);

    // host-import: an arena block, populated as the layer populates it before an import.
    let blk = ArenaBlock::new(8 * p, p).unwrap();
    // SAFETY: the whole block is mapped read-write.
    unsafe { std::ptr::write_bytes(blk.ptr(), 0x11, blk.len()) };
    let mut h = Subject::track(&mgr, BackendKind::OwnedWp, blk.ptr(), blk.len(), "fork arena");
    h.write(3 * p, &[7]);
    let c = h.collect();
    h.expect(&c, &[3 * p]);
    // Page 1 is written (unprotected) at the fork, page 3 protected again.
    h.write(p, &[2]);
    let at_fork = {
        // SAFETY: the block is mapped.
        unsafe { std::slice::from_raw_parts(blk.ptr(), blk.len()) }.to_vec()
    };
    let page = |i: usize| blk.ptr() as usize + i * p;
    // Page 6 pinned as a device driver pins imported memory.
    let ring =
        pin(page(6) as *mut u8, p).map_err(|e| eprintln!("no io_uring to pin a page ({e}): pin not checked")).ok();
    let frames_before = (pfn(page(4)), pfn(page(6)));
    if frames_before.0.is_none() {
        eprintln!("physical frames not readable here: page identity not checked");
    }
    let (to_parent, from_child) = {
        let (r, w) = pipe();
        (w, r)
    };
    let (to_child, from_parent) = {
        let (r, w) = pipe();
        (w, r)
    };

    // SAFETY: the child only runs the checks below and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        drop((from_child, to_child));
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Writes before the child re-armed are unknown: everything is reported once.
            let c = s.collect();
            assert_eq!(s.pages_of(&c), s.all_pages(), "child: first collection reports all");
            s.write(5 * p + 3, &[2]);
            let c = s.collect();
            s.expect(&c, &[5 * p + 3]);
            s.assert_mirror();
            let c = s.collect();
            s.expect(&c, &[]);

            // The arena memory: the parent's bytes as at the fork, a pinned page copied for us.
            // SAFETY: the block is mapped in the child (inherited).
            let now = unsafe { std::slice::from_raw_parts(blk.ptr(), blk.len()) };
            assert!(now == &at_fork[..], "child: arena bytes differ from the parent's at the fork");
            if let (Some(f6), Some(_)) = (frames_before.1, &ring) {
                assert_ne!(pfn(page(6)), Some(f6), "child: the pinned page is a copy, not the parent's");
            }
            let c = h.collect();
            assert_eq!(h.pages_of(&c), h.all_pages(), "child: first arena collection reports all");
            h.write(5 * p + 1, &[9]);
            let c = h.collect();
            h.expect(&c, &[5 * p + 1]);
            h.assert_mirror();
            signal(&to_parent);
            // The parent writes pages 4, 5 and 6 meanwhile: none of it shows here.
            wait_for(&from_parent);
            h.assert_mirror();
            let c = h.collect();
            h.expect(&c, &[]);
        }));
        // SAFETY: leaves the child without running the parent's exit handlers.
        unsafe { libc::_exit(if ok.is_ok() { 0 } else { 1 }) };
    }
    drop((to_parent, from_parent));
    wait_for(&from_child);
    // The child is alive and maps the pages it did not write: the parent's write to page 4
    // copies it (copy-on-write), while the pinned page 6 was copied for the child at the fork
    // and is written in place, where the device reads it.
    h.write(4 * p + 1, &[0x44]);
    h.write(5 * p + 2, &[0x55]);
    h.write(6 * p + 1, &[0x66]);
    if let (Some(f4), Some(f6)) = frames_before {
        assert_ne!(pfn(page(4)), Some(f4), "an unpinned page shared with the child moves on a write");
        if ring.is_some() {
            assert_eq!(pfn(page(6)), Some(f6), "the pinned page stays the parent's");
        }
    }
    signal(&to_child);
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child failed: status {status:#x}");
    // The parent's state is untouched by the child: its own write from before the fork, plus
    // the one after.
    s.write(2 * p, &[3]);
    let c = s.collect();
    s.expect(&c, &[p, 2 * p]);
    s.assert_mirror();
    s.untrack();
    // The arena region: the page written before the fork (still unreported) and the three
    // written after it, nothing of the child's (its page 5 write is not in the parent's memory:
    // the mirror equals the memory).
    let c = h.collect();
    h.expect(&c, &[p, 4 * p, 5 * p, 6 * p]);
    h.assert_mirror();
    let c = h.collect();
    h.expect(&c, &[]);
    h.untrack();
    drop(ring);
    drop(blk);
}
