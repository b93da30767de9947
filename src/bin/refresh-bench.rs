//! shadow-wp refresh benchmark: what bringing GPU writes into the application's shadow costs at a
//! host synchronisation point, per page and per buffer, next to a memcpy and a memcmp of the same
//! bytes measured in the same run. Also measures the alternative that was not chosen: a lazy
//! refresh through userfaultfd minor faults on the memfd (zap the application view's pages at
//! the synchronisation point, refresh each page on its first access from a handler thread).
//!
//! `cargo run --release --bin refresh-bench [-- --sizes 4,64 --reps 9]`. Prints a markdown table.
//! Times are the process's CPU time (every thread, so the minor-fault handler counts), or wall
//! time with `--wall`.

use clap::Parser;
use linux_raw_sys::general as sys;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vkdirty::guard::shadow_wp::ShadowWp;
use vkdirty::guard::{page_size, Backend, RegionId, TrackOptions};

#[derive(Parser)]
#[command(about = "shadow-wp refresh cost against memcpy/memcmp floors, and the lazy minor-fault alternative")]
struct Args {
    /// Buffer sizes in MiB, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![4usize, 64])]
    sizes: Vec<usize>,
    /// Repetitions per case (the median is reported).
    #[arg(long, default_value_t = 7)]
    reps: usize,
    /// Wall-clock time instead of process CPU time.
    #[arg(long)]
    wall: bool,
}

fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct Clock(bool);

impl Clock {
    fn time(&self, f: impl FnOnce()) -> Duration {
        let (c, w) = (cpu_time(), Instant::now());
        f();
        if self.0 {
            w.elapsed()
        } else {
            cpu_time().saturating_sub(c)
        }
    }
}

/// Populated private anonymous memory standing in for the driver's mapping; unmapped on drop.
struct Mem {
    ptr: *mut u8,
    len: usize,
}

impl Mem {
    fn new(len: usize, flags: libc::c_int, fd: libc::c_int) -> Mem {
        // SAFETY: a fresh mapping at an address the kernel picks.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, 0) };
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        Mem { ptr: p.cast(), len }
    }

    fn anon(len: usize) -> Mem {
        let m = Mem::new(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1);
        m.fill(1);
        m
    }

    // `Mem` owns a raw mapping, not Rust data: the slice aliases nothing `&self` guards, and
    // each caller drops it before taking another.
    #[allow(clippy::mut_from_ref)]
    fn words(&self) -> &mut [u64] {
        // SAFETY: the mapping is page-aligned and `len` bytes long; only this thread uses it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast(), self.len / 8) }
    }

    fn fill(&self, seed: u64) {
        for (i, w) in self.words().iter_mut().enumerate() {
            *w = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed;
        }
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: unmapping what `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Row {
    case: &'static str,
    mib: usize,
    total: Duration,
}

/// The lazy alternative: a memfd mapped twice (application view registered for minor faults,
/// layer view not); a handler thread resolves each first access by copying the real page into
/// the layer view and `UFFDIO_CONTINUE`. Returns (zap time, access time) for all pages.
fn lazy_minor_faults(clock: &Clock, real: &Mem, reps: usize) -> Result<(Duration, Duration), String> {
    let len = real.len;
    let page = page_size();
    // SAFETY: plain syscalls with checked results.
    let memfd = unsafe { libc::memfd_create(c"refresh-bench".as_ptr(), libc::MFD_CLOEXEC) };
    if memfd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `memfd` was just created and is owned here.
    let memfd = unsafe { OwnedFd::from_raw_fd(memfd) };
    // SAFETY: our memfd.
    if unsafe { libc::ftruncate(memfd.as_raw_fd(), len as libc::off_t) } != 0 {
        return Err("ftruncate".into());
    }
    let app = Mem::new(len, libc::MAP_SHARED, memfd.as_raw_fd());
    let layer = Mem::new(len, libc::MAP_SHARED, memfd.as_raw_fd());
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | sys::UFFD_USER_MODE_ONLY as libc::c_int;
    // SAFETY: userfaultfd takes a flags word.
    let uffd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if uffd < 0 {
        return Err(format!("userfaultfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the syscall returned a descriptor we own.
    let uffd = unsafe { OwnedFd::from_raw_fd(uffd as i32) };
    let mut api =
        sys::uffdio_api { api: sys::UFFD_API as u64, features: sys::UFFD_FEATURE_MINOR_SHMEM as u64, ioctls: 0 };
    // SAFETY: UFFDIO_API reads and writes one uffdio_api.
    if unsafe { libc::ioctl(uffd.as_raw_fd(), linux_raw_sys::ioctl::UFFDIO_API as _, &mut api) } != 0 {
        return Err(format!("UFFDIO_API(MINOR_SHMEM): {}", std::io::Error::last_os_error()));
    }
    let mut reg = sys::uffdio_register {
        range: sys::uffdio_range { start: app.ptr as u64, len: len as u64 },
        mode: sys::UFFDIO_REGISTER_MODE_MINOR as u64,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_REGISTER reads and writes one uffdio_register over our mapping.
    if unsafe { libc::ioctl(uffd.as_raw_fd(), linux_raw_sys::ioctl::UFFDIO_REGISTER as _, &mut reg) } != 0 {
        return Err(format!("UFFDIO_REGISTER(MINOR): {}", std::io::Error::last_os_error()));
    }
    // Populate the page cache through the layer view (the shadow's contents).
    layer.fill(2);
    let stop = AtomicBool::new(false);
    let (app_base, layer_base, real_base) = (app.ptr as usize, layer.ptr as usize, real.ptr as usize);
    let mut zaps = Vec::new();
    let mut touches = Vec::new();
    std::thread::scope(|s| {
        let fd = uffd.as_raw_fd();
        let stop = &stop;
        s.spawn(move || {
            let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
                    continue;
                }
                // SAFETY: uffd_msg is plain data; read fills it.
                let mut msg: sys::uffd_msg = unsafe { std::mem::zeroed() };
                // SAFETY: reading one message into `msg`.
                let n = unsafe {
                    libc::read(fd, (&mut msg as *mut sys::uffd_msg).cast(), std::mem::size_of::<sys::uffd_msg>())
                };
                if n != std::mem::size_of::<sys::uffd_msg>() as isize || msg.event != sys::UFFD_EVENT_PAGEFAULT as u8 {
                    continue;
                }
                // SAFETY: a page-fault message carries the pagefault arm of the union.
                let addr = unsafe { msg.arg.pagefault.address } as usize & !(page - 1);
                let off = addr - app_base;
                // SAFETY: refresh the page from the real memory through the layer view (both
                // mappings are `len` bytes; `off` is a page inside them).
                unsafe {
                    std::ptr::copy_nonoverlapping((real_base + off) as *const u8, (layer_base + off) as *mut u8, page)
                };
                let mut cont = sys::uffdio_continue {
                    range: sys::uffdio_range { start: addr as u64, len: page as u64 },
                    mode: 0,
                    mapped: 0,
                };
                // SAFETY: UFFDIO_CONTINUE reads and writes one uffdio_continue for our range.
                unsafe { libc::ioctl(fd, linux_raw_sys::ioctl::UFFDIO_CONTINUE as _, &mut cont) };
            }
        });
        for _ in 0..reps {
            // The synchronisation point: drop every page of the application view.
            zaps.push(clock.time(|| {
                // SAFETY: page-aligned range of our mapping; shmem keeps the contents.
                unsafe { libc::madvise(app.ptr.cast(), len, libc::MADV_DONTNEED) };
            }));
            // The application then reads every page once.
            touches.push(clock.time(|| {
                let mut sum = 0u64;
                for p in (0..len).step_by(page) {
                    // SAFETY: inside the application view.
                    sum = sum.wrapping_add(unsafe { std::ptr::read_volatile(app.ptr.add(p)) } as u64);
                }
                std::hint::black_box(sum);
            }));
        }
        stop.store(true, Ordering::Relaxed);
    });
    Ok((median(zaps), median(touches)))
}

fn main() {
    let args = Args::parse();
    let clock = Clock(args.wall);
    let page = page_size();
    let reps = args.reps.max(1);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for &mib in &args.sizes {
        let len = mib << 20;
        let real = Mem::anon(len);
        let scratch = Mem::anon(len);
        let b = ShadowWp::new().expect("shadow-wp is available on this kernel");
        let id = RegionId(1);
        // SAFETY: `real` outlives the region, untracked below.
        let app = unsafe { b.track(id, real.ptr, len, &TrackOptions::default()) }.expect("track");
        let mut t = |case: &'static str, setup: &mut dyn FnMut(), run: &mut dyn FnMut()| {
            let mut v = Vec::new();
            for _ in 0..reps {
                setup();
                v.push(clock.time(&mut *run));
            }
            rows.push(Row { case, mib, total: median(v) });
        };
        t("memcpy (floor)", &mut || {}, &mut || {
            // SAFETY: two distinct mappings of `len` bytes.
            unsafe { std::ptr::copy_nonoverlapping(real.ptr, scratch.ptr, len) }
        });
        t("memcmp, equal (floor)", &mut || scratch.words().copy_from_slice(real.words()), &mut || {
            // SAFETY: two mappings of `len` bytes.
            std::hint::black_box(unsafe { libc::memcmp(real.ptr.cast(), scratch.ptr.cast(), len) });
        });
        let mut seed = 10;
        t(
            "refresh, GPU rewrote every byte",
            &mut || {
                seed += 1;
                real.fill(seed);
            },
            &mut || {
                b.refresh(id, 0..len).unwrap();
            },
        );
        t(
            "refresh, GPU wrote one word a page",
            &mut || {
                seed += 1;
                for w in real.words().iter_mut().step_by(page / 8) {
                    *w ^= seed;
                }
            },
            &mut || {
                b.refresh(id, 0..len).unwrap();
            },
        );
        t("refresh, nothing new", &mut || {}, &mut || {
            b.refresh(id, 0..len).unwrap();
        });
        t(
            "refresh, application wrote every page (scan only)",
            &mut || {
                b.collect(id, None, &mut |_: usize, _: &[u8]| {}).unwrap();
                for p in (0..len).step_by(page) {
                    // SAFETY: inside the application view.
                    unsafe { std::ptr::write_volatile(app.add(p), 1) };
                }
            },
            &mut || {
                b.refresh(id, 0..len).unwrap();
            },
        );
        b.untrack(id, &mut |_: usize, _: &[u8]| {}).unwrap();
        match lazy_minor_faults(&clock, &real, reps) {
            Ok((zap, touch)) => {
                rows.push(Row { case: "lazy: zap the view at the sync point", mib, total: zap });
                rows.push(Row {
                    case: "lazy: first read of each page (minor fault + copy + CONTINUE)",
                    mib,
                    total: touch,
                });
            }
            Err(e) => notes.push(format!("lazy minor-fault alternative not measured at {mib} MiB: {e}")),
        }
    }
    println!("| case | MiB | total ms | µs per page | × memcpy |");
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        let pages = ((r.mib << 20) / page) as f64;
        let floor = rows.iter().find(|f| f.mib == r.mib && f.case == "memcpy (floor)").map_or(r.total, |f| f.total);
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.2} |",
            r.case,
            r.mib,
            r.total.as_secs_f64() * 1e3,
            r.total.as_secs_f64() * 1e6 / pages,
            r.total.as_secs_f64() / floor.as_secs_f64().max(1e-12)
        );
    }
    for n in notes {
        println!("\n{n}");
    }
    println!("\n{} time, median of {reps}; page {page} B.", if args.wall { "wall" } else { "process CPU" });
}
