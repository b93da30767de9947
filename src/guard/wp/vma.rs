//! Which kind of memory a span is: decides, once per span when a prediction first needs it,
//! whether lifting its write protection also needs `MADV_POPULATE_WRITE` (docs/design.md,
//! "Predicted pages").
//!
//! After a scan re-protected a written page, `UFFDIO_WRITEPROTECT` with mode 0 leaves it writable
//! without a fault only on private anonymous memory; on shared memory (shared anonymous, memfd,
//! a driver's shared mapping) the kernel leaves the entry read-only and the first write still
//! faults, unless the range is populated for writing (`scripts/predict-probe.c`). The kind is read
//! from `/proc/self/maps` (sharing flag and inode of every mapping the span overlaps), which works
//! on any memory the backends track, whoever made it.

use std::ops::Range;

/// Whether every byte of `pages` lies in private anonymous mappings (flag `p`, inode 0). `false`
/// (populate: always correct, only slower) when the maps cannot be read or do not cover it.
pub(super) fn private_anonymous(pages: &Range<usize>) -> bool {
    match std::fs::read_to_string("/proc/self/maps") {
        Ok(maps) => private_anonymous_in(&maps, pages),
        Err(_) => false,
    }
}

/// [`private_anonymous`] over the text of a maps file.
fn private_anonymous_in(maps: &str, pages: &Range<usize>) -> bool {
    let mut covered = pages.start;
    for line in maps.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(span), Some(perms), Some(_off), Some(_dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Some((a, b)) = span.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else { continue };
        if end <= pages.start || start >= pages.end {
            continue;
        }
        if perms.as_bytes().get(3) != Some(&b'p') || inode != "0" || start > covered {
            return false;
        }
        covered = covered.max(end);
    }
    covered >= pages.end
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
1000-3000 rw-p 00000000 00:00 0 
3000-4000 rw-p 00000000 00:00 0                          [heap]
4000-5000 rw-s 00000000 00:01 1234                       /memfd:shadow (deleted)
6000-7000 rw-p 00001000 08:01 99                         /usr/lib/x.so
";

    #[test]
    fn kinds_of_memory() {
        assert!(private_anonymous_in(MAPS, &(0x1000..0x4000)));
        assert!(!private_anonymous_in(MAPS, &(0x3000..0x5000)), "a shared part");
        assert!(!private_anonymous_in(MAPS, &(0x4000..0x5000)));
        assert!(!private_anonymous_in(MAPS, &(0x6000..0x7000)), "file-backed");
        assert!(!private_anonymous_in(MAPS, &(0x2000..0x6000)), "a hole");
        assert!(!private_anonymous_in(MAPS, &(0x8000..0x9000)), "not mapped");
        assert!(!private_anonymous_in("garbage\n1-", &(0x1000..0x2000)));
    }

    #[test]
    fn this_process() {
        let page = crate::guard::page_size();
        // SAFETY: fresh anonymous mappings, unmapped below.
        unsafe {
            let p = libc::mmap(std::ptr::null_mut(), page, 3, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
            let s = libc::mmap(std::ptr::null_mut(), page, 3, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0);
            assert!(p != libc::MAP_FAILED && s != libc::MAP_FAILED);
            assert!(private_anonymous(&(p as usize..p as usize + page)));
            assert!(!private_anonymous(&(s as usize..s as usize + page)));
            libc::munmap(p, page);
            libc::munmap(s, page);
        }
    }
}
