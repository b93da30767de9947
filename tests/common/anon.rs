//! Private anonymous memory for the guard tests and the benchmarks (`guard-bench`,
//! `vkdirty-stream-bench`): mapped read-write, unmapped on drop. Included with `#[path]`.

// Each includer uses its own part.
#![allow(dead_code)]

use std::ops::Range;

/// A private anonymous mapping of `len` bytes.
pub struct Anon {
    ptr: *mut u8,
    len: usize,
}

impl Anon {
    pub fn new(len: usize) -> std::io::Result<Anon> {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Anon { ptr: p.cast(), len })
    }

    /// [`Anon::new`], or a panic naming the size and the error.
    pub fn expect(len: usize) -> Anon {
        Anon::new(len).unwrap_or_else(|e| panic!("mmap {len}: {e}"))
    }

    /// Every byte set to `byte`, so that nothing measured later pays for first-touch faults (as
    /// a driver's memory, which is populated).
    pub fn populated(self, byte: u8) -> Anon {
        // SAFETY: the mapping is writable and `len` bytes long.
        unsafe { self.ptr.write_bytes(byte, self.len) };
        self
    }

    /// Without transparent huge pages (page-granular tracking, as the backends set it up).
    pub fn without_huge_pages(self) -> Anon {
        // SAFETY: the range is our mapping. A failure only leaves THP on: harmless.
        unsafe { libc::madvise(self.ptr.cast(), self.len, libc::MADV_NOHUGEPAGE) };
        self
    }

    /// Keeps the mapping for the life of the process; its address.
    pub fn leak(self) -> usize {
        let addr = self.ptr as usize;
        std::mem::forget(self);
        addr
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Sets every byte of `runs` (offsets into the mapping) to `value`.
    pub fn fill_runs(&self, runs: &[Range<usize>], value: u8) {
        for r in runs {
            assert!(r.end <= self.len);
            // SAFETY: inside the mapping (checked above).
            unsafe { self.ptr.add(r.start).write_bytes(value, r.len()) };
        }
    }

    /// Copies the bytes of `runs`, back to back, into `dst`.
    pub fn copy_runs(&self, runs: &[Range<usize>], dst: &mut [u8]) {
        let mut at = 0;
        for r in runs {
            assert!(r.end <= self.len && at + r.len() <= dst.len());
            // SAFETY: source inside the mapping, destination inside `dst` (checked above); the
            // two never overlap (dst is separate memory).
            unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(r.start), dst.as_mut_ptr().add(at), r.len()) };
            at += r.len();
        }
    }
}

impl Drop for Anon {
    fn drop(&mut self) {
        // SAFETY: unmaps what `new` mapped; nothing refers to it any more.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
