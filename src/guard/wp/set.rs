//! [`SpanSet`]: the spans a backend collects together, scanned with one `PAGEMAP_SCAN` per run of
//! address-adjacent spans instead of one per span, the written runs mapped back to their spans
//! by address. The plan (which ranges to scan) is rebuilt only when spans come, go or start
//! sharing pages, so a collection costs one system call per run of adjacent spans plus the
//! written runs, not a step per span.
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
}

#[derive(Default)]
struct Plan {
    /// The tracker generation the plan was built for (`None`: never built).
    generation: Option<u64>,
    /// The tracker's fork count when pending pages were last drained.
    fork_gen: u64,
    /// Coalesced ranges of non-sharing spans.
    ranges: Vec<Range<usize>>,
    /// Spans sharing pages (keys into `members`).
    shared: Vec<(usize, u64)>,
}

/// Spans collected together, each with a caller key (a region id, an address...).
pub struct SpanSet<K> {
    /// By first page address and span id.
    members: BTreeMap<(usize, u64), Member<K>>,
    by_key: HashMap<K, (usize, u64)>,
    plan: Plan,
    runs: Vec<Range<usize>>,
    /// Use the kernel's fast path (see [`SpanSet::anonymous`]).
    fast: bool,
    /// Write prediction ([`SpanSet::with_prediction`]).
    predictor: Option<Predictor>,
}

impl<K: Copy + Eq + Hash> Default for SpanSet<K> {
    fn default() -> Self {
        SpanSet {
            members: BTreeMap::new(),
            by_key: HashMap::new(),
            plan: Plan::default(),
            runs: Vec::new(),
            fast: false,
            predictor: None,
        }
    }
}

impl<K: Copy + Eq + Hash> SpanSet<K> {
    /// A set whose spans are the layer's own arena memory (`host-import`): scanned with the
    /// kernel's page-table fast path (category and return mask exactly `PAGE_IS_WRITTEN`), about
    /// 3x cheaper per page walked. That path takes every entry without the present write-protect
    /// bit as written (a page swapped out, say, whose swap entry still carries the bit): it can
    /// report a page too many, never miss one. Other sets keep the per-page categories, which
    /// also count written huge pages.
    pub fn anonymous() -> Self {
        SpanSet { fast: true, ..Default::default() }
    }

    /// Turns write prediction on or off for this set (see [`WpTracker::predict_set`]). The
    /// owner must then call `predict_set` after consuming each [`WpTracker::scan_set`].
    pub fn with_prediction(mut self, p: Prediction) -> Self {
        self.predictor = Predictor::new(p);
        self
    }

    pub(super) fn predictor_and_ranges(&mut self) -> (Option<&mut Predictor>, &[Range<usize>]) {
        (self.predictor.as_mut(), &self.plan.ranges)
    }

    pub(super) fn plan_current(&self, st: &State) -> bool {
        self.plan.generation == Some(st.generation) && self.plan.fork_gen == st.fork_gen
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
        self.members.insert(at, Member { pages, span: span.id, key });
        self.by_key.insert(key, at);
        self.plan.generation = None;
        Ok(())
    }

    /// Removes the span added under `key`; `false` when there is none.
    pub fn remove(&mut self, key: &K) -> bool {
        let Some(start) = self.by_key.remove(key) else { return false };
        self.members.remove(&start);
        self.plan.generation = None;
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
        self.plan.generation = Some(st.generation);
    }

    /// Appends `run` (inside one coalesced range, so covering only spans that share no page) to
    /// `out`, split over the members it covers.
    fn attribute(members: &BTreeMap<(usize, u64), Member<K>>, run: &Range<usize>, out: &mut Vec<(K, Range<usize>)>) {
        let first = members.range(..=(run.start, u64::MAX)).next_back().map_or((run.start, 0), |(&at, _)| at);
        for (_, m) in members.range(first..(run.end, 0)) {
            if let Some(r) = intersect(&m.pages, run) {
                out.push((m.key, r));
            }
        }
    }
}

impl WpTracker {
    /// Scans every span of `set` like [`scan`](Self::scan) and appends to `out` each written run
    /// (page-aligned addresses, inside one span) with the span's key, sorted by address within
    /// each scanned range. A run of adjacent spans that share no page costs one `PAGEMAP_SCAN`
    /// (taking the kernel's fast path: [`ScanStats::thp_pages`] stays 0 for them).
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
        if set.plan.generation != Some(st.generation) || set.plan.fork_gen != st.fork_gen {
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
            if let Err(e) = pagemap_scan_with(&st.pagemap, range.clone(), true, !set.fast, &mut runs, &mut stats) {
                // A member's mapping was replaced behind the tracker's back (`EPERM`: no longer
                // registered). Scan the range's members one by one, so the others are still
                // collected; the failing one reports the error.
                result = result.and(Err(e));
                let inside = set.members.range((range.start, 0)..(range.end, 0));
                for m in inside.map(|(_, m)| m).filter(|m| m.pages.end <= range.end) {
                    runs.clear();
                    match pagemap_scan_with(&st.pagemap, m.pages.clone(), true, !set.fast, &mut runs, &mut stats) {
                        Ok(()) => out.extend(runs.iter().map(|r| (m.key, r.clone()))),
                        Err(e) => result = result.and(Err(e)),
                    }
                }
                continue;
            }
            if let Some(p) = set.predictor.as_mut() {
                // After the scan re-protected the range: compare, don't trust, predicted pages.
                p.resolve(range, &mut runs, &mut stats);
            }
            for run in &runs {
                SpanSet::attribute(&set.members, run, out);
            }
        }
        drop(st);
        if let Some(p) = set.predictor.as_mut() {
            p.end(&stats);
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
