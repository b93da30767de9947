//! `async-wp`: userfaultfd async write-protect on the application's memory itself, collected
//! with one `PAGEMAP_SCAN` (see [`super::wp`]). The application keeps its own pointer and never
//! takes a signal; a write to a protected page costs one minor fault. Also serves `host-import`
//! (the layer's own anonymous memory imported into the driver), reported under that kind.

use super::wp::{self, WpSpan, WpTracker};
use super::*;

pub struct AsyncWp {
    kind: BackendKind,
    wp: &'static WpTracker,
    regions: RegionTable<WpRegion>,
}

struct WpRegion {
    real: usize,
    len: usize,
    span: WpSpan,
    /// Scan output, kept to avoid an allocation per collection.
    runs: Vec<Range<usize>>,
}

impl AsyncWp {
    /// Opens (once per process) and probes the userfaultfd; `kind` is what [`Backend::kind`]
    /// and the errors report.
    pub fn new(kind: BackendKind) -> Result<AsyncWp, GuardError> {
        Ok(AsyncWp {
            kind,
            wp: wp::tracker(kind)?,
            regions: RegionTable::default(),
        })
    }
}

impl Backend for AsyncWp {
    fn kind(&self) -> BackendKind {
        self.kind
    }

    unsafe fn track(
        &self,
        id: RegionId,
        real: *mut u8,
        len: usize,
        _opts: &TrackOptions,
    ) -> Result<*mut u8, GuardError> {
        let span = self.wp.register(real as usize, len, self.kind)?;
        self.regions.insert(
            id,
            WpRegion {
                real: real as usize,
                len,
                span,
                runs: Vec::new(),
            },
        );
        Ok(real)
    }

    fn collect(
        &self,
        id: RegionId,
        range: Option<Range<usize>>,
        sink: &mut dyn DirtySink,
    ) -> Result<CollectStats, GuardError> {
        self.regions
            .with(id, |r| collect_region(self.wp, r, range, sink))
    }

    fn untrack(&self, id: RegionId, sink: &mut dyn DirtySink) -> Result<CollectStats, GuardError> {
        self.regions.remove(id, |mut r| {
            let collected = collect_region(self.wp, &mut r, None, sink);
            let released = self.wp.unregister(r.span);
            let stats = collected?;
            released.map(|()| stats)
        })
    }
}

/// Scans the pages under `range` (region offsets), then hands each written run to `sink`,
/// clipped to the region. Pages straddling the ends of `range` are reported whole (within the
/// region): the scan re-protected them, so a write elsewhere in such a page would otherwise be
/// lost.
fn collect_region(
    wp: &WpTracker,
    r: &mut WpRegion,
    range: Option<Range<usize>>,
    sink: &mut dyn DirtySink,
) -> Result<CollectStats, GuardError> {
    let want = clip_range(range, r.len);
    let mut stats = CollectStats::default();
    if want.is_empty() {
        return Ok(stats);
    }
    let scan = wp.scan(&r.span, r.real + want.start..r.real + want.end, &mut r.runs)?;
    stats.pages = scan.pages;
    stats.thp_pages = scan.thp_pages;
    let region = r.real..r.real + r.len;
    for run in &r.runs {
        let Some(run) = wp::intersect(run, &region) else {
            continue;
        };
        // SAFETY: `run` lies inside the tracked region, which the track contract keeps mapped
        // and readable until untrack returns (we hold the region's lock). Other threads may
        // write these bytes concurrently; any byte value is valid and later writes are caught
        // by the next scan.
        let bytes = unsafe { std::slice::from_raw_parts(run.start as *const u8, run.len()) };
        sink.run(run.start - r.real, bytes);
        stats.runs += 1;
        stats.bytes += run.len();
    }
    Ok(stats)
}
