//! Kernel uapi items that `libc`, `nix` and `linux-raw-sys` lack (written by hand, here only).
//!
//! Everything else (`pm_scan_arg`, `page_region`, `uffdio_*`, `PAGE_IS_*`, `PM_SCAN_*`,
//! `UFFD_FEATURE_WP_*`, the `UFFDIO_*` ioctl numbers) comes from `linux-raw-sys`.

use linux_raw_sys::general::pm_scan_arg;

/// `_IOWR('f', 16, struct pm_scan_arg)` (linux/fs.h, Linux 6.7). The `_IOC` encoding of
/// x86, arm and riscv: dir << 30 | size << 16 | type << 8 | nr.
pub const PAGEMAP_SCAN: u32 = ioc_readwrite(b'f', 16, std::mem::size_of::<pm_scan_arg>());

/// `UFFDIO_WRITEPROTECT_MODE_WP` (linux/userfaultfd.h; a `__u64` shift macro bindgen skips).
pub const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;

const fn ioc_readwrite(ty: u8, nr: u8, size: usize) -> u32 {
    const IOC_READ_WRITE: u32 = 3;
    (IOC_READ_WRITE << 30) | ((size as u32) << 16) | ((ty as u32) << 8) | nr as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_encoding() {
        assert_eq!(std::mem::size_of::<pm_scan_arg>(), 96);
        // `_IOWR('f', 16, struct pm_scan_arg)` as the C macro computes it.
        assert_eq!(PAGEMAP_SCAN, 0xc060_6610);
        // Cross-check the encoder on an ioctl linux-raw-sys does define.
        assert_eq!(
            ioc_readwrite(0xaa, 0x3f, std::mem::size_of::<linux_raw_sys::general::uffdio_api>()),
            linux_raw_sys::ioctl::UFFDIO_API
        );
    }
}
