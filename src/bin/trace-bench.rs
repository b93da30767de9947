//! Trace writer throughput: MB/s of dirty bytes handed to the writer, with lz4 and without, on
//! three kinds of page data. Baselines measured in the same run on the same data: memcpy (the
//! producer's copy) and lz4 + CRC alone on one thread (the writer thread's work).
//!
//! `cargo run --release --bin trace-bench -- [--mib N] [--out PATH] [--reps R]`
//! The default sink is /dev/null so the figure is the writer's CPU cost, not the disk's.

use std::hint::black_box;
use std::time::Instant;

use vkdirty::trace::{Compression, TraceWriter, WriterOptions};

const PAGE: usize = 4096;
/// Source data per kind; the bench cycles through it.
const SRC: usize = 64 << 20;
/// Bytes per collection (one `dirty()` handle), pushed as runs of `RUN` bytes with a page gap.
const COLLECTION: usize = 1 << 20;
const RUN: usize = 64 << 10;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Pages whose first half holds random bytes and second half zeros (partly filled buffers).
fn half_zero() -> Vec<u8> {
    let mut v = vec![0u8; SRC];
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for p in v.chunks_mut(PAGE) {
        r.fill(&mut p[..PAGE / 2]);
    }
    v
}

/// Interleaved vertices (position, normal, uv as f32) of a displaced sphere grid.
fn vertices() -> Vec<u8> {
    let mut v = Vec::with_capacity(SRC);
    let (mut i, n) = (0u32, 1024u32);
    while v.len() + 32 <= SRC {
        let (a, b) = ((i % n) as f32 / n as f32, (i / n % n) as f32 / n as f32);
        let (th, ph) = (a * std::f32::consts::TAU, b * std::f32::consts::PI);
        let rad = 1.0 + 0.05 * (7.0 * th).sin() * (5.0 * ph).cos();
        let nrm = [th.cos() * ph.sin(), th.sin() * ph.sin(), ph.cos()];
        for f in [nrm[0] * rad, nrm[1] * rad, nrm[2] * rad, nrm[0], nrm[1], nrm[2], a, b] {
            v.extend_from_slice(&f.to_le_bytes());
        }
        i = i.wrapping_add(1);
    }
    v.resize(SRC, 0);
    v
}

fn random() -> Vec<u8> {
    let mut v = vec![0u8; SRC];
    Rng(0x1234_5678_9abc_def1).fill(&mut v);
    v
}

/// CPU time of this thread or of the whole process, in seconds.
fn cpu_secs(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; the clock ids used are always supported on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn mbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

/// The producer's copy alone.
fn memcpy_rate(src: &[u8], total: usize) -> f64 {
    let mut dst = vec![0u8; COLLECTION];
    let t = Instant::now();
    let mut done = 0;
    while done < total {
        let at = done % src.len();
        dst.copy_from_slice(&src[at..at + COLLECTION]);
        black_box(&mut dst);
        done += COLLECTION;
    }
    mbps(total, t.elapsed().as_secs_f64())
}

/// The writer thread's per-byte work alone, on this thread: lz4 into a scratch buffer + CRC.
/// Returns MB per CPU-second of this thread (not disturbed by other load) and the ratio.
fn lz4_rate(src: &[u8], total: usize) -> (f64, f64) {
    let mut out = vec![0u8; lz4_flex::block::get_maximum_output_size(COLLECTION)];
    let t = cpu_secs(libc::CLOCK_THREAD_CPUTIME_ID);
    let (mut done, mut stored) = (0, 0);
    while done < total {
        let at = done % src.len();
        let chunk = &src[at..at + COLLECTION];
        let n = lz4_flex::block::compress_into(chunk, &mut out).expect("lz4");
        let s = if n < chunk.len() { &out[..n] } else { chunk };
        black_box(crc32fast::hash(s));
        stored += s.len();
        done += COLLECTION;
    }
    (mbps(total, cpu_secs(libc::CLOCK_THREAD_CPUTIME_ID) - t), total as f64 / stored as f64)
}

struct WriterRun {
    /// Dirty MB per wall second, first push to `close()` returning.
    wall: f64,
    /// Dirty MB per CPU-second of the writer thread (process CPU minus this producer thread's).
    cpu: f64,
    stalls: u64,
    /// Payload bytes in / bytes written.
    ratio: f64,
    /// Share of blocks stored raw because the writer was behind.
    raw_behind: f64,
}

/// Pushes `total` bytes through a writer; with `pace_mbps`, at most that input rate.
fn writer_rate(
    src: &[u8],
    total: usize,
    c: Compression,
    adaptive: bool,
    pace_mbps: Option<f64>,
    out: &str,
) -> WriterRun {
    let opts = WriterOptions { compression: c, adaptive, page_size: PAGE as u32, ..WriterOptions::default() };
    let w = TraceWriter::create(out, opts).expect("create trace");
    let t = Instant::now();
    let (p0, m0) = (cpu_secs(libc::CLOCK_PROCESS_CPUTIME_ID), cpu_secs(libc::CLOCK_THREAD_CPUTIME_ID));
    let (mut done, mut submit) = (0, 0u64);
    while done < total {
        // Paced in 16 MiB bursts: finer sleeps overshoot on a busy machine.
        if let (Some(rate), true) = (pace_mbps, done % (16 << 20) == 0) {
            let due = std::time::Duration::from_secs_f64(done as f64 / (rate * 1e6));
            if let Some(wait) = due.checked_sub(t.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        submit += 1;
        let at = done % src.len();
        let mut d = w.dirty(1, submit);
        // Runs as an engine hands them over: 64 KiB coalesced runs with a clean page between.
        for (k, run) in src[at..at + COLLECTION].chunks(RUN).enumerate() {
            d.push((at + k * (RUN + PAGE)) as u64, run);
        }
        d.finish();
        done += COLLECTION;
    }
    let (m1, totals) = (cpu_secs(libc::CLOCK_THREAD_CPUTIME_ID), w.close().expect("close"));
    let secs = t.elapsed().as_secs_f64();
    let writer_cpu = (cpu_secs(libc::CLOCK_PROCESS_CPUTIME_ID) - p0) - (m1 - m0);
    assert_eq!(totals.dirty_bytes, total as u64);
    let s = w.stats();
    WriterRun {
        wall: mbps(total, secs),
        cpu: mbps(total, writer_cpu),
        stalls: s.stalls,
        ratio: s.payload_bytes as f64 / s.bytes_out.max(1) as f64,
        raw_behind: s.raw_behind as f64 / s.blocks_written.max(1) as f64,
    }
}

/// Per-column medians over `reps` runs.
fn median<const N: usize>(reps: usize, mut f: impl FnMut() -> [f64; N]) -> [f64; N] {
    let runs: Vec<[f64; N]> = (0..reps).map(|_| f()).collect();
    std::array::from_fn(|i| {
        let mut col: Vec<f64> = runs.iter().map(|r| r[i]).collect();
        col.sort_by(f64::total_cmp);
        col[col.len() / 2]
    })
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = arg(&args, "--mib").and_then(|s| s.parse().ok()).unwrap_or(512);
    let reps: usize = arg(&args, "--reps").and_then(|s| s.parse().ok()).unwrap_or(5).max(1);
    let out = arg(&args, "--out").unwrap_or_else(|| "/dev/null".into());
    let total = mib << 20;

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {cpu}, {cores} cores available, Linux {}, load average {}",
        kernel.trim(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("{mib} MiB of dirty input per run, median of {reps}, sink {out}, 1 MiB collections of 64 KiB runs\n");
    let kinds = [("half-zero pages", half_zero()), ("float vertices", vertices()), ("random", random())];

    println!("Per CPU-second of the one thread doing the work (the writer thread; this thread for the");
    println!("baselines), so other load on the machine does not distort it. Full lz4: adaptive off.\n");
    println!("| data | memcpy MB/s | lz4+CRC alone MB/cpu-s | lz4 ratio | writer lz4 MB/cpu-s | writer lz4 / lz4+CRC | writer none MB/cpu-s |");
    println!("|---|---|---|---|---|---|---|");
    for (name, src) in &kinds {
        let [copy] = median(reps, || [memcpy_rate(src, total)]);
        let [lz4, ratio] = median(reps, || {
            let (r, q) = lz4_rate(src, total);
            [r, q]
        });
        let [lz] = median(reps, || [writer_rate(src, total, Compression::Lz4, false, None, &out).cpu]);
        let [none] = median(reps, || [writer_rate(src, total, Compression::None, false, None, &out).cpu]);
        println!("| {name} | {copy:.0} | {lz4:.0} | {ratio:.2} | {lz:.0} | {:.2} | {none:.0} |", lz / lz4);
    }

    println!("\nWall clock on this machine as loaded now; lz4 with the default adaptive mode (blocks stored");
    println!("raw while the queue is more than half full). Paced: the producer offers 1000 MB/s.\n");
    println!("| data | lz4 flat out MB/s | file ratio | raw (behind) | lz4 paced 1000 MB/s: MB/s | stalls | file ratio | raw (behind) | none flat out MB/s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    // The run with the median wall rate.
    let pick = |mut runs: Vec<WriterRun>| {
        runs.sort_by(|a, b| a.wall.total_cmp(&b.wall));
        runs.swap_remove(runs.len() / 2)
    };
    for (name, src) in &kinds {
        let flat = pick((0..reps).map(|_| writer_rate(src, total, Compression::Lz4, true, None, &out)).collect());
        let paced =
            pick((0..reps).map(|_| writer_rate(src, total, Compression::Lz4, true, Some(1000.0), &out)).collect());
        let none = pick((0..reps).map(|_| writer_rate(src, total, Compression::None, true, None, &out)).collect());
        println!(
            "| {name} | {:.0} | {:.2} | {:.0}% | {:.0} | {} | {:.2} | {:.0}% | {:.0} |",
            flat.wall,
            flat.ratio,
            flat.raw_behind * 100.0,
            paced.wall,
            paced.stalls,
            paced.ratio,
            paced.raw_behind * 100.0,
            none.wall
        );
    }
}
