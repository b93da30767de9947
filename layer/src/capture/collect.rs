//! Collection: a mapping's dirty pages (one, a range, or every mapping of a device in one pass)
//! into dirty records, and with `VKDIRTY_GFXR_FLUSH` flushed down the chain. Every function here
//! runs with the device's lock held, so a collection and the dirty records it sends are one step
//! for the device's other collections (docs/design.md, "Locking"). `writer`: where the collected
//! bytes are recorded, `None` when they are not.

use super::*;
use vkdirty::guard::DirtySink;

impl Capture {
    /// Collects a mapping's last dirty pages and stops tracking it (before the unmap, free or
    /// device destruction goes down: with `VKDIRTY_GFXR_FLUSH` they are flushed while mapped).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn untrack(
        &self,
        dev: &DeviceState,
        mem: &Memories,
        writer: Option<&TraceWriter>,
        id: u64,
        memory: u64,
        m: &Mapping,
        submit: u64,
    ) {
        self.untrack_with(dev, mem, writer, id, memory, m, submit, &mut |sink: &mut dyn DirtySink| {
            self.guards.untrack(m.region, sink).map(|_| false)
        });
    }

    /// [`untrack`](Self::untrack) with `op` collecting the last pages into the sink it is given
    /// (untracking, or parking the region: see `kept.rs`); returns what `op` returned (`false`
    /// on an error, which is logged).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn untrack_with(
        &self,
        dev: &DeviceState,
        mem: &Memories,
        writer: Option<&TraceWriter>,
        id: u64,
        memory: u64,
        m: &Mapping,
        submit: u64,
        op: &mut dyn FnMut(&mut dyn DirtySink) -> Result<bool, GuardError>,
    ) -> bool {
        let mut runs = Vec::new();
        let gfxr = self.settings.gfxr_flush;
        let r = match writer {
            Some(w) => {
                let mut d = w.dirty(id, submit);
                let r = op(&mut |off: usize, bytes: &[u8]| {
                    let at = m.offset.saturating_add(off as u64);
                    if gfxr {
                        runs.push((at, bytes.len() as u64));
                    }
                    d.push(at, bytes)
                });
                d.finish();
                r
            }
            None => op(&mut |off: usize, bytes: &[u8]| {
                if gfxr {
                    runs.push((m.offset.saturating_add(off as u64), bytes.len() as u64));
                }
            }),
        };
        self.flush_for_gfxr(dev, mem, memory, m, &runs);
        r.unwrap_or_else(|e| {
            log::once(vkdirty::config::LogLevel::Error, &format!("untracking a mapping failed: {e}"));
            false
        })
    }

    pub(super) fn collect(
        &self,
        writer: Option<&TraceWriter>,
        id: u64,
        m: &Mapping,
        range: Option<Range<usize>>,
        submit: u64,
    ) {
        self.collect_runs(writer, id, m, range, submit, None);
    }

    /// Collects a mapping (or `range` of it); the runs (allocation offsets) also go to `runs`.
    pub(super) fn collect_runs(
        &self,
        writer: Option<&TraceWriter>,
        id: u64,
        m: &Mapping,
        range: Option<Range<usize>>,
        submit: u64,
        mut runs: Option<&mut Vec<(u64, u64)>>,
    ) {
        let r = match writer {
            Some(w) => {
                let mut d = w.dirty(id, submit);
                let mut sink = |off: usize, bytes: &[u8]| {
                    let at = m.offset.saturating_add(off as u64);
                    if let Some(runs) = runs.as_deref_mut() {
                        runs.push((at, bytes.len() as u64));
                    }
                    d.push(at, bytes)
                };
                let r = match range {
                    Some(range) => self.guards.collect_range(m.region, range, &mut sink),
                    None => self.guards.collect(m.region, &mut sink),
                };
                d.finish();
                r
            }
            None => {
                let mut sink = |off: usize, bytes: &[u8]| {
                    if let Some(runs) = runs.as_deref_mut() {
                        runs.push((m.offset.saturating_add(off as u64), bytes.len() as u64));
                    }
                };
                match range {
                    Some(range) => self.guards.collect_range(m.region, range, &mut sink),
                    None => self.guards.collect(m.region, &mut sink),
                }
            }
        };
        if let Err(e) = r {
            log::once(vkdirty::config::LogLevel::Error, &format!("collecting dirty pages failed: {e}"));
        }
    }

    /// Collects every mapping of `dev` (all, or only those that must be for shadows) and, with
    /// `VKDIRTY_GFXR_FLUSH`, flushes their dirty pages down the chain in one call. One pass over the
    /// device's regions whose cost follows what was written, not the number of mappings
    /// (`GuardManager::collect_all`); runs are mapped back to allocations through `regions`.
    pub(super) fn collect_device(
        &self,
        dev: &DeviceState,
        mem: &Memories,
        writer: Option<&TraceWriter>,
        submit: u64,
        all: bool,
    ) {
        let device = dev.handle.as_raw();
        if !mem.has_mappings(device) {
            return;
        }
        let gfxr = self.settings.gfxr_flush;
        let which = |b: BackendKind| all || gfxr || must_collect(b);
        let _held = writer.map(|w| w.hold());
        // The runs of one region arrive together: one dirty record (and one flush down) each.
        let mut cur: Option<(RegionRef, Option<trace::DirtyWriter<'_>>)> = None;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        // Every mapping's flush ranges, flushed down in one call after the pass: gfxreconstruct
        // records one call and its fill-memory commands instead of one call per mapping.
        let mut flushes: Vec<(u64, u64, u64)> = Vec::new();
        // Ranges reported by write prediction's compare, and by trusted predictions, rather than
        // a fault (recorded after the dirty records, for `vkdirty info`).
        let mut compared: Vec<(RegionId, usize, usize)> = Vec::new();
        let mut trusted: Vec<(RegionId, usize, usize)> = Vec::new();
        let note = |region: RegionId, off: usize, len: usize, t: bool| {
            if t { &mut trusted } else { &mut compared }.push((region, off, len))
        };
        let r = self.guards.collect_all(
            device,
            &which,
            &mut vkdirty::guard::WithCompared(
                |region: RegionId, off: usize, bytes: &[u8]| {
                    if cur.as_ref().map(|c| c.0.region) != Some(region) {
                        if let Some((prev, d)) = cur.take() {
                            drop(d);
                            self.gfxr_ranges(dev, mem, prev.memory, &prev.map, &runs, &mut flushes);
                            runs.clear();
                        }
                        let Some(rr) = mem.region(region) else {
                            return;
                        };
                        cur = Some((rr, writer.map(|w| w.dirty(rr.alloc, submit))));
                    }
                    let Some((rr, d)) = cur.as_mut() else { return };
                    let at = rr.map.offset.saturating_add(off as u64);
                    if gfxr {
                        runs.push((at, bytes.len() as u64));
                    }
                    if let Some(d) = d {
                        d.push(at, bytes);
                    }
                },
                note,
            ),
        );
        if let Some((prev, d)) = cur.take() {
            drop(d);
            self.gfxr_ranges(dev, mem, prev.memory, &prev.map, &runs, &mut flushes);
        }
        crate::gfxr::flush_down(dev, &flushes);
        if let Some(w) = writer {
            record_compared(w, mem, &mut compared, submit, false);
            record_compared(w, mem, &mut trusted, submit, true);
        }
        if let Err(e) = r {
            log::once(vkdirty::config::LogLevel::Error, &format!("collecting dirty pages failed: {e}"));
        }
    }

    pub(super) fn flush_for_gfxr(
        &self,
        dev: &DeviceState,
        mem: &Memories,
        memory: u64,
        m: &Mapping,
        runs: &[(u64, u64)],
    ) {
        let mut ranges = Vec::new();
        self.gfxr_ranges(dev, mem, memory, m, runs, &mut ranges);
        crate::gfxr::flush_down(dev, &ranges);
    }

    /// With `VKDIRTY_GFXR_FLUSH`, appends the ranges (memory, offset, size) to flush down for the
    /// dirty `runs` (allocation offsets) of mapping `m` of `memory` to `out`.
    fn gfxr_ranges(
        &self,
        dev: &DeviceState,
        mem: &Memories,
        memory: u64,
        m: &Mapping,
        runs: &[(u64, u64)],
        out: &mut Vec<(u64, u64, u64)>,
    ) {
        if !self.settings.gfxr_flush || runs.is_empty() {
            return;
        }
        let page = vkdirty::guard::page_size() as u64;
        let (offset, size) = match mem.get((dev.handle.as_raw(), memory)) {
            // Memory the application imported is not mapped by vkdirty's tracking, and memory
            // that is not mapped cannot be flushed.
            Some(mem) if mem.app_import => {
                log::once(
                    vkdirty::config::LogLevel::Warn,
                    "gfxreconstruct flushes: application-imported host memory is not flushed (it need not be \
                     mapped); gfxreconstruct's capture does not hold the application's writes to it",
                );
                return;
            }
            // The range mapped below ([`Capture::range_to_map_down`]).
            Some(mem) => crate::gfxr::chain_range(m.offset, m.size, mem.size, page),
            // Freed with its device: no widening known; the mapping itself.
            None => (m.offset, m.size),
        };
        out.extend(crate::gfxr::flush_ranges(runs, offset, size, page).into_iter().map(|(o, l)| (memory, o, l)));
    }

    /// The range to map below for the application's `vkMapMemory(offset, size)`: with
    /// `VKDIRTY_GFXR_FLUSH`, widened to whole pages inside the allocation
    /// ([`crate::gfxr::chain_range`]) so that every flush is aligned; otherwise unchanged.
    pub fn range_to_map_down(&self, dev: &DeviceState, memory: vk::DeviceMemory, offset: u64, size: u64) -> (u64, u64) {
        if !self.settings.gfxr_flush {
            return (offset, size);
        }
        let alloc_size = match self.device(dev.handle.as_raw()).lock().get((dev.handle.as_raw(), memory.as_raw())) {
            Some(mem) if !mem.app_import && offset < mem.size => mem.size,
            _ => return (offset, size),
        };
        let whole = size == vk::WHOLE_SIZE;
        let resolved = if whole { alloc_size - offset } else { size };
        let (o, s) = crate::gfxr::chain_range(offset, resolved, alloc_size, vkdirty::guard::page_size() as u64);
        (o, if whole { vk::WHOLE_SIZE } else { s })
    }

    /// Whether bytes collected now (outside a submit) must be recorded: capture is on, or will be
    /// on later and needs them to reconstruct.
    pub(super) fn records_later(&self, st: &State) -> bool {
        st.window.records_later(self.settings)
    }
}

/// One compared (or, `trusted`, trusted) record per allocation, from the (region, offset, length)
/// ranges a collection reported by compare (or from trusted predictions).
fn record_compared(
    w: &TraceWriter,
    mem: &Memories,
    compared: &mut [(RegionId, usize, usize)],
    submit: u64,
    trusted: bool,
) {
    compared.sort_unstable();
    let mut i = 0;
    while i < compared.len() {
        let region = compared[i].0;
        let mut ranges = Vec::new();
        while i < compared.len() && compared[i].0 == region {
            ranges.push((compared[i].1 as u64, compared[i].2 as u64));
            i += 1;
        }
        let Some(rr) = mem.region(region) else { continue };
        for r in &mut ranges {
            r.0 = rr.map.offset.saturating_add(r.0);
        }
        let alloc = rr.alloc;
        w.record(&if trusted {
            Event::Trusted { alloc, submit, ranges }
        } else {
            Event::Compared { alloc, submit, ranges }
        });
    }
}
