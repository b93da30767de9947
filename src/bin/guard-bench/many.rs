//! `guard-bench --regions N,...`: how one `GuardManager::collect_all` grows with the number of
//! tracked regions when the written work stays the same (the `manymaps` case without a driver).
//! N regions of `--region-kib` each; every frame writes one byte in one page of each of
//! `--writes` regions, then one `collect_all` of the group collects them into a buffer (as the
//! trace writer copies them). Next to it, in the same process and frame loop:
//! - scan floor: one bare `PAGEMAP_SCAN` over one registered span as large as all N regions
//!   together, with the same number of pages written (the kernel's part of an ideal collection);
//! - idle: `collect_all` when nothing was written (what a submit costs that wrote nothing);
//! - after a remap: the same idle `collect_all` right after one region was untracked and
//!   tracked again (an application that maps and unmaps one allocation a frame): what the
//!   change of the set costs the next collection.
//!
//! The difference between `collect_all` and the scan floor is the engine's own bookkeeping.

use std::time::Duration;
use vkdirty::guard::arena::ArenaBlock;
use vkdirty::guard::{page_size, wp, BackendKind, GuardManager, RegionId, TrackOptions, Tracked};

use super::anon::Anon;
use super::{median, Rng, Stopwatch};

/// Memory behind one region.
enum Backing {
    /// An arena block (host-import's memory; the real memory behind a shadow-wp view).
    Block(ArenaBlock),
    /// A mapping of its own, with an unmapped page after it (async-wp on a driver's separate
    /// allocations: nothing coalesces).
    Apart(Anon),
}

impl Backing {
    fn ptr(&self) -> *mut u8 {
        match self {
            Backing::Block(b) => b.ptr(),
            Backing::Apart(a) => a.ptr(),
        }
    }
}

/// `n` tracked regions of `len` bytes for `kind`; their application pointers.
fn regions(mgr: &GuardManager, kind: BackendKind, n: usize, len: usize, populate: bool) -> Vec<(Tracked, Backing)> {
    let page = page_size();
    (0..n)
        .map(|_| {
            let (ptr, backing) = if kind == BackendKind::AsyncWp {
                // One extra page, unmapped: the next mapping cannot touch this one.
                let a = Anon::expect(len + page);
                // SAFETY: the last page of our own mapping (unmapping it again on drop is harmless).
                unsafe { libc::munmap(a.ptr().add(len).cast(), page) };
                (a.ptr(), Backing::Apart(a))
            } else {
                let b = ArenaBlock::new(len, page).expect("arena block");
                (b.ptr(), Backing::Block(b))
            };
            if populate {
                // SAFETY: `len` writable bytes of the backing, not yet tracked.
                unsafe { std::ptr::write_bytes(ptr, 1, len) };
            }
            // SAFETY: the backing outlives the region (untracked before it is dropped).
            let t = unsafe { mgr.track(ptr, len, kind, &TrackOptions::default()) }
                .unwrap_or_else(|e| panic!("{kind}: track: {e}"));
            if populate {
                // SAFETY: the application view of a tracked region: `len` writable bytes.
                unsafe { std::ptr::write_bytes(t.app_ptr, 2, len) };
            }
            (t, backing)
        })
        .collect()
}

pub struct ManyArgs {
    pub counts: Vec<usize>,
    pub region_kib: usize,
    pub writes: usize,
    pub frames: usize,
    pub backends: Vec<BackendKind>,
    pub populate: bool,
}

pub fn run(a: &ManyArgs) {
    let page = page_size();
    let len = (a.region_kib * 1024).next_multiple_of(page);
    let pages = len / page;
    let tracker = wp::tracker(BackendKind::AsyncWp).expect("the scan floor needs async-WP");
    println!(
        "{} KiB regions, {} written page(s) per frame in as many regions, {} frames (median thread CPU µs); \
         memory {} before tracking.",
        a.region_kib,
        a.writes,
        a.frames,
        if a.populate { "written" } else { "untouched" }
    );
    println!();
    println!(
        "| backend | regions | collect_all µs | idle collect_all µs | idle after a remap µs | scan floor µs | scans \
         | × at first N | VMAs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = vec![0u8; a.writes * page];
    for &kind in &a.backends {
        let mut first: Option<f64> = None;
        for &n in &a.counts {
            let mgr = GuardManager::new();
            let mut regs = regions(&mgr, kind, n, len, a.populate);
            // The floor: one span as large as all regions, the same pages written.
            let floor_mem = if a.populate { Anon::expect(n * len).populated(1) } else { Anon::expect(n * len) };
            let floor = floor_mem.ptr() as usize;
            let span = tracker.register(floor, n * len, BackendKind::AsyncWp).expect("register floor");
            let vmas = std::fs::read_to_string("/proc/self/maps").map(|s| s.lines().count()).unwrap_or(0);
            let mut runs = Vec::new();
            let which = |k: BackendKind| k == kind;
            let collect = |regs: &[(Tracked, Backing)], out: &mut Vec<u8>| {
                let mut at = 0;
                let mut sink = |_: RegionId, _: usize, bytes: &[u8]| {
                    let end = (at + bytes.len()).min(out.len());
                    out[at..end].copy_from_slice(&bytes[..end - at]);
                    at = end;
                };
                let sw = Stopwatch::start();
                let s = mgr.collect_all(0, &which, &mut sink).expect("collect_all");
                let _ = regs;
                (sw.elapsed(), s.scans)
            };
            let (mut t_all, mut t_idle, mut t_floor, mut t_remap) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut scans = 0;
            // Two warm-up frames.
            for f in 0..a.frames + 2 {
                let mut chosen: Vec<usize> = Vec::with_capacity(a.writes);
                while chosen.len() < a.writes.min(n) {
                    let i = (rng.next() as usize) % n;
                    if !chosen.contains(&i) {
                        chosen.push(i);
                    }
                }
                let pg = f % pages;
                for &i in &chosen {
                    // SAFETY: a byte inside the region's application view.
                    unsafe { *regs[i].0.app_ptr.add(pg * page + (f % 64)) = f as u8 };
                }
                let (t, s) = collect(&regs, &mut out);
                let (ti, _) = collect(&regs, &mut out);
                for (k, &i) in chosen.iter().enumerate() {
                    // SAFETY: a byte inside the floor mapping.
                    unsafe { *((floor + (i * pages + pg) * page + k) as *mut u8) = f as u8 };
                }
                let sw = Stopwatch::start();
                tracker.scan(&span, floor..floor + n * len, &mut runs).expect("floor scan");
                let tf = sw.elapsed();
                // One region unmapped and mapped again, then an idle collection.
                let j = f % n;
                mgr.untrack(regs[j].0.id, &mut |_: usize, _: &[u8]| {}).expect("untrack");
                // SAFETY: the backing is still mapped; it outlives the region as above.
                regs[j].0 = unsafe { mgr.track(regs[j].1.ptr(), len, kind, &TrackOptions::default()) }
                    .unwrap_or_else(|e| panic!("{kind}: track again: {e}"));
                let (tr, _) = collect(&regs, &mut out);
                if f >= 2 {
                    t_all.push(us(t));
                    t_idle.push(us(ti));
                    t_floor.push(us(tf));
                    t_remap.push(us(tr));
                    scans = s;
                }
            }
            tracker.unregister(span).expect("unregister floor");
            drop(floor_mem);
            for (t, _) in &regs {
                mgr.untrack(t.id, &mut |_: usize, _: &[u8]| {}).expect("untrack");
            }
            drop(regs);
            let m = median(&mut t_all);
            let base = *first.get_or_insert(m);
            println!(
                "| {kind} | {n} | {m:.1} | {:.1} | {:.1} | {:.1} | {scans} | {:.2}× | {vmas} |",
                median(&mut t_idle),
                median(&mut t_remap),
                median(&mut t_floor),
                m / base
            );
        }
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
