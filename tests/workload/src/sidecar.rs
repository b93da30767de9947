//! Ground-truth sidecar: JSON lines describing what the application wrote.
//!
//! Records (one JSON object a line, field `kind`):
//! - `header`: `version`, `page_size`, `seed`, `frames`, `scenarios`, `hash` (`"fnv1a64"`).
//! - `alloc`: `handle` (the `VkDeviceMemory` value), `size`, `scenario`, `memory_type`,
//!   `coherent`, `gpu_written`; for CPU-written allocations `cpu_range` = `[offset, len]`, the
//!   bytes only the CPU writes (the whole allocation except where the GPU writes part of it).
//!   GPU-written allocations (`gpu_written: true`) carry no hashes.
//! - `submit`: `seq` (1-based, every `vkQueueSubmit*` of the process in order), `pages` (distinct
//!   pages the application wrote since the previous submit) and `allocs`: for every live
//!   CPU-written allocation `handle`, `size`, `offset`, `len` (its `cpu_range`), `hash` (FNV-1a 64
//!   of the CPU-side mirror of that range, as a `0x` hex string) and `pages` (its share of the
//!   distinct pages).
//! - `free`: `handle`, `after_submit` (the last submit before `vkFreeMemory`).
//! - `end`: `submits`, `pages` (sum over submits), `ok`, `error` (when not ok).

use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// FNV-1a, 64 bits: the one `vkdirty check-sidecar` recomputes from the trace.
pub use vkdirty::sidecar::fnv1a64;

pub fn hex(h: u64) -> String {
    format!("{h:#018x}")
}

/// Writes records when a file was given; otherwise does nothing.
pub struct Sidecar {
    out: Option<BufWriter<File>>,
}

impl Sidecar {
    pub fn create(path: Option<&Path>) -> std::io::Result<Sidecar> {
        let out = match path {
            Some(p) => Some(BufWriter::new(File::create(p)?)),
            None => None,
        };
        Ok(Sidecar { out })
    }

    pub fn record(&mut self, v: Value) {
        if let Some(out) = &mut self.out {
            // A sidecar that cannot be written is a failed run, reported at `finish`.
            let _ = writeln!(out, "{v}");
        }
    }

    pub fn header(&mut self, page_size: usize, seed: u64, frames: u32, scenarios: &[&str]) {
        self.record(json!({
            "kind": "header", "version": 1, "page_size": page_size, "seed": seed,
            "frames": frames, "scenarios": scenarios, "hash": "fnv1a64",
        }));
    }

    pub fn finish(&mut self) -> std::io::Result<()> {
        match &mut self.out {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}
