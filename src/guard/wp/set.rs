//! [`SpanSet`]: the spans a backend collects together, scanned with one `PAGEMAP_SCAN` per run of
//! address-adjacent spans instead of one per span, the written runs mapped back to their spans
//! by address. The plan (which ranges to scan) follows each insert and remove in place (one
//! binary search and at most one range split or merge); it is rebuilt whole only when page
//! sharing changes somewhere in the process or after a fork. So a collection costs one system
//! call per run of adjacent spans plus the written runs, and mapping or unmapping one span costs
//! no walk over the others.
//!
//! Only spans sharing no page with another span are coalesced: a scan of a shared page must be
//! handed to the other sharers under the tracker's write lock ([`WpTracker::scan`]); those are
//! scanned one by one. Ranges are coalesced only where spans touch: a gap between two spans may
//! hold a mapping userfaultfd does not track, which `PM_SCAN_CHECK_WPASYNC` refuses with `EPERM`
//! after re-protecting the pages walked before it (their writes would be lost), and without that
//! flag a span whose registration the kernel dropped would silently read as clean.

use super::predict::{Prediction, Predictor};
use super::{intersect, pagemap_scan_with, take_pending, ScanStats, State, WpSpan, WpTracker};
use crate::guard::GuardError;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::ops::Range;

struct Member<K> {
    pages: Range<usize>,
    span: u64,
    key: K,
    /// Lifting its write protection needs `MADV_POPULATE_WRITE` too (not private anonymous
    /// memory; `vma.rs`). Read from /proc/self/maps when a prediction first needs it, not at
    /// registration: that read costs ~0.1 ms, too much for every map of a map-every-frame app.
    populate: Option<bool>,
    /// Trusted predictions of it keep their snapshot ([`SpanSet::keep_snapshots`],
    /// [`SpanSet::set_snapshots`]).
    snapshot: bool,
}

#[derive(Default)]
struct Plan {
    /// Whether the plan was built ([`SpanSet::rebuild`]); inserts and removes keep it current.
    built: bool,
    /// The tracker's sharing count ([`State::share_gen`]) it was built for.
    share_gen: u64,
    /// The tracker's fork count when pending pages were last drained.
    fork_gen: u64,
    /// Coalesced ranges of non-sharing spans, sorted by address.
    ranges: Vec<Range<usize>>,
    /// Spans sharing pages (keys into `members`).
    shared: Vec<(usize, u64)>,
}

/// Spans collected together, each with a caller key (a region id, an address...).
///
/// Their batch scans take the kernel's page-table fast path (category and return mask exactly
/// `PAGE_IS_WRITTEN`), about 3x cheaper per page walked than asking for huge pages too: it takes
/// an entry as written unless it carries the write-protect bit or marker. Every span is
/// registered and write-protected whole, with markers on empty entries, and the kernel keeps a
/// marker where it drops a protected page, so an entry without either was written (or, at worst,
/// is a page too many: never a page missed). A written huge mapping is reported whole on either
/// path; only [`ScanStats::thp_pages`] cannot count it here.
pub struct SpanSet<K> {
    /// By first page address and span id.
    members: BTreeMap<(usize, u64), Member<K>>,
    by_key: HashMap<K, (usize, u64)>,
    plan: Plan,
    runs: Vec<Range<usize>>,
    /// Write prediction ([`SpanSet::with_prediction`]).
    predictor: Option<Predictor>,
    /// New members' trusted predictions keep their snapshot ([`SpanSet::keep_snapshots`]).
    keep_snap: bool,
}

impl<K: Copy + Eq + Hash> Default for SpanSet<K> {
    fn default() -> Self {
        SpanSet {
            members: BTreeMap::new(),
            by_key: HashMap::new(),
            plan: Plan::default(),
            runs: Vec::new(),
            predictor: None,
            keep_snap: false,
        }
    }
}

impl<K: Copy + Eq + Hash> SpanSet<K> {
    /// Turns write prediction on or off for this set (see [`WpTracker::predict_set`]). The
    /// owner must then call `predict_set` after consuming each [`WpTracker::scan_set`].
    pub fn with_prediction(mut self, p: Prediction) -> Self {
        self.predictor = Predictor::new(p);
        self
    }

    /// Trusted predictions keep taking a snapshot (only their compare is skipped): `shadow-wp`'s
    /// refresh tells the application's writes to a predicted page from the GPU's by it. Per
    /// span from then on: [`set_snapshots`](Self::set_snapshots) turns it off for a span no
    /// refresh can reach (memory the device never writes).
    pub fn keep_snapshots(mut self) -> Self {
        self.keep_snap = true;
        self
    }

    /// Whether trusted predictions of the span under `key` keep their snapshot (see
    /// [`keep_snapshots`](Self::keep_snapshots)); `false` when there is no such span. Takes effect
    /// at the next [`WpTracker::predict_set`]: predictions made before keep what they have
    /// (docs/design.md, "Trusted predictions", for why that is enough for `shadow-wp`).
    pub fn set_snapshots(&mut self, key: &K, keep: bool) -> bool {
        let Some(at) = self.by_key.get(key) else { return false };
        match self.members.get_mut(at) {
            Some(m) => {
                m.snapshot = keep;
                true
            }
            None => false,
        }
    }

    /// Whether a trusted prediction of `r` (inside one span) keeps its snapshot.
    pub(super) fn snapshots(&self, r: &Range<usize>) -> bool {
        self.members
            .range(first_over(&self.members, r)..(r.end, 0))
            .any(|(_, m)| m.snapshot && intersect(&m.pages, r).is_some())
    }

    /// Whether lifting the protection of `r` needs `MADV_POPULATE_WRITE` (a member it overlaps
    /// is not private anonymous memory).
    pub(super) fn populates(&mut self, r: &Range<usize>) -> bool {
        let first = first_over(&self.members, r);
        let mut any = false;
        for (_, m) in self.members.range_mut(first..(r.end, 0)) {
            if intersect(&m.pages, r).is_some() {
                any |= *m.populate.get_or_insert_with(|| !super::vma::private_anonymous(&m.pages));
            }
        }
        any
    }

    /// The snapshot of a predicted (unprotected) page at `page` (page-aligned): what the trace
    /// holds for it. `None` when it is not predicted (see [`WpTracker::predict_set`]).
    pub fn predicted_snapshot(&mut self, page: usize) -> Option<&mut [u8]> {
        self.predictor.as_mut()?.snapshot_of(page)
    }

    /// The ranges scanned by [`WpTracker::scan`] since the predictions were made (their pages
    /// were re-protected and reported there: ordinary pages now, see `predict.rs`); `None` when
    /// too many scans ran to say.
    pub fn scanned_since_prediction(&self, wp: &WpTracker) -> Option<Vec<Range<usize>>> {
        let p = self.predictor.as_ref()?;
        match wp.foreign.lock().since(p.epoch) {
            super::predict::Since::Ranges(v) => Some(v),
            super::predict::Since::Unknown => None,
        }
    }

    /// Whether a page of `range` is predicted now.
    pub fn any_predicted(&self, range: &Range<usize>) -> bool {
        self.predictor.as_ref().is_some_and(|p| p.any_in(range))
    }

    /// After a [`WpTracker::scan_set`]: appends to `out` the runs it reported because of a
    /// prediction (each inside one span, with its key): with `trusted`, those a trusted
    /// prediction had unprotected, otherwise those whose pages differed from their snapshot.
    pub fn predicted_runs(&self, trusted: bool, out: &mut Vec<(K, Range<usize>)>) {
        let Some(p) = self.predictor.as_ref() else { return };
        for run in if trusted { &p.trusted } else { &p.compared } {
            Self::attribute(&self.members, run, out);
        }
    }

    /// The predictor, the scan ranges and the span holding an address (for rings wrapping).
    pub(super) fn predictor_and_ranges(
        &mut self,
    ) -> (Option<&mut Predictor>, &[Range<usize>], impl Fn(usize) -> Option<Range<usize>> + '_) {
        let members = &self.members;
        let span_of = move |a: usize| {
            let (_, m) = members.range(..=(a, u64::MAX)).next_back()?;
            m.pages.contains(&a).then(|| m.pages.clone())
        };
        (self.predictor.as_mut(), &self.plan.ranges, span_of)
    }

    pub(super) fn plan_current(&self, st: &State) -> bool {
        self.plan.built && self.plan.share_gen == st.share_gen && self.plan.fork_gen == st.fork_gen
    }

    /// Adds `span` under `key` (a key names one span).
    pub fn insert(&mut self, span: &WpSpan, key: K) -> Result<(), GuardError> {
        let pages = span.pages();
        let at = (pages.start, span.id);
        if self.by_key.contains_key(&key) {
            return Err(GuardError::Os {
                op: "span set",
                source: std::io::Error::other(format!("key of span {pages:#x?} already present")),
            });
        }
        let m = Member { pages: pages.clone(), span: span.id, key, populate: None, snapshot: self.keep_snap };
        self.members.insert(at, m);
        self.by_key.insert(key, at);
        if self.plan.built {
            // A span that shares pages was registered with sharers, which changed the tracker's
            // sharing count: the next collection rebuilds the plan whole before it scans.
            plan_insert(&mut self.plan.ranges, pages);
        }
        Ok(())
    }

    /// Removes the span added under `key`; `false` when there is none.
    pub fn remove(&mut self, key: &K) -> bool {
        let Some(at) = self.by_key.remove(key) else { return false };
        let Some(m) = self.members.remove(&at) else { return true };
        if self.plan.built && !plan_remove(&mut self.plan.ranges, &m.pages) {
            self.plan.shared.retain(|s| *s != at);
        }
        // Its predicted pages must not be read any more (the memory may go).
        if let Some(p) = self.predictor.as_mut() {
            p.forget(&m.pages);
        }
        true
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The number of `PAGEMAP_SCAN` ranges the next collection walks (one per run of adjacent
    /// non-sharing spans, one per sharing span), as last planned.
    pub fn scan_ranges(&self) -> usize {
        self.plan.ranges.len() + self.plan.shared.len()
    }

    fn rebuild(&mut self, st: &State) {
        let mut ranges: Vec<Range<usize>> = Vec::new();
        let mut shared = Vec::new();
        for (&at, m) in &self.members {
            if st.spans.get(&m.span).is_some_and(|i| !i.sharers.is_empty()) {
                shared.push(at);
                continue;
            }
            match ranges.last_mut() {
                Some(last) if last.end == m.pages.start => last.end = m.pages.end,
                _ => ranges.push(m.pages.clone()),
            }
        }
        self.plan.ranges = ranges;
        self.plan.shared = shared;
        self.plan.built = true;
        self.plan.share_gen = st.share_gen;
    }

    /// Appends `run` (inside one coalesced range, so covering only spans that share no page) to
    /// `out`, split over the members it covers.
    fn attribute(members: &BTreeMap<(usize, u64), Member<K>>, run: &Range<usize>, out: &mut Vec<(K, Range<usize>)>) {
        for (_, m) in members.range(first_over(members, run)..(run.end, 0)) {
            if let Some(r) = intersect(&m.pages, run) {
                out.push((m.key, r));
            }
        }
    }
}

/// Where a walk over the members overlapping `r` starts (members are keyed by first page and
/// span id): the last one starting at or before `r.start`, or `r.start` when there is none. The
/// walk is `members.range(first_over(members, r)..(r.end, 0))`.
fn first_over<M>(members: &BTreeMap<(usize, u64), M>, r: &Range<usize>) -> (usize, u64) {
    members.range(..=(r.start, u64::MAX)).next_back().map_or((r.start, 0), |(&at, _)| at)
}

/// Adds `pages` (touching no range) to the sorted, coalesced `ranges`, merged with a range that
/// ends where it starts or starts where it ends.
fn plan_insert(ranges: &mut Vec<Range<usize>>, pages: Range<usize>) {
    let i = ranges.partition_point(|r| r.start < pages.start);
    let joins_prev = i > 0 && ranges[i - 1].end == pages.start;
    let joins_next = i < ranges.len() && ranges[i].start == pages.end;
    match (joins_prev, joins_next) {
        (true, true) => {
            ranges[i - 1].end = ranges[i].end;
            ranges.remove(i);
        }
        (true, false) => ranges[i - 1].end = pages.end,
        (false, true) => ranges[i].start = pages.start,
        (false, false) => ranges.insert(i, pages),
    }
}

/// Takes `pages` out of the range of `ranges` that holds it, splitting that range; `false` when
/// no range holds it (a span scanned on its own).
fn plan_remove(ranges: &mut Vec<Range<usize>>, pages: &Range<usize>) -> bool {
    let i = ranges.partition_point(|r| r.end <= pages.start);
    let Some(r) = ranges.get(i).cloned() else { return false };
    if !(r.start <= pages.start && pages.end <= r.end) {
        return false;
    }
    match (r.start < pages.start, pages.end < r.end) {
        (true, true) => {
            ranges[i].end = pages.start;
            ranges.insert(i + 1, pages.end..r.end);
        }
        (true, false) => ranges[i].end = pages.start,
        (false, true) => ranges[i].start = pages.end,
        (false, false) => {
            ranges.remove(i);
        }
    }
    true
}

impl WpTracker {
    /// Scans every span of `set` like [`scan`](Self::scan) and appends to `out` each written run
    /// (page-aligned addresses, inside one span) with the span's key, sorted by address within
    /// each scanned range. A run of adjacent spans that share no page costs one `PAGEMAP_SCAN`
    /// (taking the kernel's fast path, see [`SpanSet`]: [`ScanStats::thp_pages`] stays 0 for them).
    pub fn scan_set<K: Copy + Eq + Hash>(
        &self,
        set: &mut SpanSet<K>,
        out: &mut Vec<(K, Range<usize>)>,
    ) -> Result<ScanStats, GuardError> {
        let mut stats = ScanStats::default();
        if set.members.is_empty() {
            return Ok(stats);
        }
        let st = self.read_state()?;
        let mut runs = std::mem::take(&mut set.runs);
        // Pages queued for a span (after a fork every span's, or a former sharer's finding) are
        // handed over whenever the plan changes: a span that stopped sharing is coalesced from
        // now on, and only the one-by-one scan takes its queue.
        if let Some(p) = set.predictor.as_mut() {
            p.begin();
        }
        if !set.plan_current(&st) {
            set.rebuild(&st);
            // A span may be gone: its predicted pages must not be read.
            if let Some(p) = set.predictor.as_mut() {
                p.retain_inside(&set.plan.ranges);
            }
            for m in set.members.values() {
                let Some(info) = st.spans.get(&m.span) else { continue };
                runs.clear();
                let mut queued = ScanStats::default();
                take_pending(info, &m.pages, &mut runs, &mut queued);
                stats.pages += queued.pages;
                out.extend(runs.iter().map(|r| (m.key, r.clone())));
            }
            set.plan.fork_gen = st.fork_gen;
        }
        let mut result = Ok(());
        for range in &set.plan.ranges {
            runs.clear();
            if let Err(e) = pagemap_scan_with(&st.pagemap, range.clone(), true, false, &mut runs, &mut stats) {
                // A member's mapping was replaced behind the tracker's back (`EPERM`: no longer
                // registered). Scan the range's members one by one, so the others are still
                // collected; the failing one reports the error.
                result = result.and(Err(e));
                let inside = set.members.range((range.start, 0)..(range.end, 0));
                for m in inside.map(|(_, m)| m).filter(|m| m.pages.end <= range.end) {
                    runs.clear();
                    match pagemap_scan_with(&st.pagemap, m.pages.clone(), true, false, &mut runs, &mut stats) {
                        Ok(()) => out.extend(runs.iter().map(|r| (m.key, r.clone()))),
                        Err(e) => result = result.and(Err(e)),
                    }
                }
                continue;
            }
            if let Some(p) = set.predictor.as_mut() {
                // After the scan re-protected the range: compare, don't trust, predicted pages.
                // Read after this range's scan: a foreign scan not seen here re-protects only
                // after it, so it finds (and reports) what is written from now on.
                let foreign = self.foreign.lock().since(p.epoch);
                p.resolve(range, &mut runs, &mut stats, &foreign);
            }
            for run in &runs {
                SpanSet::attribute(&set.members, run, out);
            }
        }
        drop(st);
        if let Some(p) = set.predictor.as_mut() {
            p.end();
        }
        {
            for start in &set.plan.shared {
                let Some(m) = set.members.get(start) else { continue };
                runs.clear();
                match self.scan_id(m.span, m.pages.clone(), &mut runs) {
                    Ok(s) => {
                        stats.pages += s.pages;
                        stats.thp_pages += s.thp_pages;
                        stats.ioctls += s.ioctls;
                        out.extend(runs.iter().map(|r| (m.key, r.clone())));
                    }
                    Err(e) => result = result.and(Err(e)),
                }
            }
        }
        set.runs = runs;
        // Runs found are returned even when part of the set failed: the caller records them
        // before reporting the error.
        result.map(|()| stats)
    }
}

#[cfg(test)]
mod tests {
    use super::{plan_insert, plan_remove};
    use std::ops::Range;

    /// The ranges a rebuild makes from `spans`: sorted, adjacent ones coalesced.
    fn rebuilt(spans: &[Range<usize>]) -> Vec<Range<usize>> {
        let mut s = spans.to_vec();
        s.sort_by_key(|r| r.start);
        let mut out: Vec<Range<usize>> = Vec::new();
        for r in s {
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        }
        out
    }

    #[test]
    fn inserts_and_removes_in_place_match_a_rebuild() {
        // 64 slots of 1-3 pages, some adjacent, some with gaps; a fixed pseudo-random sequence
        // of inserts and removes, the plan compared with a rebuild after every step.
        let slots: Vec<Range<usize>> = (0..64usize)
            .scan(0usize, |at, i| {
                let start = *at + if i % 5 == 0 { 3 } else { 0 };
                let r = start..start + 1 + i % 3;
                *at = r.end;
                Some(r)
            })
            .collect();
        let mut live = vec![false; slots.len()];
        let mut ranges = Vec::new();
        let mut x = 12345u64;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % slots.len() as u64) as usize;
            if live[i] {
                assert!(plan_remove(&mut ranges, &slots[i]));
            } else {
                plan_insert(&mut ranges, slots[i].clone());
            }
            live[i] = !live[i];
            let spans: Vec<Range<usize>> =
                slots.iter().zip(&live).filter(|(_, &l)| l).map(|(r, _)| r.clone()).collect();
            assert_eq!(ranges, rebuilt(&spans));
        }
        // A span no range holds (one scanned on its own) is reported as such.
        assert!(!plan_remove(&mut ranges, &(1_000_000..1_000_001)));
    }
}
