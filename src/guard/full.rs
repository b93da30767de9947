//! `full`: every page of the region at each collection. No tracking cost, maximal copy cost;
//! the baseline the other backends are measured against, and the fallback that always works.

use super::*;

pub struct Full {
    regions: RegionTable<(usize, usize)>,
}

impl Default for Full {
    fn default() -> Self {
        Self::new()
    }
}

impl Full {
    pub fn new() -> Full {
        Full { regions: RegionTable::default() }
    }
}

impl Backend for Full {
    fn kind(&self) -> BackendKind {
        BackendKind::Full
    }

    unsafe fn track(
        &self,
        id: RegionId,
        real: *mut u8,
        len: usize,
        _opts: &TrackOptions,
    ) -> Result<*mut u8, GuardError> {
        check_region(BackendKind::Full, real, len)?;
        self.regions.insert(id, (real as usize, len));
        Ok(real)
    }

    fn collect(
        &self,
        id: RegionId,
        range: Option<Range<usize>>,
        sink: &mut dyn DirtySink,
    ) -> Result<CollectStats, GuardError> {
        self.regions.with(id, |&mut (real, len)| Ok(report(real, len, range, sink)))
    }

    fn untrack(&self, id: RegionId, sink: &mut dyn DirtySink) -> Result<CollectStats, GuardError> {
        self.regions.remove(id, |(real, len)| Ok(report(real, len, None, sink)))
    }
}

fn report(real: usize, len: usize, range: Option<Range<usize>>, sink: &mut dyn DirtySink) -> CollectStats {
    let r = clip_range(range, len);
    if r.is_empty() {
        return CollectStats::default();
    }
    // SAFETY: `r` lies inside the tracked region, mapped and readable until untrack returns
    // (the track contract; we hold the region's lock). Concurrent writes only change values.
    let bytes = unsafe { std::slice::from_raw_parts((real + r.start) as *const u8, r.len()) };
    sink.run(r.start, bytes);
    CollectStats {
        pages: pages_touched(real, std::slice::from_ref(&r)),
        runs: 1,
        bytes: r.len(),
        thp_pages: 0,
        scans: 0,
        ..Default::default()
    }
}

/// Distinct system pages covered by sorted, disjoint region-relative `runs` of a region at `real`.
pub(crate) fn pages_touched(real: usize, runs: &[Range<usize>]) -> usize {
    let mut pages = 0;
    let mut next_free = 0usize; // first page index not yet counted
    for r in runs.iter().filter(|r| !r.is_empty()) {
        let first = ((real + r.start) / page_size()).max(next_free);
        let end = (real + r.end).div_ceil(page_size());
        if end > first {
            pages += end - first;
            next_free = end;
        }
    }
    pages
}
