//! Host-visible allocations the application writes, each with a CPU-side mirror of what was
//! written, the pages touched since the last submit, and the ranges still to flush.

use crate::vkctx::{Buffer, Vk, VkError};
use ash::vk;
use std::collections::BTreeSet;

/// SplitMix64: small, seedable, deterministic.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// Write runs `(offset, len)` inside an area of `area` bytes: small unaligned ones, larger ones
/// crossing pages, and whole pages (aligned to `page` from the area's start).
pub fn gen_runs(rng: &mut Rng, area: u64, count: usize, page: u64) -> Vec<(u64, u64)> {
    let mut runs = Vec::with_capacity(count);
    for _ in 0..count {
        let (off, len) = match rng.below(3) {
            0 => {
                let len = 1 + rng.below(64);
                (rng.below(area), len)
            }
            1 => {
                let len = 65 + rng.below(6000);
                (rng.below(area), len)
            }
            _ => {
                let pages = (area / page).max(1);
                (rng.below(pages) * page, page)
            }
        };
        let off = off.min(area - 1);
        let len = len.min(area - off);
        runs.push((off, len));
    }
    runs
}

#[derive(Clone, Copy, Debug)]
pub struct Mapping {
    pub ptr: *mut u8,
    pub offset: u64,
    pub size: u64,
}

/// What a scenario does with an allocation each frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Persistently mapped whole.
    Persistent,
    /// Persistently mapped at an offset that is not page-aligned, with an explicit size.
    Offset,
    /// Mapped and unmapped every frame at unaligned offsets and sizes.
    Unaligned,
    /// Mapped whole and unmapped every frame.
    Remap,
    /// Persistently mapped; written from several threads, disjoint pages each.
    Threads,
    /// Persistently mapped; the CPU writes the first half, the GPU fills the second. The CPU
    /// also writes one quarter while the GPU runs (filling the second half and copying the
    /// other quarter).
    Mixed,
    /// Short-lived: allocated, written, then freed while still mapped.
    Churn,
    /// Persistently mapped; a ring buffer: the next pages each frame, wrapping at the end (what
    /// write prediction predicts).
    Ring,
}

pub struct HostAlloc {
    pub scenario: &'static str,
    pub behaviour: Behaviour,
    pub buf: Buffer,
    pub coherent: bool,
    /// The application flushes what it writes (non-coherent memory, or `--flush`).
    pub flushes: bool,
    pub mirror: Vec<u8>,
    pub map: Option<Mapping>,
    /// `(offset, len)` of the bytes only the CPU writes.
    pub cpu_range: (u64, u64),
    /// Pages (virtual page numbers) written since the last submit.
    pub pages: BTreeSet<usize>,
    pending_flush: Vec<(u64, u64)>,
    cached_hash: Option<u64>,
    /// Offset of this allocation's copy in the device-local and read-back buffers.
    pub slot: u64,
    /// Bytes copied through the GPU and compared after each submit (from offset 0; `Mixed`
    /// alternates between its two quarters, see [`HostAlloc::checked`]).
    pub copy_len: u64,
    pub rng: Rng,
    /// Frames lived (churn).
    pub age: u32,
    /// Host memory the application imported (`VK_EXT_external_memory_host`): written through
    /// this pointer, never passed to vkMapMemory.
    pub imported: Option<*mut u8>,
    /// `Mixed`: the buffer the GPU fills (the allocation's own; for `mixed-late` a second
    /// buffer bound to the same memory once the allocation was mapped and written, `None` until
    /// then).
    pub gpu_buffer: Option<vk::Buffer>,
}

impl HostAlloc {
    pub fn new(
        scenario: &'static str,
        behaviour: Behaviour,
        buf: Buffer,
        coherent: bool,
        flushes: bool,
        seed: u64,
    ) -> HostAlloc {
        HostAlloc {
            scenario,
            behaviour,
            buf,
            coherent,
            flushes,
            mirror: vec![0; buf.alloc_size as usize],
            map: None,
            cpu_range: (0, buf.alloc_size),
            pages: BTreeSet::new(),
            pending_flush: Vec::new(),
            cached_hash: None,
            slot: 0,
            copy_len: buf.size,
            rng: Rng::new(seed),
            age: 0,
            imported: None,
            gpu_buffer: (behaviour == Behaviour::Mixed).then_some(buf.buffer),
        }
    }

    /// The allocation's size (what mappings span), not the buffer's.
    #[allow(clippy::misnamed_getters)]
    pub fn size(&self) -> u64 {
        self.buf.alloc_size
    }

    pub fn map(&mut self, vk: &Vk, offset: u64, size: u64) -> Result<(), VkError> {
        assert!(self.map.is_none(), "already mapped");
        let size = if size == vk::WHOLE_SIZE { self.size() - offset } else { size };
        if let Some(p) = self.imported {
            // Imported memory is the application's own: its pointer, no vkMapMemory.
            self.map = Some(Mapping { ptr: p.wrapping_add(offset as usize), offset, size });
            return Ok(());
        }
        let ptr = vk.map(self.buf.memory, offset, size)?;
        let size = if size == vk::WHOLE_SIZE { self.size() - offset } else { size };
        self.map = Some(Mapping { ptr, offset, size });
        Ok(())
    }

    pub fn unmap(&mut self, vk: &Vk) {
        if self.map.take().is_some() && self.imported.is_none() {
            vk.unmap(self.buf.memory);
        }
    }

    fn note_write(&mut self, addr: usize, off: u64, len: u64, page: usize) {
        for p in addr / page..=(addr + len as usize - 1) / page {
            self.pages.insert(p);
        }
        self.pending_flush.push((off, len));
        self.cached_hash = None;
    }

    /// Writes `data` at allocation offset `off`, which must lie inside the mapping.
    pub fn write(&mut self, off: u64, data: &[u8], page: usize) {
        if data.is_empty() {
            return;
        }
        let m = self.map.expect("write to an unmapped allocation");
        assert!(off >= m.offset && off + data.len() as u64 <= m.offset + m.size, "write outside the mapping");
        let dst = m.ptr.wrapping_add((off - m.offset) as usize);
        // SAFETY: dst..dst+len lies inside the live mapping (checked above); the GPU does not
        // access these bytes while the CPU writes (every submit is waited for).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        self.mirror[off as usize..off as usize + data.len()].copy_from_slice(data);
        self.note_write(dst as usize, off, data.len() as u64, page);
    }

    /// Writes random bytes at `runs` (offsets relative to `base`).
    pub fn write_runs(&mut self, base: u64, runs: &[(u64, u64)], page: usize) {
        let mut buf = Vec::new();
        for &(o, l) in runs {
            buf.resize(l as usize, 0);
            self.rng.fill(&mut buf);
            self.write(base + o, &buf, page);
        }
    }

    /// The ring's frame: 256 bytes into each of the `pages` pages after the last frame's.
    pub fn write_ring(&mut self, pages: u64, page: usize) {
        let m = self.map.expect("persistently mapped");
        let count = m.size / page as u64;
        let mut buf = [0u8; 256];
        for i in 0..pages {
            let at = (u64::from(self.age) * pages + i) % count * page as u64;
            self.rng.fill(&mut buf);
            self.write(m.offset + at, &buf, page);
        }
    }

    /// Writes from `threads` threads, each into its own pages of the mapping (split at
    /// virtual page boundaries), `runs_per_thread` runs each.
    pub fn write_parallel(&mut self, threads: usize, runs_per_thread: usize, page: usize) {
        let m = self.map.expect("write to an unmapped allocation");
        let base = m.ptr as usize;
        let end = base + m.size as usize;
        let mut bounds = vec![base];
        for i in 1..threads {
            let target = base + m.size as usize * i / threads;
            let b = target.next_multiple_of(page).clamp(*bounds.last().unwrap(), end);
            bounds.push(b);
        }
        bounds.push(end);
        let seeds: Vec<u64> = (0..threads).map(|_| self.rng.next()).collect();
        let mut rest = &mut self.mirror[m.offset as usize..(m.offset + m.size) as usize];
        let mut jobs = Vec::new();
        for t in 0..threads {
            let (chunk, tail) = rest.split_at_mut(bounds[t + 1] - bounds[t]);
            rest = tail;
            jobs.push((chunk, bounds[t], seeds[t]));
        }
        let results: Vec<(Vec<usize>, Vec<(u64, u64)>)> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(chunk, addr, seed)| {
                    s.spawn(move || {
                        let mut pages = Vec::new();
                        let mut ranges = Vec::new();
                        if chunk.is_empty() {
                            return (pages, ranges);
                        }
                        let mut rng = Rng::new(seed);
                        let mut data = Vec::new();
                        for (o, l) in gen_runs(&mut rng, chunk.len() as u64, runs_per_thread, page as u64) {
                            data.resize(l as usize, 0);
                            rng.fill(&mut data);
                            let dst = (addr + o as usize) as *mut u8;
                            // SAFETY: dst..dst+l lies in this thread's part of the live mapping;
                            // the parts are disjoint and no submit is pending.
                            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
                            chunk[o as usize..(o + l) as usize].copy_from_slice(&data);
                            for p in (addr + o as usize) / page..=(addr + (o + l) as usize - 1) / page {
                                pages.push(p);
                            }
                            ranges.push((o, l));
                        }
                        (pages, ranges)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("writer thread")).collect()
        });
        for (t, (pages, ranges)) in results.into_iter().enumerate() {
            self.pages.extend(pages);
            let chunk_off = m.offset + (bounds[t] - base) as u64;
            self.pending_flush.extend(ranges.into_iter().map(|(o, l)| (chunk_off + o, l)));
        }
        self.cached_hash = None;
    }

    /// Flushes what was written since the last flush (when this allocation flushes): ranges
    /// widened to the atom size and clipped to the mapping.
    pub fn flush(&mut self, vk: &Vk) -> Result<(), VkError> {
        let pending = std::mem::take(&mut self.pending_flush);
        if !self.flushes || pending.is_empty() {
            return Ok(());
        }
        let m = self.map.expect("flush of an unmapped allocation");
        let atom = vk.atom;
        let map_end = m.offset + m.size;
        let mut ranges: Vec<(u64, u64)> = pending
            .into_iter()
            .map(|(o, l)| {
                let s = (o / atom * atom).max(m.offset);
                let e = (o + l).next_multiple_of(atom).min(map_end);
                (s, e)
            })
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (s, e) in ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let mmr: Vec<vk::MappedMemoryRange<'_>> = merged
            .iter()
            .map(|&(s, e)| vk::MappedMemoryRange::default().memory(self.buf.memory).offset(s).size(e - s))
            .collect();
        vk.flush(&mmr)
    }

    /// `Mixed`: the two parts of the CPU range, a gap page after each (the second part's gap
    /// separates it from the GPU's half).
    pub fn mixed_parts(&self, page: u64) -> [(u64, u64); 2] {
        let half = self.cpu_range.1;
        let q = half / 2 / page * page;
        [(0, q - page), (q, half - page - q)]
    }

    /// The bytes the GPU copies back for checking at submit `seq`: the whole `copy_len`, or for
    /// `Mixed` one part (the CPU writes the other one while the GPU runs).
    pub fn checked(&self, seq: u64, page: u64) -> (u64, u64) {
        if self.behaviour == Behaviour::Mixed {
            self.mixed_parts(page)[(seq % 2) as usize]
        } else {
            (0, self.copy_len)
        }
    }

    /// FNV-1a of the CPU range of the mirror, cached until the next write.
    pub fn hash(&mut self) -> u64 {
        if let Some(h) = self.cached_hash {
            return h;
        }
        let (o, l) = self.cpu_range;
        let h = crate::sidecar::fnv1a64(&self.mirror[o as usize..(o + l) as usize]);
        self.cached_hash = Some(h);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_stay_inside_the_area() {
        let mut rng = Rng::new(7);
        for area in [1u64, 63, 4096, 10_000, 1 << 20] {
            for (o, l) in gen_runs(&mut rng, area, 200, 4096) {
                assert!(l >= 1 && o + l <= area, "{o}+{l} in {area}");
            }
        }
    }

    #[test]
    fn rng_is_deterministic() {
        let a: Vec<u64> = {
            let mut r = Rng::new(3);
            (0..4).map(|_| r.next()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(3);
            (0..4).map(|_| r.next()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::new(4);
            (0..4).map(|_| r.next()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
