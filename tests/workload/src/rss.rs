//! `--rss-churn N`: N allocations of 64 KiB of host-visible coherent memory, each mapped and
//! every page written, one submit (so a capture layer collects them), then all freed and one
//! more submit (as an application's next frame); prints one JSON line with the resident set
//! (KiB) before, at the peak, right after and once settled (`--rss-settle-kib`, or stable for
//! 100 ms; at most 10 s), so a test can check that a layer gives the memory back.

use crate::vkctx::{Frame, Vk, VkError};
use ash::vk;
use serde_json::json;

/// `VmRSS` of this process in KiB.
fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub fn churn(vk: &Vk, n: usize, rounds: usize, settle_kib: Option<u64>) -> Result<(), VkError> {
    let size = 64 << 10;
    let coherent = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
    let ty =
        *vk.memory_types_with(!0, coherent).first().ok_or_else(|| VkError("no host-visible coherent type".into()))?;
    let frame = Frame::new(vk)?;
    let before = rss_kib();
    let mut peak = before;
    for round in 0..rounds {
        let mut bufs = Vec::with_capacity(n);
        for _ in 0..n {
            let b = vk.memory_only(size, ty)?;
            let p = vk.map(b.memory, 0, vk::WHOLE_SIZE)?;
            for off in (0..size as usize).step_by(4096) {
                // SAFETY: inside the mapping just made.
                unsafe { p.add(off).write_volatile(round as u8 + 1) };
            }
            bufs.push(b);
        }
        frame.begin(vk)?;
        frame.submit(vk, false)?;
        frame.wait(vk)?;
        peak = peak.max(rss_kib());
        for b in &bufs {
            vk.free(b);
        }
        frame.begin(vk)?;
        frame.submit(vk, false)?;
        frame.wait(vk)?;
    }
    frame.destroy(vk);
    let after = rss_kib();
    // A capture layer may still be writing what it collected (its queue is bounded): wait until
    // the resident set is at most `settle_kib` (or, without it, stops changing for 100 ms), at
    // most 10 s.
    let t0 = std::time::Instant::now();
    let mut settled = after;
    while t0.elapsed() < std::time::Duration::from_secs(10) && settle_kib.map_or(true, |k| settled > k) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = rss_kib();
        if settle_kib.is_none() && now == settled {
            break;
        }
        settled = now;
    }
    let settle_ms = t0.elapsed().as_millis() as u64;
    println!(
        "{}",
        json!({"kind": "rss", "allocations": n, "rounds": rounds, "bytes_each": size, "before_kib": before, "peak_kib": peak, "after_kib": after, "settled_kib": settled, "settle_ms": settle_ms})
    );
    Ok(())
}
