//! Streaming-upload benchmark: each frame the CPU writes part of a host-visible coherent buffer,
//! submits a small copy and waits for it. Prints one JSON line with the per-frame times, the
//! bytes written and the capture floors measured in the same process (see docs/benchmarks.md).
//! `twoqueue`: several threads submitting on their own queues at once.
#![deny(unsafe_op_in_unsafe_fn)]

mod floors;
mod gfxr;
mod gpu;
mod pattern;
mod stats;
mod trap;
mod twoqueue;

use clap::{Parser, Subcommand, ValueEnum};
use pattern::{plan_bytes, Pattern, Planner};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "vkdirty-stream-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    /// Map once, keep the pointer.
    Persistent,
    /// vkMapMemory before and vkUnmapMemory after each frame's writes.
    MapEveryFrame,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the streaming-upload workload.
    Run(RunArgs),
    /// Several threads, each submitting on its own queue (see `twoqueue.rs`).
    Twoqueue(twoqueue::Args),
    /// Size the memory data of a gfxreconstruct capture (its fill-memory blocks), as JSON.
    GfxrStats { file: PathBuf },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Buffer size in MiB.
    #[arg(long, default_value_t = 16)]
    size_mib: u64,
    /// Percent of the buffer's pages written per frame (at least one page).
    #[arg(long, default_value_t = 1.0)]
    fraction: f64,
    #[arg(long, value_enum, default_value_t = Pattern::Random)]
    pattern: Pattern,
    #[arg(long, value_enum, default_value_t = Mode::Persistent)]
    mode: Mode,
    /// Timed frames.
    #[arg(long, default_value_t = 300)]
    frames: usize,
    /// Untimed frames before the timed ones (their bytes are counted in the totals).
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Flush the written ranges each frame (for assisted capture modes).
    #[arg(long)]
    flush: bool,
    /// Physical device index (default: the first real GPU, else the first device).
    #[arg(long)]
    device_index: Option<usize>,
    /// Memory type index for the buffer (default: host-visible coherent, not device-local).
    #[arg(long)]
    memory_type: Option<u32>,
    /// The many-mappings case: this many extra persistently mapped allocations; each frame
    /// writes one page in `--writes-per-frame` of them (and nothing in the stream buffer), then
    /// submits the same copy and waits. Floors are not measured.
    #[arg(long, default_value_t = 0)]
    allocations: usize,
    /// Size of each extra allocation, KiB.
    #[arg(long, default_value_t = 64)]
    alloc_kib: u64,
    #[arg(long, default_value_t = 4)]
    writes_per_frame: usize,
    /// Skip the floor measurements.
    #[arg(long)]
    no_floors: bool,
    /// Write the JSON line here instead of stdout (capture tools print to stdout too).
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Written {
    /// Bytes the CPU wrote per timed frame.
    bytes_per_frame: usize,
    pages_per_frame: usize,
    /// Everything written during the run: initial upload + warm-up + timed frames, counted
    /// per frame in whole pages (a page written in two frames counts twice).
    total_bytes: u64,
    total_pages: u64,
    /// Of which, the initial upload of the whole buffer.
    initial_bytes: u64,
}

#[derive(serde::Serialize)]
struct Report {
    bench: &'static str,
    mode: Mode,
    pattern: Pattern,
    fraction_pct: f64,
    /// Extra mapped allocations (the many-mappings case; 0: the stream case).
    allocations: usize,
    size_mib: u64,
    frames: usize,
    warmup: usize,
    flush: bool,
    page_size: usize,
    device: gpu::DeviceInfo,
    /// Per timed frame: write + submit + wait, in milliseconds.
    frame_ms: stats::Summary,
    /// Per timed frame: CPU time of the submitting thread (write, faults, layer, driver submit;
    /// a blocking wait costs none), in milliseconds. Less exposed to other processes than the
    /// wall clock: what a layer adds to the submitting thread.
    frame_cpu_ms: stats::Summary,
    /// CPU time of the whole process over the timed loop (every thread: the trace writer's,
    /// the driver's), milliseconds per timed frame.
    loop_cpu_ms_per_frame: f64,
    /// The timed loop, seconds.
    loop_s: f64,
    /// From process start to the end of Vulkan teardown (floors excluded), seconds.
    wall_s: f64,
    cpu_user_s: f64,
    cpu_sys_s: f64,
    /// Peak resident set (VmHWM) before the floors ran, KiB.
    peak_rss_kib: u64,
    written: Written,
    floors: Option<floors::Floors>,
    floors_s: f64,
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as usize
}

/// VmHWM from /proc/self/status, else getrusage's maximum RSS (both KiB).
fn peak_rss_kib() -> u64 {
    if let Ok(s) = std::fs::read_to_string("/proc/self/status") {
        for l in s.lines() {
            if let Some(v) = l.strip_prefix("VmHWM:") {
                if let Some(n) = v.split_whitespace().next().and_then(|n| n.parse().ok()) {
                    return n;
                }
            }
        }
    }
    rusage().2
}

/// A CPU-time clock (`CLOCK_THREAD_CPUTIME_ID`, `CLOCK_PROCESS_CPUTIME_ID`), seconds.
fn cpu_clock_s(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec; these clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn rusage() -> (f64, f64, u64) {
    // SAFETY: an all-zero rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    (t(ru.ru_utime), t(ru.ru_stime), ru.ru_maxrss as u64)
}

fn run(a: RunArgs, start: Instant) -> Result<Report, String> {
    let page = page_size();
    if a.size_mib == 0 || a.size_mib > 1 << 20 {
        return Err(format!("--size-mib must be 1..=1048576, got {}", a.size_mib));
    }
    if !(a.fraction > 0.0 && a.fraction <= 100.0) {
        return Err(format!("--fraction must be in (0, 100], got {}", a.fraction));
    }
    if a.frames == 0 {
        return Err("--frames must be at least 1".into());
    }
    let span = (a.size_mib as usize) << 20;
    let fraction = if a.pattern == Pattern::Full { 100.0 } else { a.fraction };
    let planner = Planner::new(a.pattern, span, page, fraction, a.seed);
    let floor_planner = planner.clone();
    let mut planner = planner;

    let mut g = gpu::Gpu::new(&gpu::GpuOptions {
        size: span as u64,
        device_index: a.device_index,
        memory_type: a.memory_type,
        map_every_frame: a.mode == Mode::MapEveryFrame,
        flush: a.flush,
        allocations: a.allocations,
        alloc_bytes: a.alloc_kib * 1024,
    })
    .map_err(|e| e.to_string())?;
    g.initial_fill(0x5a).map_err(|e| e.to_string())?;
    if a.allocations > 0 {
        return run_many(a, g, start, page, span);
    }
    let initial = span as u64;
    let mut plan = Vec::new();
    let m = frame_loop(g, &a, start, |g, f| {
        planner.next_frame(&mut plan);
        let t = Instant::now();
        g.frame(&plan, (f % 251) as u8 + 1).map_err(|e| e.to_string())?;
        Ok((t.elapsed(), plan_bytes(&plan)))
    })?;

    let t = Instant::now();
    let floors = if a.no_floors {
        None
    } else {
        let n = floors::floor_frames(a.frames, floor_planner.bytes_per_frame());
        let probe = trap::probe(span);
        Some(floors::measure(floor_planner.clone(), span, n, Some(probe)).map_err(|e| format!("floors: {e}"))?)
    };
    let written = Written {
        bytes_per_frame: floor_planner.bytes_per_frame(),
        pages_per_frame: floor_planner.pages_per_frame(),
        total_bytes: initial + m.bytes,
        total_pages: (initial + m.bytes) / page as u64,
        initial_bytes: initial,
    };
    Ok(Report { floors, floors_s: t.elapsed().as_secs_f64(), ..report(&a, "stream", fraction, 0, page, m, written) })
}

/// The many-mappings case (`--allocations`): each frame writes `writes_per_frame` distinct pages,
/// in as many different allocations spread over all of them (pages of the one allocation when
/// there is one).
fn run_many(a: RunArgs, g: gpu::Gpu, start: Instant, page: usize, span: usize) -> Result<Report, String> {
    let pages = ((a.alloc_kib * 1024) as usize / 4096).max(1);
    let n = a.allocations;
    let w = a.writes_per_frame.clamp(1, pages);
    let mut which = Vec::with_capacity(w);
    let per_frame = w * 4096;
    // Distinct pages every frame whatever N is (with one allocation, 4 pages of it), so the
    // written work per frame is the same in every case.
    let m = frame_loop(g, &a, start, |g, f| {
        let t = Instant::now();
        which.clear();
        which.extend((0..w).map(|k| {
            let i = (f * w + k).wrapping_mul(7919) % n;
            (i, (f + k * 7) % pages)
        }));
        g.frame_many(&which, (f % 251) as u8 + 1).map_err(|e| e.to_string())?;
        Ok((t.elapsed(), per_frame))
    })?;
    let initial = span as u64;
    let total = initial + m.bytes;
    let written = Written {
        bytes_per_frame: per_frame,
        pages_per_frame: per_frame / page,
        total_bytes: total,
        total_pages: total / page as u64,
        initial_bytes: initial,
    };
    Ok(report(&a, "manymaps", 0.0, n, page, m, written))
}

/// What [`frame_loop`] measured.
struct Measured {
    device: gpu::DeviceInfo,
    /// Per timed frame, milliseconds.
    times: Vec<f64>,
    /// Per timed frame, the thread's CPU time, milliseconds.
    cpu_times: Vec<f64>,
    /// Process CPU time over the timed loop, seconds.
    loop_cpu_s: f64,
    loop_s: f64,
    wall_s: f64,
    cpu_user_s: f64,
    cpu_sys_s: f64,
    peak_rss_kib: u64,
    /// Bytes the frames wrote, warm-up included.
    bytes: u64,
}

/// Runs `a.warmup` frames, then `a.frames` timed ones (frame numbers run on across both), and
/// tears the device down. `frame` does frame `f` and returns the time to count and the bytes
/// it wrote.
fn frame_loop(
    mut g: gpu::Gpu,
    a: &RunArgs,
    start: Instant,
    mut frame: impl FnMut(&mut gpu::Gpu, usize) -> Result<(Duration, usize), String>,
) -> Result<Measured, String> {
    let mut bytes = 0u64;
    for f in 0..a.warmup {
        bytes += frame(&mut g, f)?.1 as u64;
    }
    let mut times = Vec::with_capacity(a.frames);
    let mut cpu_times = Vec::with_capacity(a.frames);
    let loop_start = Instant::now();
    let loop_cpu = cpu_clock_s(libc::CLOCK_PROCESS_CPUTIME_ID);
    for f in a.warmup..a.warmup + a.frames {
        let c0 = cpu_clock_s(libc::CLOCK_THREAD_CPUTIME_ID);
        let (t, b) = frame(&mut g, f)?;
        cpu_times.push((cpu_clock_s(libc::CLOCK_THREAD_CPUTIME_ID) - c0) * 1e3);
        times.push(t.as_secs_f64() * 1e3);
        bytes += b as u64;
    }
    let loop_cpu_s = cpu_clock_s(libc::CLOCK_PROCESS_CPUTIME_ID) - loop_cpu;
    let loop_s = loop_start.elapsed().as_secs_f64();
    let device = g.info.clone();
    drop(g);
    let wall_s = start.elapsed().as_secs_f64();
    let peak_rss_kib = peak_rss_kib();
    let (cpu_user_s, cpu_sys_s, _) = rusage();
    Ok(Measured { device, times, cpu_times, loop_cpu_s, loop_s, wall_s, cpu_user_s, cpu_sys_s, peak_rss_kib, bytes })
}

/// The report of a run without floors.
fn report(
    a: &RunArgs,
    bench: &'static str,
    fraction_pct: f64,
    allocations: usize,
    page: usize,
    m: Measured,
    written: Written,
) -> Report {
    Report {
        bench,
        mode: a.mode,
        pattern: a.pattern,
        fraction_pct,
        allocations,
        size_mib: a.size_mib,
        frames: a.frames,
        warmup: a.warmup,
        flush: a.flush,
        page_size: page,
        device: m.device,
        frame_ms: stats::summarize(&m.times),
        frame_cpu_ms: stats::summarize(&m.cpu_times),
        loop_cpu_ms_per_frame: m.loop_cpu_s * 1e3 / a.frames.max(1) as f64,
        loop_s: m.loop_s,
        wall_s: m.wall_s,
        cpu_user_s: m.cpu_user_s,
        cpu_sys_s: m.cpu_sys_s,
        peak_rss_kib: m.peak_rss_kib,
        written,
        floors: None,
        floors_s: 0.0,
    }
}

fn emit(line: &str, output: Option<&PathBuf>) -> Result<(), String> {
    match output {
        Some(p) => std::fs::write(p, format!("{line}\n")).map_err(|e| format!("{}: {e}", p.display())),
        None => {
            let mut o = std::io::stdout().lock();
            writeln!(o, "{line}").and_then(|_| o.flush()).map_err(|e| format!("stdout: {e}"))
        }
    }
}

fn main() {
    let start = Instant::now();
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Run(a) => {
            let out = a.output.clone();
            run(a, start).and_then(|r| emit(&serde_json::to_string(&r).expect("serializable"), out.as_ref()))
        }
        Cmd::Twoqueue(a) => {
            let out = a.output.clone();
            twoqueue::run(a, start).and_then(|r| emit(&serde_json::to_string(&r).expect("serializable"), out.as_ref()))
        }
        Cmd::GfxrStats { file } => std::fs::File::open(&file)
            .map_err(|e| format!("{}: {e}", file.display()))
            .and_then(|f| gfxr::scan(std::io::BufReader::new(f)).map_err(|e| format!("{}: {e}", file.display())))
            .and_then(|s| emit(&serde_json::to_string(&s).expect("serializable"), None)),
    };
    if let Err(e) = res {
        eprintln!("vkdirty-stream-bench: {e}");
        std::process::exit(1);
    }
}
