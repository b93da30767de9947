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
    /// Every region by group, for [`Backend::collect_all`]: one scan per run of adjacent regions.
    /// Each group has its own lock, so collections of different groups run in parallel.
    groups: RwLock<HashMap<u64, Arc<Mutex<Group>>>>,
    prediction: wp::Prediction,
}

/// A region as the batch collection sees it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    id: RegionId,
    real: usize,
    len: usize,
}

/// One group's regions. Its lock is held by a collection of the group from the scan until every
/// run was handed to the sink, and by `untrack` while it takes a region out.
struct Group {
    spans: wp::SpanSet<Key>,
    found: Vec<(Key, Range<usize>)>,
    /// Parked regions ([`Backend::park`]), with the runs found written since, for the resume.
    parked: HashMap<RegionId, Vec<Range<usize>>>,
}

impl Group {
    fn new(spans: wp::SpanSet<Key>) -> Group {
        Group { spans, found: Vec::new(), parked: HashMap::new() }
    }
}

struct WpRegion {
    group: u64,
    real: usize,
    len: usize,
    span: WpSpan,
    /// Scan output, kept to avoid an allocation per collection.
    runs: Vec<Range<usize>>,
}

impl AsyncWp {
    /// Opens (once per process) and probes the userfaultfd; `kind` is what [`Backend::kind`]
    /// and the errors report.
    pub fn new(kind: BackendKind, prediction: wp::Prediction) -> Result<AsyncWp, GuardError> {
        Ok(AsyncWp {
            kind,
            wp: wp::tracker(kind)?,
            regions: RegionTable::default(),
            groups: RwLock::new(HashMap::new()),
            prediction,
        })
    }

    fn new_set(&self) -> wp::SpanSet<Key> {
        wp::SpanSet::default().with_prediction(self.prediction)
    }

    /// The group's regions, created on first use. A group stays once created (an empty one is
    /// a few bytes), so a region is never added to a group another thread has just dropped.
    fn group(&self, group: u64) -> Arc<Mutex<Group>> {
        if let Some(g) = self.groups.read().get(&group) {
            return g.clone();
        }
        self.groups.write().entry(group).or_insert_with(|| Arc::new(Mutex::new(Group::new(self.new_set())))).clone()
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
        opts: &TrackOptions,
    ) -> Result<*mut u8, GuardError> {
        let span = self.wp.register(real as usize, len, self.kind)?;
        let key = Key { id, real: real as usize, len };
        let inserted = self.group(opts.group).lock().spans.insert(&span, key);
        if let Err(e) = inserted {
            let _ = self.wp.unregister(span);
            return Err(e);
        }
        self.regions.insert(id, WpRegion { group: opts.group, real: real as usize, len, span, runs: Vec::new() });
        Ok(real)
    }

    fn collect(
        &self,
        id: RegionId,
        range: Option<Range<usize>>,
        sink: &mut dyn DirtySink,
    ) -> Result<CollectStats, GuardError> {
        self.regions.with(id, |r| collect_region(self.wp, r, range, Vec::new(), sink))
    }

    /// Only `host-import`: its memory is the caller's own and stays mapped while the driver's
    /// mapping of it is gone; a driver's mapping (`async-wp`) is unmapped under the region.
    fn park(&self, id: RegionId, sink: &mut dyn DirtySink) -> Option<Result<CollectStats, GuardError>> {
        if self.kind != BackendKind::OwnedWp {
            return None;
        }
        Some(self.regions.with(id, |r| {
            // Under the group's lock (region, then group, as in `untrack`): no batch collection
            // runs between this final scan and the region being marked parked, so every write
            // made before the park is in `sink`, and every later one is kept for the resume.
            let g = self.group(r.group);
            let mut g = g.lock();
            let stats = collect_region(self.wp, r, None, Vec::new(), sink)?;
            g.parked.insert(id, Vec::new());
            Ok(stats)
        }))
    }

    unsafe fn resume(
        &self,
        id: RegionId,
        real: *mut u8,
        len: usize,
        _unchanged: bool,
        sink: &mut dyn DirtySink,
    ) -> Result<*mut u8, GuardError> {
        self.regions.with(id, |r| {
            if r.real != real as usize || r.len != len {
                return Err(GuardError::refused(self.kind, real as usize, len, "parked at another address"));
            }
            let g = self.group(r.group);
            let kept = g.lock().parked.remove(&id).unwrap_or_default();
            let region = r.real..r.real + r.len;
            for run in wp::normalize(kept) {
                let Some(run) = wp::intersect(&run, &region) else { continue };
                // SAFETY: inside the tracked region, ours and mapped while tracked (track
                // contract). The scan that found the page re-protected it: a later write is in
                // the next collection.
                let bytes = unsafe { std::slice::from_raw_parts(run.start as *const u8, run.len()) };
                sink.run(run.start - r.real, bytes);
            }
            Ok(real)
        })
    }

    fn collect_all(&self, group: u64, sink: &mut dyn RegionSink) -> Option<Result<CollectStats, GuardError>> {
        Some(self.collect_every(group, sink))
    }

    fn untrack(&self, id: RegionId, sink: &mut dyn DirtySink) -> Result<CollectStats, GuardError> {
        self.regions.remove(id, |mut r| {
            // Out of the batch first: from here on only this final scan sees the region's pages.
            let group = self.groups.read().get(&r.group).cloned();
            let mut kept = Vec::new();
            if let Some(g) = group {
                let mut g = g.lock();
                g.spans.remove(&Key { id, real: r.real, len: r.len });
                kept = g.parked.remove(&id).unwrap_or_default();
                if g.spans.is_empty() {
                    // Its plan and buffers go; the group itself stays (see `group`).
                    *g = Group::new(self.new_set());
                }
            }
            let collected = collect_region(self.wp, &mut r, None, kept, sink);
            let released = self.wp.unregister(r.span);
            let stats = collected?;
            released.map(|()| stats)
        })
    }
}

impl AsyncWp {
    /// Collects every region of `group`: one `PAGEMAP_SCAN` per run of address-adjacent regions, the written
    /// runs handed to `sink` with their region (region offsets, clipped to the region).
    pub(crate) fn collect_every(&self, group: u64, sink: &mut dyn RegionSink) -> Result<CollectStats, GuardError> {
        let Some(g) = self.groups.read().get(&group).cloned() else { return Ok(CollectStats::default()) };
        let mut g = g.lock();
        let Group { spans, found, parked } = &mut *g;
        found.clear();
        // On an error the runs found elsewhere are still delivered (their pages were re-armed).
        let scanned = self.wp.scan_set(spans, found);
        let scan = scanned.as_ref().copied().unwrap_or_default();
        let mut stats = CollectStats::from(scan);
        for (k, run) in found.iter() {
            if let Some(kept) = parked.get_mut(&k.id) {
                // Not mapped now: its pages go out after the next map, at the resume.
                kept.push(run.clone());
                continue;
            }
            let Some(run) = wp::intersect(run, &(k.real..k.real + k.len)) else { continue };
            // SAFETY: `run` lies inside a tracked region; untrack takes the group's lock before the
            // region is released, so the memory stays mapped while we read (track contract).
            // Concurrent writes are fine: any byte value is valid and later writes are in the
            // next scan.
            let bytes = unsafe { std::slice::from_raw_parts(run.start as *const u8, run.len()) };
            sink.run(k.id, run.start - k.real, bytes);
            stats.runs += 1;
            stats.bytes += run.len();
        }
        for trusted in [false, true] {
            found.clear();
            spans.predicted_runs(trusted, found);
            for (k, run) in found.iter().filter(|(k, _)| !parked.contains_key(&k.id)) {
                if let Some(run) = wp::intersect(run, &(k.real..k.real + k.len)) {
                    sink.predicted(k.id, run.start - k.real, run.len(), trusted);
                }
            }
        }
        // The runs are consumed (copied by the sink): now the next ones may be predicted.
        if scanned.is_ok() {
            self.wp.predict_set(spans)?;
        }
        scanned.map(|_| stats)
    }
}

/// Scans the pages under `range` (region offsets), then hands each written run to `sink`,
/// clipped to the region. Pages straddling the ends of `range` are reported whole (within the
/// region): the scan re-protected them, so a write elsewhere in such a page would otherwise be
/// lost.
/// `kept`: runs found written while the region was parked, reported with the scan's.
fn collect_region(
    wp: &WpTracker,
    r: &mut WpRegion,
    range: Option<Range<usize>>,
    kept: Vec<Range<usize>>,
    sink: &mut dyn DirtySink,
) -> Result<CollectStats, GuardError> {
    let want = clip_range(range, r.len);
    let mut stats = CollectStats::default();
    if want.is_empty() {
        return Ok(stats);
    }
    let scan = wp.scan(&r.span, r.real + want.start..r.real + want.end, &mut r.runs)?;
    if !kept.is_empty() {
        r.runs.extend(kept);
        r.runs = wp::normalize(std::mem::take(&mut r.runs));
    }
    stats.pages = scan.pages;
    stats.thp_pages = scan.thp_pages;
    stats.scans = scan.ioctls;
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
