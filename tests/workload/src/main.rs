//! Headless Vulkan workload for vkdirty's end-to-end tests and demo.
//!
//! Writes host-visible memory in deterministic patterns over many frames, copies what it wrote
//! through device-local memory back into a read-back buffer and checks the bytes after each
//! submit (exit code 1 on a mismatch). With `--sidecar FILE` it records, for each submit, a hash
//! of what the CPU had written into each allocation (see `sidecar.rs`).

mod khr;
mod mem;
mod probe;
mod rss;
mod sidecar;
mod vkctx;

use ash::vk;
use clap::Parser;
use mem::{gen_runs, Behaviour, HostAlloc, Mapping};
use serde_json::json;
use sidecar::{hex, Sidecar};
use std::path::PathBuf;
use std::process::ExitCode;
use vkctx::{Buffer, Frame, Vk, VkError};

const SCENARIOS: [&str; 9] =
    ["persistent", "offset", "unaligned", "remap", "threads", "gpu-write", "gpu-remap", "mixed", "churn"];
/// Scenarios only run when named (not part of `all`).
/// Pages the `ring` scenario writes a frame.
const RING_PAGES: u64 = 8;
const EXTRA_SCENARIOS: [&str; 3] = ["import", "ring", "mixed-late"];
/// Submit before which `mixed-late` binds its device-writable buffer.
const LATE_BIND_SUBMIT: u64 = 3;

#[derive(Parser, Debug)]
#[command(name = "vkdirty-workload", about = "Headless Vulkan workload: writes mapped memory, checks the GPU saw it")]
struct Args {
    /// Scenarios, comma-separated, or `all`: persistent (whole persistent maps), offset
    /// (persistent map at a non-page-aligned offset, non-coherent), unaligned (map/unmap every
    /// frame at unaligned offsets), remap (map/unmap every frame, non-coherent), threads
    /// (persistent, written from --threads threads), gpu-write (GPU fills and copies into
    /// host-visible memory), gpu-remap (the same into memory unmapped before each submit and
    /// mapped again before the application reads it), mixed (CPU and GPU write different pages of one buffer), churn
    /// (short-lived allocations freed while mapped); only when named: import (the
    /// application's own memory imported with VK_EXT_external_memory_host, written through its
    /// pointer, never mapped), ring (a persistent ring buffer, the next 8 pages each frame),
    /// mixed-late (mixed, but the allocation is bound, mapped and written with a copy-source
    /// buffer only; a buffer the GPU fills is bound to the same memory before the third submit).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    scenario: Vec<String>,
    /// Frames after the initial upload (one submit each).
    #[arg(long, default_value_t = 30)]
    frames: u32,
    /// Base buffer size (suffix K or M allowed); rounded up to the page size.
    #[arg(long, default_value = "256K", value_parser = parse_size)]
    size: u64,
    /// Writer threads of the `threads` scenario.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Seed of the write patterns.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the ground-truth sidecar (JSON lines) here.
    #[arg(long)]
    sidecar: Option<PathBuf>,
    /// Count validation messages (VK_EXT_debug_utils) of warning or error severity; fail when any.
    #[arg(long)]
    validation: bool,
    /// Flush every write, as if all memory were non-coherent (what the `assisted` backend needs).
    #[arg(long)]
    flush: bool,
    /// Host-visible memory types of the written buffers: `first` (the first suitable type) or
    /// `spread` (round-robin over every suitable type, so one run covers a driver's system-memory
    /// and device-local host-visible types).
    #[arg(long, default_value = "first", value_parser = ["first", "spread"])]
    host_types: String,
    /// Also write one persistently mapped allocation with no buffer bound per host-visible
    /// coherent memory type (so every such type is used, also those a driver offers no buffer
    /// of the layer's making; checked through the trace only, not by the GPU).
    #[arg(long)]
    memory_only: bool,
    /// Read what the GPU wrote into HOST_COHERENT memory after the fence wait alone, without
    /// vkInvalidateMappedMemoryRanges (legal: coherent memory needs none). Checks that a layer
    /// showing the application a shadow refreshes it at the host synchronisation point.
    #[arg(long)]
    no_coherent_invalidate: bool,
    /// Print the memory types, and for common buffer usages the memory types of plain and of
    /// host-allocation external buffers (JSON lines), then exit.
    #[arg(long)]
    report_memory: bool,
    /// Pass a layer setting to vkdirty through VK_EXT_layer_settings (`NAME=VALUE`, e.g.
    /// `backend=shadow`; repeatable).
    #[arg(long = "layer-setting", value_name = "NAME=VALUE", value_parser = parse_setting)]
    layer_settings: Vec<(String, String)>,
    /// Pause this long after each frame (paces a run that a test controls while it runs).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    frame_pause_ms: u64,
    /// Print the tools vkGetPhysicalDeviceToolProperties reports (JSON lines), then exit.
    #[arg(long)]
    list_tools: bool,
    /// Map, write and free this many 64 KiB allocations (--rss-rounds times), print the
    /// resident set before, at the peak and after as one JSON line, then exit.
    #[arg(long, value_name = "N")]
    rss_churn: Option<usize>,
    /// Rounds of --rss-churn.
    #[arg(long, default_value_t = 1)]
    rss_rounds: usize,
    /// After --rss-churn, wait (at most 10 s) until the resident set is at most this many KiB
    /// (a capture layer may still be writing what it collected) before reporting `settled_kib`.
    #[arg(long, value_name = "KIB")]
    rss_settle_kib: Option<u64>,
    /// Submit with vkQueueSubmit2KHR (every other submit) and map and unmap with vkMapMemory2KHR /
    /// vkUnmapMemory2KHR, looked up by those names, where the device offers VK_KHR_synchronization2
    /// (with Vulkan 1.3's synchronization2) and VK_KHR_map_memory2; prints a line saying what
    /// went through them.
    #[arg(long)]
    khr_names: bool,
    /// Test aid: make one invalid call, to prove validation messages are caught.
    #[arg(long, hide = true)]
    provoke_validation_error: bool,
    /// After the first frame, fork a child that reads and writes back (unchanged) every page of
    /// every mapping and exits; fail unless it exits 0 (a captured process's child must work).
    #[arg(long)]
    fork: bool,
    /// Test aid: after the first frame's writes, change one mapped byte behind the mirror's
    /// back, to prove the read-back check catches a difference.
    #[arg(long, hide = true)]
    inject_mismatch: bool,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    Ok((k.trim().to_ascii_lowercase(), v.trim().to_string()))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1024),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?} (e.g. 4096, 64K, 2M)"))?;
    let v = n.checked_mul(mul).ok_or_else(|| format!("size {s:?} too large"))?;
    if v == 0 || v > (1 << 30) {
        return Err(format!("size {s:?} out of range (1 byte to 1G)"));
    }
    Ok(v)
}

/// Why a run failed.
enum Failure {
    Vulkan(VkError),
    Check(String),
}

impl From<VkError> for Failure {
    fn from(e: VkError) -> Failure {
        Failure::Vulkan(e)
    }
}

/// Host-visible memory only the GPU writes; the application maps it to check it.
struct GpuTarget {
    buf: Buffer,
    ptr: *mut u8,
    /// Unmapped before each submit, mapped again after it (gpu-remap).
    remap: bool,
    /// Source region in the device-local buffer.
    dl_off: u64,
}

struct World<'a> {
    vk: &'a Vk,
    args: &'a Args,
    page: usize,
    frame: Frame,
    allocs: Vec<HostAlloc>,
    dl: Buffer,
    readback: Buffer,
    rb_ptr: *const u8,
    gpu: Vec<GpuTarget>,
    churn: Option<(u64, u64)>, // (slot, size)
    seed_counter: u64,
    seq: u64,
    total_pages: u64,
    sidecar: Sidecar,
    /// Round-robin position of `--host-types spread`.
    type_rr: std::cell::Cell<usize>,
}

const COPY_ALIGN: u64 = 256;

fn has(args: &Args, s: &str) -> bool {
    args.scenario.iter().any(|x| x == s || x == "all")
}

impl<'a> World<'a> {
    /// The value the GPU fills with at submit `seq`.
    fn fill_value(seq: u64, salt: u32) -> u32 {
        0x5a00_0000 ^ (seq as u32).wrapping_mul(0x9e37_79b9) ^ salt
    }

    /// `gpu_writes`: the device writes it (usage `TRANSFER_DST` too); otherwise it is only a copy
    /// source, memory the device never writes.
    fn host_buffer(&self, size: u64, noncoherent: bool, gpu_writes: bool) -> Result<Buffer, VkError> {
        let usage = if gpu_writes {
            vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST
        } else {
            vk::BufferUsageFlags::TRANSFER_SRC
        };
        let hv = vk::MemoryPropertyFlags::HOST_VISIBLE;
        let coh = vk::MemoryPropertyFlags::HOST_COHERENT;
        let empty = vk::MemoryPropertyFlags::empty();
        let (required, avoided) = if noncoherent { (hv, coh) } else { (hv | coh, empty) };
        if self.args.host_types == "spread" {
            let pick = |bits: u32| {
                let types = self.vk.memory_types_with(bits, required);
                let n = self.type_rr.get();
                self.type_rr.set(n + 1);
                (!types.is_empty()).then(|| types[n % types.len()])
            };
            return self.vk.buffer_picked(size, usage, required, empty, avoided, Some(&pick));
        }
        self.vk.buffer(size, usage, required, empty, avoided)
    }

    /// A distinct write-pattern seed per allocation, derived from `--seed`.
    fn next_seed(&mut self) -> u64 {
        self.seed_counter += 1;
        self.args.seed.wrapping_mul(0x1_0000_0001).wrapping_add(self.seed_counter)
    }

    fn new_alloc(
        &mut self,
        scenario: &'static str,
        b: Behaviour,
        size: u64,
        noncoherent: bool,
    ) -> Result<HostAlloc, VkError> {
        // Only a mixed buffer is written by the GPU too (mixed-late: by a buffer bound later).
        let buf = self.host_buffer(size, noncoherent, b == Behaviour::Mixed && scenario != "mixed-late")?;
        let coherent = self.vk.type_flags(buf.memory_type).contains(vk::MemoryPropertyFlags::HOST_COHERENT);
        let seed = self.next_seed();
        let mut a = HostAlloc::new(scenario, b, buf, coherent, !coherent || noncoherent || self.args.flush, seed);
        if scenario == "mixed-late" {
            a.gpu_buffer = None;
        }
        if b == Behaviour::Mixed {
            a.cpu_range = (0, size / 2);
            a.copy_len = size / 2;
        }
        Ok(a)
    }

    fn record_alloc(&mut self, a: &HostAlloc) {
        let mut v = json!({
            "kind": "alloc", "handle": vk::Handle::as_raw(a.buf.memory), "alloc_index": a.buf.alloc_index, "size": a.size(),
            "scenario": a.scenario, "memory_type": a.buf.memory_type, "coherent": a.coherent,
            "gpu_written": false, "cpu_range": [a.cpu_range.0, a.cpu_range.1],
        });
        if a.behaviour == Behaviour::Mixed {
            v["gpu_range"] = json!([a.cpu_range.1, a.size() - a.cpu_range.1]);
        }
        self.sidecar.record(v);
    }

    fn record_gpu_alloc(&mut self, scenario: &str, b: &Buffer) {
        self.sidecar.record(json!({
            "kind": "alloc", "handle": vk::Handle::as_raw(b.memory), "alloc_index": b.alloc_index, "size": b.alloc_size,
            "scenario": scenario, "memory_type": b.memory_type,
            "coherent": self.vk.type_flags(b.memory_type).contains(vk::MemoryPropertyFlags::HOST_COHERENT),
            "gpu_written": true,
        }));
    }

    fn setup(vk: &'a Vk, args: &'a Args, sidecar: Sidecar) -> Result<World<'a>, Failure> {
        let page = mem::page_size();
        let s = args.size.next_multiple_of(page as u64).max(2 * page as u64);
        let frame = Frame::new(vk)?;
        let placeholder = Buffer {
            buffer: vk::Buffer::null(),
            memory: vk::DeviceMemory::null(),
            size: 0,
            alloc_size: 0,
            memory_type: 0,
            alloc_index: 0,
        };
        let mut w = World {
            vk,
            args,
            page,
            frame,
            allocs: Vec::new(),
            dl: placeholder,
            readback: placeholder,
            rb_ptr: std::ptr::null(),
            gpu: Vec::new(),
            churn: None,
            seed_counter: 0,
            seq: 0,
            total_pages: 0,
            sidecar,
            type_rr: std::cell::Cell::new(0),
        };
        let mut allocs = Vec::new();
        if has(args, "persistent") {
            allocs.push(w.new_alloc("persistent", Behaviour::Persistent, s, false)?);
            allocs.push(w.new_alloc("persistent", Behaviour::Persistent, 2 * s, false)?);
        }
        if has(args, "offset") {
            allocs.push(w.new_alloc("offset", Behaviour::Offset, s + 2 * page as u64, true)?);
        }
        if has(args, "unaligned") {
            allocs.push(w.new_alloc("unaligned", Behaviour::Unaligned, s, false)?);
        }
        if has(args, "remap") {
            allocs.push(w.new_alloc("remap", Behaviour::Remap, s, true)?);
        }
        if has(args, "threads") {
            allocs.push(w.new_alloc("threads", Behaviour::Threads, s * args.threads.max(1) as u64, false)?);
        }
        if args.scenario.iter().any(|x| x == "ring") {
            allocs.push(w.new_alloc("ring", Behaviour::Ring, 4 * s, false)?);
        }
        if args.scenario.iter().any(|x| x == "import") {
            let (buf, ptr) = vk.imported_buffer(s)?;
            let seed = w.next_seed();
            let mut a = HostAlloc::new("import", Behaviour::Persistent, buf, true, false, seed);
            a.imported = Some(ptr);
            allocs.push(a);
        }
        if has(args, "mixed") {
            // At least four pages per part of the CPU half (two parts, each with a gap page).
            allocs.push(w.new_alloc("mixed", Behaviour::Mixed, 2 * s.max(8 * page as u64), false)?);
        }
        if args.scenario.iter().any(|x| x == "mixed-late") {
            allocs.push(w.new_alloc("mixed-late", Behaviour::Mixed, 2 * s.max(8 * page as u64), false)?);
        }
        if args.memory_only {
            let coherent = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
            for ty in vk.memory_types_with(!0, coherent) {
                let buf = vk.memory_only(s, ty)?;
                let seed = w.next_seed();
                let mut a = HostAlloc::new("memory-only", Behaviour::Persistent, buf, true, args.flush, seed);
                a.copy_len = 0;
                allocs.push(a);
            }
        }
        // Device-local and read-back layout: one slot per allocation, then churn, then the
        // gpu-write source.
        let mut off = 0u64;
        for a in &mut allocs {
            a.slot = off;
            off = (off + a.copy_len).next_multiple_of(COPY_ALIGN);
        }
        let churn_size = (64 * 1024u64).min(s);
        if has(args, "churn") {
            w.churn = Some((off, churn_size));
            off = (off + churn_size).next_multiple_of(COPY_ALIGN);
        }
        let rb_size = off.max(COPY_ALIGN);
        let mut dl_size = rb_size;
        let gpu_size = s;
        let targets: Vec<(&str, bool)> =
            [("gpu-write", false), ("gpu-remap", true)].into_iter().filter(|(n, _)| has(args, n)).collect();
        dl_size += targets.len() as u64 * (gpu_size / 2);
        let usage = vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST;
        w.dl = vk
            .buffer(
                dl_size,
                usage,
                vk::MemoryPropertyFlags::DEVICE_LOCAL,
                vk::MemoryPropertyFlags::empty(),
                vk::MemoryPropertyFlags::HOST_VISIBLE,
            )
            .or_else(|_| {
                vk.buffer(
                    dl_size,
                    usage,
                    vk::MemoryPropertyFlags::empty(),
                    vk::MemoryPropertyFlags::empty(),
                    vk::MemoryPropertyFlags::empty(),
                )
            })?;
        w.readback = vk.buffer(
            rb_size,
            usage,
            vk::MemoryPropertyFlags::HOST_VISIBLE,
            vk::MemoryPropertyFlags::HOST_CACHED,
            vk::MemoryPropertyFlags::empty(),
        )?;
        w.rb_ptr = vk.map(w.readback.memory, 0, vk::WHOLE_SIZE)?;
        let rb = w.readback;
        w.record_gpu_alloc("readback", &rb);
        for (i, (name, remap)) in targets.into_iter().enumerate() {
            let buf = w.host_buffer(gpu_size, false, true)?;
            let ptr = vk.map(buf.memory, 0, vk::WHOLE_SIZE)?;
            w.gpu.push(GpuTarget { buf, ptr, remap, dl_off: rb_size + i as u64 * (gpu_size / 2) });
            w.record_gpu_alloc(name, &buf);
        }
        for a in &allocs {
            w.record_alloc(a);
        }
        w.allocs = allocs;
        Ok(w)
    }

    /// Initial upload: every byte of the CPU range written before the first submit.
    fn init_alloc(&self, a: &mut HostAlloc) -> Result<(), VkError> {
        let vk = self.vk;
        a.map(vk, 0, vk::WHOLE_SIZE)?;
        let (o, l) = a.cpu_range;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut at = o;
        while at < o + l {
            let n = (o + l - at).min(chunk.len() as u64) as usize;
            a.rng.fill(&mut chunk[..n]);
            a.write(at, &chunk[..n], self.page);
            at += n as u64;
        }
        a.flush(vk)?;
        match a.behaviour {
            Behaviour::Persistent | Behaviour::Threads | Behaviour::Mixed | Behaviour::Churn | Behaviour::Ring => {}
            Behaviour::Offset => {
                a.unmap(vk);
                // Atom-aligned (flushable) but not page-aligned; ends before the allocation does.
                let off = self.page as u64 + 3 * vk.atom;
                let size = ((a.size() - off - self.page as u64) / vk.atom * vk.atom).max(vk.atom);
                a.map(vk, off, size)?;
            }
            Behaviour::Unaligned | Behaviour::Remap => a.unmap(vk),
        }
        Ok(())
    }

    fn runs(a: &mut HostAlloc, area: u64) -> Vec<(u64, u64)> {
        let count = 4 + a.rng.below(8) as usize;
        gen_runs(&mut a.rng, area, count, mem::page_size() as u64)
    }

    fn frame_writes(&self, a: &mut HostAlloc) -> Result<(), VkError> {
        let vk = self.vk;
        let page = self.page;
        match a.behaviour {
            Behaviour::Persistent | Behaviour::Offset | Behaviour::Churn => {
                let m = a.map.expect("persistently mapped");
                let runs = Self::runs(a, m.size);
                a.write_runs(m.offset, &runs, page);
                a.flush(vk)?;
            }
            Behaviour::Mixed => {
                // Leave a page of gap before the GPU's half, so no page holds both.
                let area = a.cpu_range.1 - page as u64;
                let runs = Self::runs(a, area);
                a.write_runs(0, &runs, page);
                a.flush(vk)?;
            }
            Behaviour::Ring => a.write_ring(RING_PAGES, page),
            Behaviour::Threads => {
                let n = 3 + a.rng.below(6) as usize;
                a.write_parallel(self.args.threads.max(1), n, page);
                a.flush(vk)?;
            }
            Behaviour::Remap => {
                a.map(vk, 0, vk::WHOLE_SIZE)?;
                let runs = Self::runs(a, a.size());
                a.write_runs(0, &runs, page);
                a.flush(vk)?;
                a.unmap(vk);
            }
            Behaviour::Unaligned => {
                let size = a.size();
                let mut off = 1 + a.rng.below(size / 2);
                if a.flushes {
                    off = (off / vk.atom * vk.atom).max(vk.atom);
                }
                if off % page as u64 == 0 {
                    off += if a.flushes { vk.atom } else { 1 };
                }
                let whole = a.rng.below(2) == 0;
                let len = if whole {
                    vk::WHOLE_SIZE
                } else {
                    let mut l = 1 + a.rng.below(size - off);
                    if a.flushes {
                        l = l.next_multiple_of(vk.atom).min(size - off);
                    }
                    l
                };
                a.map(vk, off, len)?;
                let m = a.map.expect("just mapped");
                let runs = Self::runs(a, m.size);
                a.write_runs(m.offset, &runs, page);
                a.flush(vk)?;
                a.unmap(vk);
            }
        }
        a.age += 1;
        Ok(())
    }

    /// Writes of this frame (frame 0: the initial upload), then one submit, then the checks.
    fn run_frame(&mut self, f: u32) -> Result<(), Failure> {
        let vk = self.vk;
        let mut allocs = std::mem::take(&mut self.allocs);
        let result = (|| -> Result<(), VkError> {
            for a in allocs.iter_mut() {
                if f == 0 {
                    self.init_alloc(a)?;
                } else {
                    self.frame_writes(a)?;
                }
            }
            if let Some((slot, size)) = self.churn {
                if !allocs.iter().any(|a| a.behaviour == Behaviour::Churn) {
                    let mut a = self.new_alloc("churn", Behaviour::Churn, size, false)?;
                    a.slot = slot;
                    self.record_alloc(&a);
                    self.init_alloc(&mut a)?;
                    allocs.push(a);
                }
            }
            Ok(())
        })();
        self.allocs = allocs;
        result?;
        if f == 1 && self.args.inject_mismatch {
            if let Some(m) = self.allocs.iter().find_map(|a| a.map) {
                // SAFETY: the first byte of a live mapping; no submit is pending.
                unsafe { *m.ptr ^= 0xff };
            }
        }

        let seq = self.seq + 1;
        if seq == LATE_BIND_SUBMIT {
            // The allocation has been mapped and written for two submits: now a buffer that
            // lets the device write it is bound to it, as a sub-allocator binds one later.
            for a in self.allocs.iter_mut().filter(|a| a.scenario == "mixed-late") {
                let usage = vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST;
                a.gpu_buffer = Some(vk.buffer_on(a.buf.memory, a.buf.size, usage)?);
            }
        }
        let fr = &self.frame;
        fr.begin(vk)?;
        let page = self.page as u64;
        for a in self.allocs.iter().filter(|a| a.copy_len > 0) {
            let (o, l) = a.checked(seq, page);
            fr.copy(vk, a.buf.buffer, self.dl.buffer, o, a.slot + o, l);
        }
        for g in &self.gpu {
            fr.fill(vk, self.dl.buffer, g.dl_off, g.buf.size / 2, Self::fill_value(seq, 1));
        }
        fr.barrier(vk, false);
        for a in self.allocs.iter().filter(|a| a.copy_len > 0) {
            let (o, l) = a.checked(seq, page);
            fr.copy(vk, self.dl.buffer, self.readback.buffer, a.slot + o, a.slot + o, l);
            if let (Behaviour::Mixed, Some(dst)) = (a.behaviour, a.gpu_buffer) {
                let (o, l) = a.cpu_range;
                fr.fill(vk, dst, o + l, a.buf.size - (o + l), Self::fill_value(seq, 2));
            }
        }
        for g in &self.gpu {
            let half = g.buf.size / 2;
            fr.fill(vk, g.buf.buffer, 0, half, Self::fill_value(seq, 3));
            fr.copy(vk, self.dl.buffer, g.buf.buffer, g.dl_off, half, g.buf.size - half);
        }
        fr.barrier(vk, true);

        // Ground truth at this submit.
        // Pages per allocation: two allocations mapped one after the other at the same address
        // (an address reused within the interval) wrote two pages, as the trace records them.
        let mut all_pages = 0usize;
        let mut entries = Vec::new();
        for a in self.allocs.iter_mut() {
            let (o, l) = a.cpu_range;
            entries.push(json!({
                "handle": vk::Handle::as_raw(a.buf.memory), "size": a.size(), "offset": o, "len": l,
                "hash": hex(a.hash()), "pages": a.pages.len(),
            }));
            all_pages += a.pages.len();
            a.pages.clear();
        }
        self.total_pages += all_pages as u64;
        self.sidecar.record(json!({ "kind": "submit", "seq": seq, "pages": all_pages, "allocs": entries }));

        for g in self.gpu.iter().filter(|g| g.remap) {
            vk.unmap(g.buf.memory);
        }
        self.frame.submit(vk, vk.sync2 && seq % 2 == 0)?;
        // While the GPU runs: the CPU writes the part of each mixed buffer this submit does not
        // read. These writes belong to the next submit.
        let mut allocs = std::mem::take(&mut self.allocs);
        let concurrent = (|| -> Result<(), VkError> {
            for a in allocs.iter_mut().filter(|a| a.behaviour == Behaviour::Mixed) {
                let (o, l) = a.mixed_parts(page)[((seq + 1) % 2) as usize];
                let runs = Self::runs(a, l);
                a.write_runs(o, &runs, self.page);
                a.flush(vk)?;
            }
            Ok(())
        })();
        self.allocs = allocs;
        let waited = self.frame.wait(vk);
        concurrent?;
        waited?;
        for g in self.gpu.iter_mut().filter(|g| g.remap) {
            // Mapped again after the GPU wrote it: what the application reads must be the GPU's.
            g.ptr = vk.map(g.buf.memory, 0, vk::WHOLE_SIZE)?;
        }
        self.seq = seq;
        self.check(f)?;

        // A churn allocation lives three submits, then is freed while still mapped.
        if let Some(i) = self.allocs.iter().position(|a| a.behaviour == Behaviour::Churn && a.age >= 2) {
            let a = self.allocs.remove(i);
            vk.free(&a.buf);
            self.sidecar.record(
                json!({ "kind": "free", "handle": vk::Handle::as_raw(a.buf.memory), "after_submit": self.seq }),
            );
        }
        Ok(())
    }

    /// Invalidates before reading GPU-written bytes, except coherent memory with
    /// `--no-coherent-invalidate`.
    fn invalidate(&self, memory_type: u32, ranges: &[vk::MappedMemoryRange<'_>]) -> Result<(), VkError> {
        let coherent = self.vk.type_flags(memory_type).contains(vk::MemoryPropertyFlags::HOST_COHERENT);
        if coherent && self.args.no_coherent_invalidate {
            return Ok(());
        }
        self.vk.invalidate(ranges)
    }

    fn check(&self, f: u32) -> Result<(), Failure> {
        let seq = self.seq;
        let whole = |m: vk::DeviceMemory| [vk::MappedMemoryRange::default().memory(m).offset(0).size(vk::WHOLE_SIZE)];
        self.invalidate(self.readback.memory_type, &whole(self.readback.memory))?;
        for a in self.allocs.iter().filter(|a| a.copy_len > 0) {
            let (o, l) = a.checked(seq, self.page as u64);
            // SAFETY: the read-back buffer is mapped whole and the submit writing it completed.
            let got = unsafe { std::slice::from_raw_parts(self.rb_ptr.add((a.slot + o) as usize), l as usize) };
            let want = &a.mirror[o as usize..(o + l) as usize];
            compare(
                &format!("{} allocation {:#x}: GPU read-back of {o}+{l}", a.scenario, vk::Handle::as_raw(a.buf.memory)),
                f,
                want,
                got,
            )?;
        }
        for a in &self.allocs {
            // Only once the GPU fills it (mixed-late: from the late bind on).
            if a.behaviour != Behaviour::Mixed || a.gpu_buffer.is_none() {
                continue;
            }
            let m = a.map.expect("mixed is persistently mapped");
            let (o, l) = a.cpu_range;
            let start = o + l;
            self.invalidate(
                a.buf.memory_type,
                &[vk::MappedMemoryRange::default().memory(a.buf.memory).offset(start).size(vk::WHOLE_SIZE)],
            )?;
            let n = (a.buf.size - start) as usize;
            // SAFETY: mapped whole; the GPU's fill completed.
            let got = unsafe { std::slice::from_raw_parts(m.ptr.add(start as usize), n) };
            let want = pattern(Self::fill_value(seq, 2), n);
            compare(
                &format!("mixed allocation {:#x}: GPU-filled half", vk::Handle::as_raw(a.buf.memory)),
                f,
                &want,
                got,
            )?;
        }
        for g in &self.gpu {
            let what = if g.remap { "gpu-remap" } else { "gpu-write" };
            self.invalidate(g.buf.memory_type, &whole(g.buf.memory))?;
            let half = (g.buf.size / 2) as usize;
            // SAFETY: mapped whole; the GPU's writes completed.
            let got = unsafe { std::slice::from_raw_parts(g.ptr, g.buf.size as usize) };
            compare(
                &format!("{what}: vkCmdFillBuffer into host-visible memory"),
                f,
                &pattern(Self::fill_value(seq, 3), half),
                &got[..half],
            )?;
            compare(
                &format!("{what}: copy into host-visible memory"),
                f,
                &pattern(Self::fill_value(seq, 1), g.buf.size as usize - half),
                &got[half..],
            )?;
        }
        Ok(())
    }

    /// `--fork`: the child touches every mapped page (same value back) and exits with 0; a
    /// child killed by a signal or exiting otherwise is a failure.
    fn fork_child_touches_mappings(&self) -> Result<(), Failure> {
        let maps: Vec<Mapping> = self.allocs.iter().filter_map(|a| a.map).collect();
        let page = self.page;
        // SAFETY: the child only reads and writes memory mapped before the fork and leaves
        // with _exit (no allocation, no locks: other threads' state is not in the child).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Failure::Check(format!("fork failed: {}", std::io::Error::last_os_error())));
        }
        if pid == 0 {
            for m in &maps {
                let mut off = 0usize;
                while off < m.size as usize {
                    let p = m.ptr.wrapping_add(off);
                    // SAFETY: inside a mapping the parent made; the same byte is written back.
                    unsafe { p.write_volatile(p.read_volatile()) };
                    off += page;
                }
            }
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
            return Err(Failure::Check(format!("waitpid: {}", std::io::Error::last_os_error())));
        }
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            Ok(())
        } else if libc::WIFSIGNALED(status) {
            Err(Failure::Check(format!(
                "fork: the child writing {} mapping(s) died of signal {}",
                maps.len(),
                libc::WTERMSIG(status)
            )))
        } else {
            Err(Failure::Check(format!("fork: the child exited with status {status:#x}")))
        }
    }

    fn provoke_validation_error(&self) -> Result<(), VkError> {
        // Offset 1 is not a multiple of nonCoherentAtomSize (VUID-VkMappedMemoryRange-offset-00687).
        let r = [vk::MappedMemoryRange::default().memory(self.readback.memory).offset(1).size(vk::WHOLE_SIZE)];
        self.vk.flush(&r)
    }

    fn teardown(mut self) {
        let vk = self.vk;
        for a in self.allocs.iter_mut() {
            a.unmap(vk);
            if let Some(b) = a.gpu_buffer.filter(|&b| b != a.buf.buffer) {
                vk.destroy_buffer(b);
            }
            vk.free(&a.buf);
        }
        for g in std::mem::take(&mut self.gpu) {
            vk.unmap(g.buf.memory);
            vk.free(&g.buf);
        }
        vk.unmap(self.readback.memory);
        vk.free(&self.readback);
        vk.free(&self.dl);
        self.frame.destroy(vk);
    }
}

fn pattern(v: u32, n: usize) -> Vec<u8> {
    v.to_le_bytes().iter().copied().cycle().take(n).collect()
}

fn compare(what: &str, frame: u32, want: &[u8], got: &[u8]) -> Result<(), Failure> {
    if let Some(i) = want.iter().zip(got).position(|(a, b)| a != b) {
        let bad = want.iter().zip(got).filter(|(a, b)| a != b).count();
        return Err(Failure::Check(format!(
            "{what}: frame {frame}: {bad} of {} bytes differ, first at offset {i} (expected {:#04x}, got {:#04x})",
            want.len(),
            want[i],
            got[i]
        )));
    }
    Ok(())
}

fn run(args: &Args) -> ExitCode {
    for s in &args.scenario {
        if s != "all" && !SCENARIOS.contains(&s.as_str()) && !EXTRA_SCENARIOS.contains(&s.as_str()) {
            eprintln!(
                "vkdirty-workload: unknown scenario {s:?}; known: all, {}, {}",
                SCENARIOS.join(", "),
                EXTRA_SCENARIOS.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    let mut sidecar = match Sidecar::create(args.sidecar.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vkdirty-workload: cannot create sidecar {:?}: {e}", args.sidecar);
            return ExitCode::from(2);
        }
    };
    let mut names: Vec<&str> = SCENARIOS.iter().copied().filter(|s| has(args, s)).collect();
    names.extend(EXTRA_SCENARIOS.iter().copied().filter(|s| args.scenario.iter().any(|x| x == s)));
    sidecar.header(mem::page_size(), args.seed, args.frames, &names);

    let host_import = args.scenario.iter().any(|x| x == "import");
    let vk = match Vk::new(args.validation, host_import, &args.layer_settings, args.khr_names) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("vkdirty-workload: Vulkan set-up failed: {e}");
            return ExitCode::from(3);
        }
    };
    if let Some(n) = args.rss_churn {
        return match rss::churn(&vk, n, args.rss_rounds.max(1), args.rss_settle_kib) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vkdirty-workload: {e}");
                ExitCode::from(3)
            }
        };
    }
    if args.list_tools {
        let r = probe::list_tools(&vk);
        let (count, _) = vkctx::validation_messages();
        return match r {
            Ok(()) if vk.validating && count > 0 => {
                eprintln!("vkdirty-workload: {count} validation messages");
                ExitCode::from(1)
            }
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vkdirty-workload: {e}");
                ExitCode::from(3)
            }
        };
    }
    if args.report_memory {
        return match probe::report(&vk) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vkdirty-workload: {e}");
                ExitCode::from(3)
            }
        };
    }
    let device_name = vk.device_name.clone();
    let validating = vk.validating;
    let mut outcome: Result<(), Failure> = Ok(());
    let mut world = None;
    match World::setup(&vk, args, sidecar) {
        Ok(w) => world = Some(w),
        Err(e) => outcome = Err(e),
    }
    if let Some(w) = &mut world {
        if args.provoke_validation_error {
            outcome = w.provoke_validation_error().map_err(Failure::Vulkan);
        }
        for f in 0..=args.frames {
            if outcome.is_err() {
                break;
            }
            outcome = w.run_frame(f);
            if f == 0 && args.fork && outcome.is_ok() {
                outcome = w.fork_child_touches_mappings();
            }
            if args.frame_pause_ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(args.frame_pause_ms));
            }
        }
    }
    if let Some(k) = &vk.khr {
        println!("vkdirty-workload: {}", k.describe());
    }
    let (submits, pages, mut sidecar) = match world {
        Some(mut w) => {
            let s = std::mem::replace(&mut w.sidecar, Sidecar::create(None).expect("no file"));
            let r = (w.seq, w.total_pages, s);
            w.teardown();
            r
        }
        None => (0, 0, Sidecar::create(None).expect("no file")),
    };
    drop(vk);

    let mut errors = Vec::new();
    match &outcome {
        Err(Failure::Vulkan(e)) => errors.push(format!("Vulkan call failed: {e}")),
        Err(Failure::Check(e)) => errors.push(format!("check failed: {e}")),
        Ok(()) => {}
    }
    let (count, msgs) = vkctx::validation_messages();
    if count > 0 {
        errors.push(format!("{count} validation message(s) of warning or error severity"));
        for m in msgs.iter().take(20) {
            eprintln!("vkdirty-workload:   {m}");
        }
    }
    let ok = errors.is_empty();
    let mut end = json!({ "kind": "end", "submits": submits, "pages": pages, "ok": ok });
    if !ok {
        end["error"] = json!(errors.join("; "));
    }
    sidecar.record(end);
    if let Err(e) = sidecar.finish() {
        errors.push(format!("cannot write the sidecar: {e}"));
    }
    if errors.is_empty() {
        println!(
            "vkdirty-workload: ok: {submits} submits, {pages} pages written, scenarios {} on {device_name}{}",
            names.join(","),
            if validating { ", no validation message" } else { "" }
        );
        ExitCode::SUCCESS
    } else {
        for e in &errors {
            eprintln!("vkdirty-workload: {e}");
        }
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    run(&Args::parse())
}
