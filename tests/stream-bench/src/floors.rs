//! The physical floors of write capture, measured on anonymous memory in this process:
//! - copy floor: a memcpy of exactly the dirty bytes of each frame;
//! - trap floor: the copy floor plus one bare async-WP write fault per dirty page and one
//!   `PAGEMAP_SCAN` of the whole span per frame (what any page-granular tracker pays at least).

use crate::pattern::{plan_bytes, Planner};
use crate::stats::{summarize, Summary};
use std::ops::Range;
use std::time::Instant;

#[path = "../../common/anon.rs"]
mod anon;
pub use anon::Anon;

/// Anonymous private memory, without transparent huge pages (page-granular tracking), populated
/// so the floors never count first-touch faults.
pub fn floor_memory(len: usize) -> std::io::Result<Anon> {
    Ok(Anon::new(len)?.without_huge_pages().populated(0x5a))
}

/// Floors per frame, in milliseconds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Floors {
    pub frames: usize,
    /// Time to write the frame's pages to unprotected memory (what the application itself pays).
    pub write_ms: Summary,
    pub copy_ms: Summary,
    /// `None` when async-WP is unavailable here; `trap_note` says why.
    pub trap_ms: Option<Summary>,
    pub fault_us_per_page: Option<f64>,
    pub scan_us: Option<Summary>,
    pub trap_note: String,
}

/// One frame of the trap floor: writes (faulting), scan-and-reprotect, copy-out; the returned
/// pages must be exactly the written ones.
pub trait TrapProbe {
    /// Re-protects the whole span (initial arm).
    fn arm(&mut self) -> Result<(), String>;
    /// Reports and re-protects the written pages, as byte ranges.
    fn scan(&mut self, out: &mut Vec<Range<usize>>) -> Result<(), String>;
    fn memory(&self) -> &Anon;
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Measures the floors over `frames` frames of `planner`'s pattern.
pub fn measure(
    mut planner: Planner,
    span: usize,
    frames: usize,
    trap: Option<Result<Box<dyn TrapProbe>, String>>,
) -> std::io::Result<Floors> {
    let plain = floor_memory(span)?;
    let mut dst = vec![0u8; planner.bytes_per_frame()];
    dst.fill(1);
    let mut plan = Vec::new();
    let mut found = Vec::new();
    let (mut write, mut copy) = (Vec::with_capacity(frames), Vec::with_capacity(frames));
    let (mut wp_write, mut scan, mut wp_copy) = (Vec::new(), Vec::new(), Vec::new());
    let mut note = String::new();
    let mut probe = match trap {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            note = e;
            None
        }
        None => {
            note = "not measured".into();
            None
        }
    };
    if let Some(p) = probe.as_mut() {
        if let Err(e) = p.arm() {
            note = e;
            probe = None;
        }
    }
    let mut mismatch = None;
    for f in 0..frames {
        planner.next_frame(&mut plan);
        let value = (f % 251) as u8 + 1;
        let t = Instant::now();
        plain.fill_runs(&plan, value);
        write.push(ms(t));
        let t = Instant::now();
        plain.copy_runs(&plan, &mut dst);
        copy.push(ms(t));
        std::hint::black_box(&dst);

        if let Some(p) = probe.as_mut() {
            let t = Instant::now();
            p.memory().fill_runs(&plan, value);
            wp_write.push(ms(t));
            let t = Instant::now();
            if let Err(e) = p.scan(&mut found) {
                note = e;
                probe = None;
                continue;
            }
            scan.push(ms(t));
            let t = Instant::now();
            p.memory().copy_runs(&found, &mut dst);
            wp_copy.push(ms(t));
            if found != plan && mismatch.is_none() {
                mismatch = Some(format!(
                    "scan reported {} bytes in {} ranges for {} written in {} ranges",
                    plan_bytes(&found),
                    found.len(),
                    plan_bytes(&plan),
                    plan.len()
                ));
            }
        }
    }
    let write_s = summarize(&write);
    let mut floors = Floors { frames, write_ms: write_s, copy_ms: summarize(&copy), ..Default::default() };
    if probe.is_some() && !scan.is_empty() {
        // Per frame: the extra cost of writing protected pages (faults) + scan + copy.
        let per: Vec<f64> =
            (0..scan.len()).map(|i| (wp_write[i] - write_s.median).max(0.0) + scan[i] + wp_copy[i]).collect();
        let fault: Vec<f64> = wp_write.iter().map(|w| (w - write_s.median).max(0.0)).collect();
        let pages = planner.pages_per_frame() as f64;
        floors.trap_ms = Some(summarize(&per));
        floors.fault_us_per_page = Some(summarize(&fault).median * 1e3 / pages);
        floors.scan_us = Some({
            let us: Vec<f64> = scan.iter().map(|s| s * 1e3).collect();
            summarize(&us)
        });
        note = match mismatch {
            Some(m) => format!("measured; WARNING {m}"),
            None => "measured".into(),
        };
    }
    floors.trap_note = note;
    Ok(floors)
}

/// How many floor frames to run: the run's frames, but at most about 4 GiB written (and at
/// least 20 frames), so the floors stay a small part of a run.
pub fn floor_frames(frames: usize, bytes_per_frame: usize) -> usize {
    let budget = (4usize << 30) / bytes_per_frame.max(1);
    frames.min(budget).max(20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::Pattern;

    #[test]
    fn copy_floor_without_trap() {
        let p = Planner::new(Pattern::Random, 64 * 4096, 4096, 10.0, 3);
        let f = measure(p, 64 * 4096, 5, None).unwrap();
        assert_eq!(f.frames, 5);
        assert!(f.copy_ms.max > 0.0);
        assert!(f.trap_ms.is_none());
        assert_eq!(f.trap_note, "not measured");
    }

    #[test]
    fn trap_floor_finds_exactly_the_written_pages() {
        let span = 256 * 4096;
        let p = Planner::new(Pattern::Random, span, 4096, 5.0, 9);
        let probe = crate::trap::probe(span);
        let f = measure(p, span, 6, Some(probe)).unwrap();
        // Where async-WP is unavailable (old kernel) the note says why; here it must work.
        assert_eq!(f.trap_note, "measured", "{}", f.trap_note);
        let trap = f.trap_ms.unwrap();
        assert!(trap.median > 0.0);
        assert!(f.scan_us.unwrap().median > 0.0);
        assert!(f.fault_us_per_page.unwrap() >= 0.0);
    }

    #[test]
    fn floor_frames_budget() {
        assert_eq!(floor_frames(300, 4096), 300);
        assert_eq!(floor_frames(300, 256 << 20), 20);
        assert_eq!(floor_frames(300, 25 << 20), 163);
    }
}
