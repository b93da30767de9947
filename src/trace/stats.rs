//! Per-allocation, per-submit and per-frame figures of a trace, computed in one streaming pass
//! (what `vkdirty info --by`, `report` and `export` show). Memory grows with the number of
//! allocations, submits and frames, never with the dirty data: the allocation × submit heatmap
//! is kept at most [`MAX_BINS`] columns wide by merging neighbouring submits as the trace grows.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use super::format::count_pages;
use super::reader::{Block, TraceReader};
use super::summary::{Summary, SummaryBuilder};
use super::{Checker, Event, TraceError};

/// Heatmap columns kept at most; neighbouring bins merge pairwise when a submit lands past them.
pub const MAX_BINS: usize = 256;

/// `VkMemoryPropertyFlags` names, short form.
const FLAG_NAMES: [(u32, &str); 9] = [
    (0x1, "DEVICE_LOCAL"),
    (0x2, "HOST_VISIBLE"),
    (0x4, "HOST_COHERENT"),
    (0x8, "HOST_CACHED"),
    (0x10, "LAZILY_ALLOCATED"),
    (0x20, "PROTECTED"),
    (0x40, "DEVICE_COHERENT_AMD"),
    (0x80, "DEVICE_UNCACHED_AMD"),
    (0x100, "RDMA_CAPABLE_NV"),
];

/// "DEVICE_LOCAL|HOST_VISIBLE" for `VkMemoryPropertyFlags`; unknown bits in hex.
pub fn memory_flags(flags: u32) -> String {
    let mut v: Vec<String> = FLAG_NAMES.iter().filter(|(b, _)| flags & b != 0).map(|(_, n)| n.to_string()).collect();
    let known = FLAG_NAMES.iter().fold(0, |a, (b, _)| a | b);
    if flags & !known != 0 {
        v.push(format!("{:#x}", flags & !known));
    }
    if v.is_empty() {
        "none".into()
    } else {
        v.join("|")
    }
}

/// The frame submits are made in, as a stream is read: 1 until the first present, then one more
/// than the frame the last `Frame` record ended (or the frame a capture window started in). Dirty
/// blocks come before their submit's record, so a submit's frame is read when its record arrives.
#[derive(Clone, Copy, Debug)]
pub struct FrameTracker {
    current: u64,
}

impl Default for FrameTracker {
    fn default() -> Self {
        FrameTracker { current: 1 }
    }
}

impl FrameTracker {
    pub fn see(&mut self, ev: &Event) {
        match ev {
            Event::Frame { frame, .. } => self.current = frame + 1,
            Event::CaptureStart { frame, .. } => self.current = (*frame).max(1),
            _ => {}
        }
    }

    pub fn current(&self) -> u64 {
        self.current
    }
}

/// One (backend, reason) an allocation's mappings got, with how many mappings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AllocBackend {
    pub backend: String,
    pub reason: String,
    pub maps: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AllocStats {
    pub id: u64,
    pub size: u64,
    pub memory_type: u32,
    pub property_flags: u32,
    pub flags: String,
    pub heap: u32,
    pub maps: u64,
    pub unmaps: u64,
    pub flushes: u64,
    pub freed: bool,
    pub backends: Vec<AllocBackend>,
    pub dirty_blocks: u64,
    pub dirty_pages: u64,
    pub dirty_bytes: u64,
    /// First and last submit whose dirty data touched the allocation.
    pub first_submit: Option<u64>,
    pub last_submit: Option<u64>,
    /// `dirty_bytes` over the trace's dirty bytes (0 when nothing was dirty).
    pub share: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SubmitStats {
    pub seq: u64,
    /// The frame the submit was made in (1-based; a frame ends at `vkQueuePresentKHR`).
    pub frame: u64,
    /// From the submit record; `None` for dirty data collected after the last recorded submit.
    pub timestamp_ns: Option<u64>,
    pub dirty_pages: u64,
    pub dirty_bytes: u64,
    /// File bytes (block headers and stored payloads) of the blocks belonging to this submit:
    /// its dirty blocks, its submit block and the records written since the previous submit.
    pub trace_bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FrameStats {
    pub frame: u64,
    pub first_submit: u64,
    pub last_submit: u64,
    pub submits: u64,
    /// When the frame was presented; `None` for the unfinished frame at the end.
    pub timestamp_ns: Option<u64>,
    pub dirty_pages: u64,
    pub dirty_bytes: u64,
    pub trace_bytes: u64,
}

/// Where capture started and stopped (a `VKDIRTY_FRAMES` / `VKDIRTY_SUBMITS` window).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CaptureWindow {
    pub start_frame: u64,
    pub start_submit: u64,
    /// `None` when capture was still on at the end of the trace.
    pub stop_frame: Option<u64>,
    pub stop_submit: Option<u64>,
}

/// Dirty pages and bytes per allocation per bin of submits (or of frames, in
/// [`Stats::frame_heatmap`]). Bin `i` holds submits `[first + i * width, first + (i + 1) * width)`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Heatmap {
    pub first_submit: u64,
    pub width: u64,
    pub bins: usize,
    /// Allocation id → `(pages, bytes)` per bin (only allocations with dirty data).
    pub rows: BTreeMap<u64, Vec<(u64, u64)>>,
}

impl Heatmap {
    fn bin_of(&mut self, submit: u64) -> usize {
        if self.width == 0 {
            // Submit numbers start at 1; dirty data for "submit 0" (not produced by the layer)
            // lands in the first bin.
            self.width = 1;
            self.first_submit = 1;
        }
        let submit = submit.max(self.first_submit);
        loop {
            let idx = ((submit - self.first_submit) / self.width) as usize;
            if idx < MAX_BINS {
                self.bins = self.bins.max(idx + 1);
                return idx;
            }
            self.width *= 2;
            for row in self.rows.values_mut() {
                let merged: Vec<(u64, u64)> =
                    row.chunks(2).map(|c| c.iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))).collect();
                *row = merged;
            }
            self.bins = self.bins.div_ceil(2);
        }
    }

    fn add(&mut self, alloc: u64, submit: u64, pages: u64, bytes: u64) {
        let idx = self.bin_of(submit);
        let row = self.rows.entry(alloc).or_default();
        if row.len() <= idx {
            row.resize(idx + 1, (0, 0));
        }
        row[idx].0 += pages;
        row[idx].1 += bytes;
    }

    /// First submit of bin `i`.
    pub fn bin_start(&self, i: usize) -> u64 {
        self.first_submit + i as u64 * self.width.max(1)
    }

    /// Bin of `submit`, clamped into the heatmap.
    pub fn bin_index(&self, submit: u64) -> usize {
        let w = self.width.max(1);
        (submit.saturating_sub(self.first_submit) / w).min(self.bins.saturating_sub(1) as u64) as usize
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    pub summary: Summary,
    /// Bytes of the file header (the first block's offset).
    pub header_bytes: u64,
    pub allocations: Vec<AllocStats>,
    pub submits: Vec<SubmitStats>,
    pub frames: Vec<FrameStats>,
    pub captures: Vec<CaptureWindow>,
    pub heatmap: Heatmap,
    /// The same with frames as columns (`first_submit` and `width` count frames).
    pub frame_heatmap: Heatmap,
}

/// Consumes blocks in stream order; [`StatsBuilder::finish`] gives the [`Stats`].
pub struct StatsBuilder {
    summary: SummaryBuilder,
    header_bytes: u64,
    page_size: u64,
    allocs: BTreeMap<u64, AllocStats>,
    submits: BTreeMap<u64, SubmitStats>,
    /// `(frame, last_submit, timestamp)` of each Frame record.
    frame_marks: Vec<(u64, u64, u64)>,
    captures: Vec<CaptureWindow>,
    heatmap: Heatmap,
    last_seq: u64,
    frames: FrameTracker,
    frame_heatmap: Heatmap,
    /// `(submit, alloc, pages, bytes)` of dirty blocks whose submit record (which fixes their
    /// frame) has not come yet.
    pending: Vec<(u64, u64, u64, u64)>,
}

impl StatsBuilder {
    pub fn new<R: Read>(r: &TraceReader<R>, file_bytes: u64) -> StatsBuilder {
        StatsBuilder {
            summary: SummaryBuilder::new(r.header(), file_bytes),
            header_bytes: r.header().len as u64,
            page_size: r.header().page_size as u64,
            allocs: BTreeMap::new(),
            submits: BTreeMap::new(),
            frame_marks: Vec::new(),
            captures: Vec::new(),
            heatmap: Heatmap::default(),
            last_seq: 0,
            frames: FrameTracker::default(),
            frame_heatmap: Heatmap::default(),
            pending: Vec::new(),
        }
    }

    fn submit(&mut self, seq: u64) -> &mut SubmitStats {
        self.submits.entry(seq).or_insert_with(|| SubmitStats { seq, ..SubmitStats::default() })
    }

    pub fn add(&mut self, b: &Block) {
        self.summary.add(b);
        if let Some(ev) = &b.event {
            self.frames.see(ev);
        }
        let len = b.file_len();
        // Records between submits belong to the next one (as collections at flush/unmap do).
        let mut owner = self.last_seq + 1;
        match &b.event {
            Some(Event::Allocation(a)) => {
                self.allocs.insert(
                    a.id,
                    AllocStats {
                        id: a.id,
                        size: a.size,
                        memory_type: a.memory_type,
                        property_flags: a.property_flags,
                        flags: memory_flags(a.property_flags),
                        heap: a.heap,
                        maps: 0,
                        unmaps: 0,
                        flushes: 0,
                        freed: false,
                        backends: Vec::new(),
                        dirty_blocks: 0,
                        dirty_pages: 0,
                        dirty_bytes: 0,
                        first_submit: None,
                        last_submit: None,
                        share: 0.0,
                    },
                );
            }
            Some(Event::Map(m)) => {
                if let Some(a) = self.allocs.get_mut(&m.alloc) {
                    a.maps += 1;
                    let name = m.backend.name();
                    match a.backends.iter_mut().find(|x| x.backend == name && x.reason == m.reason) {
                        Some(x) => x.maps += 1,
                        None => {
                            a.backends.push(AllocBackend { backend: name.into(), reason: m.reason.clone(), maps: 1 })
                        }
                    }
                }
            }
            Some(Event::Unmap { alloc }) => {
                if let Some(a) = self.allocs.get_mut(alloc) {
                    a.unmaps += 1;
                }
            }
            Some(Event::Free { alloc }) => {
                if let Some(a) = self.allocs.get_mut(alloc) {
                    a.freed = true;
                }
            }
            Some(Event::Flush { alloc, .. }) => {
                if let Some(a) = self.allocs.get_mut(alloc) {
                    a.flushes += 1;
                }
            }
            Some(Event::Compared { submit, .. }) | Some(Event::Trusted { submit, .. }) => owner = *submit,
            Some(Event::Dirty(d)) => {
                let pages = count_pages(&d.runs, self.page_size, &mut None);
                let bytes = d.data.len() as u64;
                owner = d.submit;
                if let Some(a) = self.allocs.get_mut(&d.alloc) {
                    a.dirty_blocks += 1;
                    a.dirty_pages += pages;
                    a.dirty_bytes += bytes;
                    a.first_submit = Some(a.first_submit.map_or(d.submit, |f| f.min(d.submit)));
                    a.last_submit = Some(a.last_submit.map_or(d.submit, |l| l.max(d.submit)));
                }
                let s = self.submit(d.submit);
                s.dirty_pages += pages;
                s.dirty_bytes += bytes;
                self.heatmap.add(d.alloc, d.submit, pages, bytes);
                self.pending.push((d.submit, d.alloc, pages, bytes));
            }
            Some(Event::Submit(x)) => {
                owner = x.seq;
                self.last_seq = self.last_seq.max(x.seq);
                let frame = self.frames.current();
                self.settle(|s| s <= x.seq, frame);
                let s = self.submit(x.seq);
                s.timestamp_ns = Some(x.timestamp_ns);
                s.frame = frame;
            }
            Some(Event::Frame { frame, last_submit, timestamp_ns }) => {
                owner = *last_submit;
                self.frame_marks.push((*frame, *last_submit, *timestamp_ns));
            }
            Some(Event::CaptureStart { frame, submit }) => {
                self.captures.push(CaptureWindow { start_frame: *frame, start_submit: *submit, ..Default::default() })
            }
            Some(Event::CaptureStop { frame, submit }) => {
                if let Some(c) = self.captures.last_mut().filter(|c| c.stop_submit.is_none()) {
                    c.stop_frame = Some(*frame);
                    c.stop_submit = Some(*submit);
                }
            }
            Some(Event::End(_)) => owner = self.last_seq.max(1),
            Some(Event::Session(_)) | None => {}
        }
        self.submit(owner.max(1)).trace_bytes += len;
    }

    /// Moves pending dirty data of the submits `done` accepts into frame `frame`'s column.
    fn settle(&mut self, done: impl Fn(u64) -> bool, frame: u64) {
        let fh = &mut self.frame_heatmap;
        self.pending.retain(|&(submit, alloc, pages, bytes)| {
            if done(submit) {
                fh.add(alloc, frame, pages, bytes);
            }
            !done(submit)
        });
    }

    pub fn finish<R: Read>(mut self, r: &TraceReader<R>) -> Stats {
        // Dirty data collected after the last submit record: the frame in progress.
        let current = self.frames.current();
        self.settle(|_| true, current);
        let summary = self.summary.finish(r);
        let mut heatmap = self.heatmap;
        // Columns reach the last submit, dirty or not, so the timeline shares them.
        if let Some(&last) = self.submits.keys().next_back() {
            heatmap.bin_of(last);
        }
        let total = summary.dirty_bytes;
        let mut allocations: Vec<AllocStats> = self.allocs.into_values().collect();
        for a in &mut allocations {
            a.share = if total == 0 { 0.0 } else { a.dirty_bytes as f64 / total as f64 };
        }
        let mut submits: Vec<SubmitStats> = self.submits.into_values().collect();
        let mut frames: BTreeMap<u64, FrameStats> = BTreeMap::new();
        for s in &mut submits {
            // Dirty data collected after the last submit record: the frame in progress.
            if s.timestamp_ns.is_none() {
                s.frame = self.frames.current();
            }
            let f = frames.entry(s.frame).or_insert_with(|| FrameStats {
                frame: s.frame,
                first_submit: s.seq,
                ..FrameStats::default()
            });
            f.last_submit = s.seq;
            f.submits += u64::from(s.timestamp_ns.is_some());
            f.dirty_pages += s.dirty_pages;
            f.dirty_bytes += s.dirty_bytes;
            f.trace_bytes += s.trace_bytes;
        }
        for &(frame, last, ts) in &self.frame_marks {
            let f = frames.entry(frame).or_insert_with(|| FrameStats {
                frame,
                first_submit: last,
                last_submit: last,
                ..FrameStats::default()
            });
            f.timestamp_ns = Some(ts);
        }
        let mut frame_heatmap = self.frame_heatmap;
        if let Some(last) = frames.keys().next_back() {
            frame_heatmap.bin_of(*last);
        }
        Stats {
            frame_heatmap,
            summary,
            header_bytes: self.header_bytes,
            allocations,
            submits,
            frames: frames.into_values().collect(),
            captures: self.captures,
            heatmap,
        }
    }
}

impl Stats {
    /// One pass over `path`, salvaging as [`Summary::from_file`] does: damaged ranges and
    /// inconsistent records are skipped and listed in the summary. `progress` is called with the
    /// file offset reached.
    pub fn from_file(path: impl AsRef<Path>, mut progress: impl FnMut(u64)) -> Result<Stats, TraceError> {
        let path = path.as_ref();
        let file_bytes =
            std::fs::metadata(path).map_err(|e| TraceError::io(format!("cannot open {}", path.display()), e))?.len();
        let mut r = TraceReader::open(path)?.salvage(true);
        let mut b = StatsBuilder::new(&r, file_bytes);
        let mut checker = Checker::new();
        checker.follow(&mut r, |block, ok| {
            if ok {
                b.add(block);
            }
            progress(block.offset + block.file_len());
            Ok(())
        })?;
        let mut st = b.finish(&r);
        st.summary.add_damage(&checker);
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_bins_merge_and_keep_totals() {
        let mut h = Heatmap::default();
        for s in 1..=1000u64 {
            h.add(s % 3, s, 1, s);
        }
        assert!(h.bins <= MAX_BINS);
        assert_eq!(h.width, 4);
        let pages: u64 = h.rows.values().flatten().map(|c| c.0).sum();
        let bytes: u64 = h.rows.values().flatten().map(|c| c.1).sum();
        assert_eq!(pages, 1000);
        assert_eq!(bytes, 1000 * 1001 / 2);
        assert_eq!(h.bin_index(1000), (999 / 4) as usize);
        assert_eq!(h.bin_start(h.bin_index(1000)), 997);
        assert_eq!(h.bin_start(0), 1);
    }

    #[test]
    fn flag_names() {
        assert_eq!(memory_flags(0x7), "DEVICE_LOCAL|HOST_VISIBLE|HOST_COHERENT");
        assert_eq!(memory_flags(0), "none");
        assert_eq!(memory_flags(0x1006), "HOST_VISIBLE|HOST_COHERENT|0x1000");
    }
}
