//! `assisted`: only the ranges the caller declares flushed (`vkFlushMappedMemoryRanges`), with
//! no write tracking at all. Exact for applications that flush what they write (required for
//! non-coherent memory), blind to writes they do not flush.

use super::full::pages_touched;
use super::wp::{intersect, normalize};
use super::*;

pub struct Assisted {
    regions: RegionTable<Declared>,
}

struct Declared {
    real: usize,
    len: usize,
    /// Flushed, not yet collected; region offsets, unsorted until collection.
    pending: Vec<Range<usize>>,
    /// Length at which `pending` is merged next (doubles, so merging stays amortized O(log n)).
    compact_at: usize,
}

const COMPACT_MIN: usize = 4096;

impl Default for Assisted {
    fn default() -> Self {
        Self::new()
    }
}

impl Assisted {
    pub fn new() -> Assisted {
        Assisted { regions: RegionTable::default() }
    }
}

impl Backend for Assisted {
    fn kind(&self) -> BackendKind {
        BackendKind::Assisted
    }

    unsafe fn track(
        &self,
        id: RegionId,
        real: *mut u8,
        len: usize,
        _opts: &TrackOptions,
    ) -> Result<*mut u8, GuardError> {
        check_region(BackendKind::Assisted, real, len)?;
        self.regions.insert(id, Declared { real: real as usize, len, pending: Vec::new(), compact_at: COMPACT_MIN });
        Ok(real)
    }

    fn flushed(&self, id: RegionId, range: Range<usize>) -> Result<(), GuardError> {
        self.regions.with(id, |d| {
            let r = clip_range(Some(range), d.len);
            if !r.is_empty() {
                d.pending.push(r);
                // Applications flushing many small ranges per frame: keep the list short.
                if d.pending.len() >= d.compact_at {
                    d.pending = normalize(std::mem::take(&mut d.pending));
                    d.compact_at = (2 * d.pending.len()).max(COMPACT_MIN);
                }
            }
            Ok(())
        })
    }

    fn collect(
        &self,
        id: RegionId,
        range: Option<Range<usize>>,
        sink: &mut dyn DirtySink,
    ) -> Result<CollectStats, GuardError> {
        self.regions.with(id, |d| Ok(report(d, range, sink)))
    }

    fn untrack(&self, id: RegionId, sink: &mut dyn DirtySink) -> Result<CollectStats, GuardError> {
        self.regions.remove(id, |mut d| Ok(report(&mut d, None, sink)))
    }
}

/// Hands the declared ranges inside `range` to `sink` (merged) and keeps the rest pending.
fn report(d: &mut Declared, range: Option<Range<usize>>, sink: &mut dyn DirtySink) -> CollectStats {
    let want = clip_range(range, d.len);
    let mut take = Vec::new();
    let mut keep = Vec::new();
    for r in d.pending.drain(..) {
        match intersect(&r, &want) {
            Some(i) => {
                if r.start < i.start {
                    keep.push(r.start..i.start);
                }
                if i.end < r.end {
                    keep.push(i.end..r.end);
                }
                take.push(i);
            }
            None => keep.push(r),
        }
    }
    d.pending = keep;
    d.compact_at = (2 * d.pending.len()).max(COMPACT_MIN);
    let runs = normalize(take);
    let mut stats = CollectStats { pages: pages_touched(d.real, &runs), ..Default::default() };
    for r in &runs {
        // SAFETY: `r` lies inside the tracked region, mapped and readable until untrack returns
        // (the track contract; we hold the region's lock). Concurrent writes only change values.
        let bytes = unsafe { std::slice::from_raw_parts((d.real + r.start) as *const u8, r.len()) };
        sink.run(r.start, bytes);
        stats.runs += 1;
        stats.bytes += r.len();
    }
    stats
}
