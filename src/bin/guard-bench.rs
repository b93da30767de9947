//! Page-guard engine benchmark: per backend, the cost of the application's writes and of one
//! collection, next to two floors measured in the same run on the same pages:
//! - copy floor: a memcpy of the dirty bytes;
//! - trap floor: the copy floor + one bare async-WP fault per dirty page + one `PAGEMAP_SCAN`
//!   of the span (the least any page-granular write tracker pays).
//!
//! `cargo run --release --bin guard-bench [-- --quick]`. Prints a markdown table.

use clap::Parser;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use vkdirty::guard::{page_size, wp, BackendKind, GuardManager, TrackOptions};

#[derive(Parser)]
#[command(about = "Page-guard engine benchmark (write + collection cost against copy and trap floors)")]
struct Args {
    /// Short run: 1 and 64 MiB, fewer repetitions.
    #[arg(long)]
    quick: bool,
    /// Repetitions per configuration (the median is reported).
    #[arg(long)]
    reps: Option<usize>,
    /// Only these backends (names as in configuration), comma separated.
    #[arg(long, value_delimiter = ',')]
    backends: Vec<String>,
    /// Wall-clock times instead of the measuring threads' CPU times.
    #[arg(long)]
    wall: bool,
    /// Region sizes in MiB, comma separated.
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Instead of the table above: how `collect_all` grows with this many regions (comma
    /// separated counts, e.g. 1,100,1000,4000), against a bare scan of the same memory.
    #[arg(long, value_delimiter = ',')]
    regions: Vec<usize>,
    /// With --regions: bytes per region, KiB.
    #[arg(long, default_value_t = 64)]
    region_kib: usize,
    /// With --regions: pages written per frame (one in each of as many regions).
    #[arg(long, default_value_t = 4)]
    writes: usize,
    /// With --regions: frames per count.
    #[arg(long, default_value_t = 300)]
    frames: usize,
    /// With --regions: leave the memory untouched before tracking (default: written, as an
    /// application fills its buffers).
    #[arg(long)]
    untouched: bool,
}

/// Measures the calling thread's CPU time (user + system, so faults and ioctls count), or wall
/// time with `--wall`. CPU time keeps other processes on a shared machine out of the numbers.
struct Stopwatch {
    cpu: Duration,
    wall: Instant,
}

static WALL_CLOCK: AtomicBool = AtomicBool::new(false);

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Stopwatch {
    fn start() -> Stopwatch {
        Stopwatch { cpu: thread_cpu_time(), wall: Instant::now() }
    }

    fn elapsed(&self) -> Duration {
        if WALL_CLOCK.load(Ordering::Relaxed) {
            self.wall.elapsed()
        } else {
            thread_cpu_time().saturating_sub(self.cpu)
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Pattern {
    Sequential,
    Random,
}

#[path = "../../tests/common/anon.rs"]
mod anon;
use anon::Anon;

/// Anonymous memory, populated (as a driver's mapped memory is).
fn populated(len: usize) -> Anon {
    Anon::expect(len).populated(0x5a)
}

#[derive(Clone, Copy)]
struct Ptr(*mut u8);
// SAFETY: writer threads store to disjoint pages of memory that outlives them.
unsafe impl Send for Ptr {}
// SAFETY: as above.
unsafe impl Sync for Ptr {}

/// Writers: the calling thread plus `threads - 1` helpers that spin (then yield) waiting for
/// work, so that a write phase starts without a wake-up latency.
struct Writers {
    go: AtomicU64,
    done: AtomicUsize,
    /// Longest helper loop of the current phase, in nanoseconds.
    helper_ns: AtomicU64,
    quit: AtomicBool,
    job: parking_lot::Mutex<Job>,
}

#[derive(Clone)]
struct Job {
    base: Ptr,
    pages: std::sync::Arc<Vec<usize>>,
    threads: usize,
    stamp: u64,
    declare: Option<(usize, u64)>, // (manager address, region id) for assisted
}

/// Writes this thread's share of the pages; returns how long its own loop took (so a helper's
/// wake-up latency is not counted as write cost).
fn write_share(job: &Job, me: usize) -> Duration {
    let t0 = Stopwatch::start();
    let p = page_size();
    let mgr = job.declare.map(|(m, _)| m as *const GuardManager);
    for (i, &page) in job.pages.iter().enumerate() {
        if i % job.threads != me {
            continue;
        }
        // SAFETY: `page` is a page of the region; each page is written by one thread.
        unsafe { std::ptr::write_volatile(job.base.0.add(page * p + 8).cast::<u64>(), job.stamp) };
        if let (Some(mgr), Some((_, id))) = (mgr, job.declare) {
            // SAFETY: the manager outlives every write phase (see `Writers::run`).
            let mgr = unsafe { &*mgr };
            mgr.flushed(vkdirty::guard::RegionId(id), page * p..(page + 1) * p).unwrap();
        }
    }
    t0.elapsed()
}

impl Writers {
    fn helper(&self, me: usize) {
        let mut seen = 0;
        loop {
            let spin = Instant::now();
            while self.go.load(Ordering::Acquire) == seen {
                if self.quit.load(Ordering::Relaxed) {
                    return;
                }
                if spin.elapsed() < Duration::from_millis(2) {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            seen = self.go.load(Ordering::Acquire);
            let job = self.job.lock().clone();
            if me < job.threads {
                let d = write_share(&job, me);
                self.helper_ns.fetch_max(d.as_nanos() as u64, Ordering::AcqRel);
                self.done.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Runs one write phase on every thread; returns the longest thread's own write time.
    fn run(&self, job: Job, helpers: usize) -> Duration {
        *self.job.lock() = job.clone();
        self.done.store(0, Ordering::Release);
        self.helper_ns.store(0, Ordering::Release);
        self.go.fetch_add(1, Ordering::AcqRel);
        let mine = write_share(&job, 0);
        while self.done.load(Ordering::Acquire) < helpers {
            std::hint::spin_loop();
        }
        mine.max(Duration::from_nanos(self.helper_ns.load(Ordering::Acquire)))
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn dirty_pages(pages: usize, frac: f64, pattern: Pattern, rng: &mut Rng) -> Vec<usize> {
    let n = ((pages as f64 * frac).round() as usize).clamp(1, pages);
    match pattern {
        Pattern::Sequential => (0..n).collect(),
        Pattern::Random => {
            let mut all: Vec<usize> = (0..pages).collect();
            for i in 0..n {
                let j = i + (rng.next() as usize) % (pages - i);
                all.swap(i, j);
            }
            all.truncate(n);
            all
        }
    }
}

/// Coalesced runs (byte ranges) of a page list.
fn runs_of(pages: &[usize]) -> Vec<std::ops::Range<usize>> {
    let p = page_size();
    let mut sorted = pages.to_vec();
    sorted.sort_unstable();
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for pg in sorted {
        match runs.last_mut() {
            Some(r) if r.end == pg * p => r.end += p,
            _ => runs.push(pg * p..(pg + 1) * p),
        }
    }
    runs
}

#[derive(Default)]
struct Row {
    write: Vec<f64>,
    collect: Vec<f64>,
    reported: usize,
}

fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let cores = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

#[path = "guard-bench/many.rs"]
mod many;

fn main() {
    let args = Args::parse();
    WALL_CLOCK.store(args.wall, Ordering::Relaxed);
    if !args.regions.is_empty() {
        let names = if args.backends.is_empty() {
            vec!["host-import".to_string(), "shadow-wp".into(), "async-wp".into()]
        } else {
            args.backends.clone()
        };
        let backends =
            names.iter().map(|b| BackendKind::parse(b).unwrap_or_else(|| panic!("unknown backend {b}"))).collect();
        many::run(&many::ManyArgs {
            counts: args.regions.clone(),
            region_kib: args.region_kib,
            writes: args.writes,
            frames: args.frames,
            backends,
            populate: !args.untouched,
        });
        return;
    }
    let reps = args.reps.unwrap_or(if args.quick { 3 } else { 5 });
    let sizes_mib: Vec<usize> = if !args.sizes.is_empty() {
        args.sizes.clone()
    } else if args.quick {
        vec![1, 64]
    } else {
        vec![1, 64, 512]
    };
    let fracs = [0.001, 0.01, 0.10, 1.0];
    let p = page_size();
    let mgr = GuardManager::new();
    let backends: Vec<BackendKind> = BackendKind::ALL
        .into_iter()
        // host-import is async-wp under another name.
        .filter(|&k| k != BackendKind::OwnedWp)
        .filter(|k| args.backends.is_empty() || args.backends.iter().any(|b| b == k.name()))
        .filter(|&k| match mgr.backend(k) {
            Ok(_) => true,
            Err(e) => {
                eprintln!("skipping {k}: {e}");
                false
            }
        })
        .collect();
    let tracker = match wp::tracker(BackendKind::AsyncWp) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("the trap floor needs async-WP: {e}");
            std::process::exit(1);
        }
    };

    println!("Machine: {}", machine_line());
    println!(
        "Backends: {}; {reps} repetitions per row (medians of {} time); private anonymous memory, populated before tracking.",
        backends.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "),
        if args.wall { "wall" } else { "thread CPU" }
    );
    println!();
    println!("| backend | size | dirty | pattern | thr | pages | write µs/page | collect ms | write+collect ms | copy floor ms | trap floor ms | × copy | × trap |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");

    let writers = Writers {
        go: AtomicU64::new(0),
        done: AtomicUsize::new(0),
        helper_ns: AtomicU64::new(0),
        quit: AtomicBool::new(false),
        job: parking_lot::Mutex::new(Job {
            base: Ptr(std::ptr::null_mut()),
            pages: Default::default(),
            threads: 1,
            stamp: 0,
            declare: None,
        }),
    };
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    std::thread::scope(|sc| {
        let helper = sc.spawn(|| writers.helper(1));
        for &mib in &sizes_mib {
            let len = mib << 20;
            let pages = len / p;
            // One region per backend and one for the floors, so that every repetition measures
            // the floors and all backends back to back, under the same machine load.
            let regions: Vec<Anon> = backends.iter().map(|_| populated(len)).collect();
            let floor_mem = populated(len);
            let dst = populated(len);
            let floor_span =
                tracker.register(floor_mem.ptr() as usize, len, BackendKind::AsyncWp).expect("register floor");
            for &frac in &fracs {
                for pattern in [Pattern::Sequential, Pattern::Random] {
                    let dirty = std::sync::Arc::new(dirty_pages(pages, frac, pattern, &mut rng));
                    for threads in [1usize, 2] {
                        let cfg = Config { mib, frac, pattern, threads, dirty: dirty.clone() };
                        measure(
                            &cfg,
                            &mgr,
                            &backends,
                            &regions,
                            tracker,
                            &floor_span,
                            &floor_mem,
                            &dst,
                            &writers,
                            reps,
                        );
                    }
                }
            }
            tracker.unregister(floor_span).unwrap();
        }
        writers.quit.store(true, Ordering::Relaxed);
        helper.join().unwrap();
    });
}

/// The shadow backend changes protections page by page, so randomly scattered written pages
/// split its mapping into up to two mappings each; past `vm.max_map_count` its fault handler
/// cannot proceed and the process aborts. Such rows are skipped (and say so).
fn exceeds_map_count(kind: BackendKind, cfg: &Config, pages: usize) -> bool {
    if kind != BackendKind::Shadow || cfg.pattern == Pattern::Sequential {
        return false;
    }
    let max: usize =
        std::fs::read_to_string("/proc/sys/vm/max_map_count").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(65530);
    let in_use = std::fs::read_to_string("/proc/self/maps").map(|s| s.lines().count()).unwrap_or(0);
    // Peak while writing d of n pages in random order: max over k <= d of 2k(1 - k/n).
    let (d, n) = (cfg.dirty.len() as f64, pages as f64);
    let peak = if d <= n / 2.0 { 2.0 * d * (1.0 - d / n) } else { n / 2.0 };
    peak > 0.8 * max.saturating_sub(in_use) as f64
}

struct Config {
    mib: usize,
    frac: f64,
    pattern: Pattern,
    threads: usize,
    dirty: std::sync::Arc<Vec<usize>>,
}

/// One configuration: `reps` repetitions (after one warm-up) of the floors and of every
/// backend, then one table row per backend from the medians.
#[allow(clippy::too_many_arguments)]
fn measure(
    cfg: &Config,
    mgr: &GuardManager,
    backends: &[BackendKind],
    regions: &[Anon],
    tracker: &wp::WpTracker,
    floor_span: &wp::WpSpan,
    floor_mem: &Anon,
    dst: &Anon,
    writers: &Writers,
    reps: usize,
) {
    let helpers = cfg.threads - 1;
    let runs = runs_of(&cfg.dirty);
    let mut scratch = Vec::new();
    let skip: Vec<bool> = backends.iter().map(|&k| exceeds_map_count(k, cfg, regions[0].len() / page_size())).collect();
    let tracked: Vec<_> = backends
        .iter()
        .zip(regions)
        .zip(&skip)
        .map(|((&kind, region), &skip)| {
            (!skip).then(|| {
                // SAFETY: `region` outlives the tracking (untracked at the end of this function).
                unsafe { mgr.track(region.ptr(), region.len(), kind, &TrackOptions::default()) }.expect("track")
            })
        })
        .collect();
    let (mut copy, mut fault, mut scan) = (Vec::new(), Vec::new(), Vec::new());
    let mut rows: Vec<Row> = backends.iter().map(|_| Row::default()).collect();
    for rep in 0..=reps {
        let job = |base: *mut u8, declare| Job {
            base: Ptr(base),
            pages: cfg.dirty.clone(),
            threads: cfg.threads,
            stamp: rep as u64,
            declare,
        };
        // Floors: bare async-WP faults, one scan of the span, a memcpy of the dirty bytes.
        let w = writers.run(job(floor_mem.ptr(), None), helpers);
        let t = Stopwatch::start();
        let st = tracker.scan(floor_span, floor_span.pages(), &mut scratch).unwrap();
        let s = t.elapsed();
        assert_eq!(st.pages, cfg.dirty.len(), "bare async-WP must see every dirty page");
        let t = Stopwatch::start();
        let mut at = 0;
        for r in &runs {
            // SAFETY: source inside the floor mapping, destination inside dst (region-sized).
            unsafe { std::ptr::copy_nonoverlapping(floor_mem.ptr().add(r.start), dst.ptr().add(at), r.len()) };
            at += r.len();
        }
        let c = t.elapsed();
        if rep > 0 {
            fault.push(w.as_secs_f64());
            scan.push(s.as_secs_f64());
            copy.push(c.as_secs_f64());
        }
        for ((&kind, t), row) in backends.iter().zip(&tracked).zip(&mut rows) {
            let Some(t) = t else { continue };
            let declare = (kind == BackendKind::Assisted).then_some((mgr as *const GuardManager as usize, t.id.0));
            let w = writers.run(job(t.app_ptr, declare), helpers);
            let mut at = 0;
            let mut sink = |_: usize, b: &[u8]| {
                // SAFETY: dst is as large as the region; a collection never exceeds it.
                unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), dst.ptr().add(at), b.len()) };
                at += b.len();
            };
            let tc = Stopwatch::start();
            let st = mgr.collect(t.id, &mut sink).unwrap();
            let c = tc.elapsed();
            if rep > 0 {
                row.write.push(w.as_secs_f64());
                row.collect.push(c.as_secs_f64());
                row.reported = st.pages;
            }
        }
    }
    for t in tracked.iter().flatten() {
        mgr.untrack(t.id, &mut |_: usize, _: &[u8]| ()).unwrap();
    }
    let copy_floor = median(&mut copy);
    let trap_floor = copy_floor + median(&mut fault) + median(&mut scan);
    let n = cfg.dirty.len();
    for ((&kind, row), &skip) in backends.iter().zip(&mut rows).zip(&skip) {
        if skip {
            println!(
                "| {kind} | {} MiB | {}% | {} | {} | {n} | not run: needs more than vm.max_map_count mappings | | | | | | |",
                cfg.mib,
                cfg.frac * 100.0,
                if cfg.pattern == Pattern::Sequential { "seq" } else { "random" },
                cfg.threads,
            );
            continue;
        }
        let w = median(&mut row.write);
        let c = median(&mut row.collect);
        let total = w + c;
        println!(
            "| {} | {} MiB | {}% | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} |",
            kind,
            cfg.mib,
            cfg.frac * 100.0,
            if cfg.pattern == Pattern::Sequential { "seq" } else { "random" },
            cfg.threads,
            n,
            w * 1e6 / n as f64,
            c * 1e3,
            total * 1e3,
            copy_floor * 1e3,
            trap_floor * 1e3,
            total / copy_floor,
            total / trap_floor,
        );
        if matches!(kind, BackendKind::AsyncWp | BackendKind::Shadow | BackendKind::ShadowWp) && row.reported != n {
            eprintln!("warning: {kind} reported {} pages, {n} written", row.reported);
        }
    }
}
