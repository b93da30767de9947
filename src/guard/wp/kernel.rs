//! The system calls under [`super::WpTracker`]: opening the userfaultfd and
//! `/proc/self/pagemap`, registering and write-protecting ranges, and `PAGEMAP_SCAN` walks.

use super::ScanStats;
use crate::guard::{page_size, uapi, GuardError};
use linux_raw_sys::general as sys;
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Entries in one `PAGEMAP_SCAN` output vector; the walk resumes at `walk_end` when it fills.
const SCAN_VEC_LEN: usize = 512;

/// One `PAGEMAP_SCAN(PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC)` walk over `range` (without
/// `PM_SCAN_WP_MATCHING` when `reset` is false: report only), resumed at `walk_end` until done.
/// Appends the written ranges to `out`, coalescing adjacent ones.
pub(super) fn pagemap_scan(
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
pub(super) fn pagemap_scan_with(
    pagemap: &OwnedFd,
    range: Range<usize>,
    reset: bool,
    huge: bool,
    out: &mut Vec<Range<usize>>,
    stats: &mut ScanStats,
) -> Result<(), GuardError> {
    // Left uninitialised: zeroing 12 KiB was a tenth of a one-region scan's cost.
    let mut vec = [std::mem::MaybeUninit::<sys::page_region>::uninit(); SCAN_VEC_LEN];
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
        let n = (n as usize).min(SCAN_VEC_LEN);
        // SAFETY: the kernel wrote the first `n` entries (the ioctl's return value).
        let found = unsafe { std::slice::from_raw_parts(vec.as_ptr().cast::<sys::page_region>(), n) };
        for r in found {
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

pub(super) fn getpid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

pub(super) fn open_pagemap() -> io::Result<OwnedFd> {
    let f = std::fs::File::open("/proc/self/pagemap")?;
    Ok(OwnedFd::from(f))
}

/// Opens the userfaultfd with the features this module needs; the reason on failure.
pub(super) fn open_uffd() -> Result<(OwnedFd, u64), String> {
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

pub(super) fn open_uffd_with(features: u64) -> Result<OwnedFd, String> {
    let fd = new_uffd()?;
    let got = uffd_api(&fd, features).map_err(|e| format!("UFFDIO_API({features:#x}): {e}"))?;
    if got & features != features {
        return Err(format!("UFFDIO_API granted {got:#x}, asked {features:#x}"));
    }
    Ok(fd)
}

pub(super) fn new_uffd() -> Result<OwnedFd, String> {
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
            // _IO(0xAA, 0x00)
            const USERFAULTFD_IOC_NEW: u32 = (sys::USERFAULTFD_IOC) << 8;
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

pub(super) fn uffd_api(fd: &OwnedFd, features: u64) -> io::Result<u64> {
    let mut api = sys::uffdio_api { api: sys::UFFD_API as u64, features, ioctls: 0 };
    // SAFETY: UFFDIO_API reads and writes one uffdio_api.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), linux_raw_sys::ioctl::UFFDIO_API as _, &mut api) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(api.features)
}

pub(super) fn uffd_register(fd: &OwnedFd, r: Range<usize>) -> io::Result<()> {
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

pub(super) fn uffd_unregister(fd: &OwnedFd, r: Range<usize>) -> io::Result<()> {
    let range = sys::uffdio_range { start: r.start as u64, len: r.len() as u64 };
    // SAFETY: UFFDIO_UNREGISTER reads one uffdio_range.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), linux_raw_sys::ioctl::UFFDIO_UNREGISTER as _, &range) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn uffd_writeprotect(fd: &OwnedFd, r: Range<usize>) -> io::Result<()> {
    uffd_writeprotect_mode(fd, r, uapi::UFFDIO_WRITEPROTECT_MODE_WP)
}

/// `UFFDIO_WRITEPROTECT` with mode 0: writes to `r` no longer fault, and `r` reads as written.
pub(super) fn uffd_unprotect(fd: &OwnedFd, r: Range<usize>) -> io::Result<()> {
    uffd_writeprotect_mode(fd, r, 0)
}

fn uffd_writeprotect_mode(fd: &OwnedFd, r: Range<usize>, mode: u64) -> io::Result<()> {
    loop {
        let mut wp = sys::uffdio_writeprotect {
            range: sys::uffdio_range { start: r.start as u64, len: r.len() as u64 },
            mode: mode as _,
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
