//! State reconstruction: the bytes of each allocation as of submit N, as captured.
//!
//! Dirty blocks are applied in stream order (the order of collection), skipping those whose
//! submit is after N. Bytes no Dirty block covered read as zero. Images are sparse (chunks
//! materialise when written), so an allocation of many GiB with a few dirty pages is cheap.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::Path;

use super::reader::{TraceReader, Truncation};
use super::{Dirty, Event, TraceError};

const CHUNK: u64 = 64 << 10;

#[derive(Default)]
struct Image {
    size: u64,
    chunks: HashMap<u64, Box<[u8]>>,
}

impl Image {
    fn write(&mut self, mut off: u64, mut data: &[u8]) {
        while !data.is_empty() {
            let idx = off / CHUNK;
            let within = (off % CHUNK) as usize;
            let n = data.len().min(CHUNK as usize - within);
            let chunk = self.chunks.entry(idx).or_insert_with(|| vec![0u8; CHUNK as usize].into_boxed_slice());
            chunk[within..within + n].copy_from_slice(&data[..n]);
            off += n as u64;
            data = &data[n..];
        }
    }

    fn read(&self, mut off: u64, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let idx = off / CHUNK;
            let within = (off % CHUNK) as usize;
            let n = (out.len() - done).min(CHUNK as usize - within);
            match self.chunks.get(&idx) {
                Some(c) => out[done..done + n].copy_from_slice(&c[within..within + n]),
                None => out[done..done + n].fill(0),
            }
            off += n as u64;
            done += n;
        }
    }
}

/// Applies events to per-allocation byte images.
#[derive(Default)]
pub struct Replay {
    up_to: Option<u64>,
    only: Option<u64>,
    images: BTreeMap<u64, Image>,
    dirty_applied: u64,
    /// Every allocation id in the trace, tracked or not (for error messages).
    seen: std::collections::BTreeSet<u64>,
    /// The highest submit number recorded.
    last_submit: u64,
}

impl Replay {
    /// Applies every Dirty block.
    pub fn new() -> Replay {
        Replay::default()
    }

    /// Applies only Dirty blocks with `submit <= n`.
    pub fn up_to_submit(mut self, n: u64) -> Replay {
        self.up_to = Some(n);
        self
    }

    /// Tracks only allocation `id` (others are not kept or checked).
    pub fn only_alloc(mut self, id: u64) -> Replay {
        self.only = Some(id);
        self
    }

    /// Applies one event; `offset` (the block's file offset) goes into error messages.
    pub fn apply(&mut self, ev: &Event, offset: u64) -> Result<(), TraceError> {
        match ev {
            Event::Allocation(a) => {
                self.seen.insert(a.id);
            }
            Event::Submit(x) => self.last_submit = self.last_submit.max(x.seq),
            _ => {}
        }
        let wanted = |id: u64| self.only.map_or(true, |o| o == id);
        match ev {
            Event::Allocation(a) if wanted(a.id) => {
                if self.images.contains_key(&a.id) {
                    return Err(TraceError::Inconsistent {
                        offset,
                        msg: format!("allocation id {} recorded twice", a.id),
                    });
                }
                self.images.insert(a.id, Image { size: a.size, chunks: HashMap::new() });
            }
            Event::Dirty(d) if wanted(d.alloc) => {
                if self.up_to.is_some_and(|n| d.submit > n) {
                    return Ok(());
                }
                self.apply_dirty(d, offset)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn apply_dirty(&mut self, d: &Dirty, offset: u64) -> Result<(), TraceError> {
        let Some(img) = self.images.get_mut(&d.alloc) else {
            return Err(TraceError::Inconsistent {
                offset,
                msg: format!("dirty block for allocation {} which has no allocation record before it", d.alloc),
            });
        };
        let total: u64 = d.runs.iter().map(|r| r.1).fold(0u64, |a, b| a.saturating_add(b));
        if total != d.data.len() as u64 {
            return Err(TraceError::Inconsistent {
                offset,
                msg: format!("dirty runs cover {total} bytes but carry {}", d.data.len()),
            });
        }
        for &(o, l) in &d.runs {
            if o.checked_add(l).map_or(true, |e| e > img.size) {
                return Err(TraceError::Inconsistent {
                    offset,
                    msg: format!("dirty run {o:#x}+{l:#x} is outside allocation {} of size {:#x}", d.alloc, img.size),
                });
            }
        }
        let mut at = 0usize;
        for &(o, l) in &d.runs {
            img.write(o, &d.data[at..at + l as usize]);
            at += l as usize;
        }
        self.dirty_applied += 1;
        Ok(())
    }

    /// Every allocation id the trace records (also those [`Replay::only_alloc`] left out), ascending.
    pub fn recorded_allocations(&self) -> impl Iterator<Item = u64> + '_ {
        self.seen.iter().copied()
    }

    /// The highest submit number the trace records (0: none).
    pub fn last_submit(&self) -> u64 {
        self.last_submit
    }

    /// Allocation ids seen, ascending.
    pub fn allocations(&self) -> impl Iterator<Item = u64> + '_ {
        self.images.keys().copied()
    }

    pub fn size(&self, alloc: u64) -> Option<u64> {
        self.images.get(&alloc).map(|i| i.size)
    }

    /// Number of Dirty blocks applied.
    pub fn dirty_applied(&self) -> u64 {
        self.dirty_applied
    }

    /// Copies `out.len()` bytes of `alloc` from `offset`; `None` if unknown or out of range.
    pub fn read(&self, alloc: u64, offset: u64, out: &mut [u8]) -> Option<()> {
        let img = self.images.get(&alloc)?;
        if offset.checked_add(out.len() as u64)? > img.size {
            return None;
        }
        img.read(offset, out);
        Some(())
    }

    /// The whole image of `alloc` in memory; `None` if unknown or too large for this process.
    pub fn to_vec(&self, alloc: u64) -> Option<Vec<u8>> {
        let img = self.images.get(&alloc)?;
        let len = usize::try_from(img.size).ok()?;
        let mut v = Vec::new();
        v.try_reserve_exact(len).ok()?;
        v.resize(len, 0);
        img.read(0, &mut v);
        Some(v)
    }

    /// Streams the image of `alloc` to `w`; returns its size, or `None` if unknown.
    pub fn write_to(&self, alloc: u64, w: &mut impl Write) -> io::Result<Option<u64>> {
        let Some(img) = self.images.get(&alloc) else { return Ok(None) };
        let mut buf = vec![0u8; CHUNK as usize];
        let mut off = 0;
        while off < img.size {
            let n = (img.size - off).min(CHUNK) as usize;
            img.read(off, &mut buf[..n]);
            w.write_all(&buf[..n])?;
            off += n as u64;
        }
        Ok(Some(img.size))
    }

    /// Bytes the image of `alloc` holds in memory (chunks something was written to), i.e. what a
    /// sparse copy of it needs on disk; `None` if unknown.
    pub fn written_bytes(&self, alloc: u64) -> Option<u64> {
        self.images.get(&alloc).map(|i| i.chunks.len() as u64 * CHUNK)
    }

    /// Writes the image of `alloc` to `f` as a sparse file: only chunks something was written
    /// to, the rest left as holes (read as zero). Returns its size, or `None` if unknown.
    pub fn write_sparse(&self, alloc: u64, f: &mut std::fs::File) -> io::Result<Option<u64>> {
        use std::io::{Seek, SeekFrom};
        let Some(img) = self.images.get(&alloc) else { return Ok(None) };
        let mut idx: Vec<u64> = img.chunks.keys().copied().collect();
        idx.sort_unstable();
        for i in idx {
            let off = i * CHUNK;
            let n = (img.size - off).min(CHUNK) as usize;
            let chunk = &img.chunks[&i][..n];
            if chunk.iter().all(|&b| b == 0) {
                continue;
            }
            f.seek(SeekFrom::Start(off))?;
            f.write_all(chunk)?;
        }
        f.set_len(img.size)?;
        Ok(Some(img.size))
    }

    /// Reads `path` and applies every event. Returns the replay and the truncation, if any.
    pub fn from_file(path: impl AsRef<Path>, replay: Replay) -> Result<(Replay, Option<Truncation>), TraceError> {
        let mut replay = replay;
        let mut r = TraceReader::open(path)?;
        while let Some(b) = r.next_block()? {
            if let Some(ev) = &b.event {
                replay.apply(ev, b.offset)?;
            }
        }
        Ok((replay, r.truncation().cloned()))
    }
}
