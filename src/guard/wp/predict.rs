//! Write prediction for a [`super::SpanSet`]: pages the next collection will probably find
//! written are copied to a snapshot and their write protection is lifted, so the application's
//! writes there take no fault; the next collection compares them with the snapshot instead.
//! See docs/design.md, "Predicted pages".
//!
//! The invariant everything rests on: a predicted page's snapshot equals what the trace holds for
//! it. [`WpTracker::predict_set`] copies the page, then checks (a `PAGEMAP_SCAN` that does not
//! re-protect) that it was not written since the collection's scan re-protected it, and only then
//! lifts the protection; a page written in that window is not predicted (it is already marked
//! written and the next scan reports it). The next [`WpTracker::scan_set`] re-protects the page
//! first, then compares it: a write before the re-protect changed the bytes (or left them equal
//! to the trace), a write after it faults and is in the following scan.
//!
//! Trusted predictions (per span, `trust.rs`): once the compares of a span's predictions keep finding nearly every
//! predicted page written, its predictions are only unprotected, neither snapshotted nor compared;
//! the next scan reports every such page as written (it is unprotected) and re-protects it, so
//! the caller copies its current bytes: nothing can be lost, a miss costs a page too many. Every
//! `VERIFY_EVERY`th collection (`trust.rs`), and whenever the predicted volume changes, compares again to
//! measure the hit rate; trust ends when it falls below `TRUST_HITS`. In between, the last page
//! of each trusted run is copied and compared as a sample (a stream that stopped or shrank misses
//! there first), which ends trust at once when it misses.

use super::kernel::uffd_unprotect;
use super::trust::Spans;
use super::{intersect, normalize, page_size, pagemap_scan_with, ScanStats, WpTracker};
use crate::guard::GuardError;
use std::hash::Hash;
use std::ops::Range;
use std::os::fd::OwnedFd;

/// Prediction settings for the write-protect backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prediction {
    pub enabled: bool,
    /// Snapshot memory per span set, bytes.
    pub budget: usize,
    /// Predictions that keep hitting are trusted: unprotected without snapshot or compare.
    pub trust: bool,
}

impl Default for Prediction {
    fn default() -> Self {
        Prediction { enabled: false, budget: 32 << 20, trust: true }
    }
}

/// Predicted runs per set at most: a few per region of a typical frame.
const MAX_RUNS: usize = 64;
/// A predicted, unprotected run (inside one span).
struct Pred {
    r: Range<usize>,
    /// Its offset in `snap`; `usize::MAX`: trusted without a snapshot.
    off: usize,
    /// Its span's entry in `spans`.
    who: usize,
    /// Trusted: the offset in `snap` of the copy of its last page (the sample).
    sample: Option<usize>,
}

pub(super) struct Predictor {
    budget: usize,
    /// Runs reported by the previous and the last collection (sorted, coalesced).
    prev: Vec<Range<usize>>,
    last: Vec<Range<usize>>,
    /// Unprotected predicted runs, sorted by address.
    preds: Vec<Pred>,
    snap: Vec<u8>,
    /// The pages the current collection reported because they differed from their snapshot.
    pub(super) compared: Vec<Range<usize>>,
    /// [`ForeignScans::seq`] when the current predictions were made.
    pub(super) epoch: u64,
    trust: bool,
    /// Back-off and trust per span.
    spans: Spans,
    /// The pages the current collection reported that trusted predictions had unprotected.
    pub(super) trusted: Vec<Range<usize>>,
}

impl Predictor {
    pub(super) fn new(p: Prediction) -> Option<Predictor> {
        p.enabled.then(|| Predictor {
            budget: p.budget,
            prev: Vec::new(),
            last: Vec::new(),
            preds: Vec::new(),
            snap: Vec::new(),
            compared: Vec::new(),
            epoch: 0,
            trust: p.trust,
            spans: Spans::default(),
            trusted: Vec::new(),
        })
    }

    /// Starts a collection.
    pub(super) fn begin(&mut self) {
        self.prev = std::mem::take(&mut self.last);
        self.compared.clear();
        self.trusted.clear();
    }

    /// The plan changed (spans came, went or started sharing pages): keeps only the predictions
    /// inside the new scan `ranges` (spans still in the set, sharing nothing), so a span that is
    /// gone is never read. Pages dropped here and still registered stay unprotected, so a scan
    /// reports them as written.
    /// Drops the predictions inside `pages` (a span leaving the set).
    pub(super) fn forget(&mut self, pages: &Range<usize>) {
        self.preds.retain(|p| p.r.end <= pages.start || pages.end <= p.r.start);
        self.spans.forget(pages.start);
    }

    /// The snapshot of the predicted page at `page` (page-aligned), if it is predicted.
    pub(super) fn snapshot_of(&mut self, page: usize) -> Option<&mut [u8]> {
        let i = self.preds.partition_point(|p| p.r.start <= page).checked_sub(1)?;
        let Pred { r, off, .. } = &self.preds[i];
        if !r.contains(&page) || *off == usize::MAX {
            return None;
        }
        let at = off + (page - r.start);
        Some(&mut self.snap[at..at + page_size()])
    }

    /// Whether any page is predicted in `range`.
    pub(super) fn any_in(&self, range: &Range<usize>) -> bool {
        self.preds.iter().any(|p| intersect(&p.r, range).is_some())
    }

    pub(super) fn retain_inside(&mut self, ranges: &[Range<usize>]) {
        self.preds.retain(|p| ranges.iter().any(|g| g.start <= p.r.start && p.r.end <= g.end));
    }

    /// After `range` was scanned into `runs` (sorted, coalesced; predicted pages in it show as
    /// written since they are unprotected): replaces the predicted pages in `runs` by those whose
    /// bytes differ from the snapshot, and remembers the result for the next prediction.
    ///
    /// `foreign`: the scans outside the set ([`WpTracker::scan`]) since the predictions were
    /// made. Such a scan may have re-protected and reported a predicted page; a write after it faults, and may
    /// even put back the snapshot's bytes, which a compare would miss while the trace holds the
    /// bytes that scan reported. So predicted runs such a scan touched are not compared: the
    /// scan's runs stand for them (a page still unprotected reads as written, a page too many at
    /// worst; a re-protected one is reported exactly when written again).
    pub(super) fn resolve(
        &mut self,
        range: &Range<usize>,
        runs: &mut Vec<Range<usize>>,
        stats: &mut ScanStats,
        foreign: &Since,
    ) {
        if matches!(foreign, Since::Unknown) {
            self.last.extend(runs.iter().cloned());
            return;
        }
        let page = page_size();
        let mut changed: Vec<Range<usize>> = Vec::new();
        let touched = |r: &Range<usize>| match foreign {
            Since::Ranges(f) => f.iter().any(|g| intersect(g, r).is_some()),
            Since::Unknown => true,
        };
        let inside = |p: &&Pred| p.r.start >= range.start && p.r.end <= range.end && !touched(&p.r);
        // Trusted: the scan reported every page still unprotected, with the rest; nothing to
        // compare. Noted for the trace (pages a foreign scan re-protected since are ordinary).
        let cut: Vec<Range<usize>> =
            self.preds.iter().filter(inside).filter(|p| p.sample.is_some()).map(|p| p.r.clone()).collect();
        if !cut.is_empty() {
            let from = self.trusted.len();
            self.trusted.extend(intersect_sorted(runs, &cut));
            stats.trusted += self.trusted[from..].iter().map(|r| r.len() / page).sum::<usize>();
            let bare: Vec<Range<usize>> =
                self.preds.iter().filter(inside).filter(|p| p.off == usize::MAX).map(|p| p.r.clone()).collect();
            stats.trusted_bare +=
                intersect_sorted(&self.trusted[from..], &bare).iter().map(|r| r.len() / page).sum::<usize>();
        }
        // The samples: a measurement only (every trusted page is reported anyway).
        for p in self.preds.iter().filter(inside) {
            let Some(off) = p.sample else { continue };
            let a = p.r.end - page;
            // SAFETY: as in the compare below: a page of a span the caller keeps mapped.
            let now = unsafe { std::slice::from_raw_parts(a as *const u8, page) };
            let s = &mut self.spans.all[p.who];
            if now == &self.snap[off..off + page] {
                s.sample_misses += 1;
            } else {
                s.sample_hits += 1;
            }
        }
        let compare: Vec<&Pred> = self.preds.iter().filter(inside).filter(|p| p.sample.is_none()).collect();
        if !compare.is_empty() {
            let cut: Vec<Range<usize>> = compare.iter().map(|p| p.r.clone()).collect();
            let before: usize = runs.iter().map(|r| r.len()).sum();
            *runs = subtract(runs, &cut);
            let after: usize = runs.iter().map(|r| r.len()).sum();
            stats.pages -= (before - after) / page;
            for p in compare {
                stats.predicted += p.r.len() / page;
                let mut n = 0;
                for (i, a) in p.r.clone().step_by(page).enumerate() {
                    let snap = &self.snap[p.off + i * page..p.off + (i + 1) * page];
                    // SAFETY: `a` is a page of a span of the set, which the caller keeps
                    // registered and mapped while it holds the set (the track contract); the
                    // application may write it concurrently, and any byte value is valid: a write
                    // after the scan's re-protect faults and is in the next scan.
                    let now = unsafe { std::slice::from_raw_parts(a as *const u8, page) };
                    if now != snap {
                        n += 1;
                        match changed.last_mut() {
                            Some(l) if l.end == a => l.end = a + page,
                            _ => changed.push(a..a + page),
                        }
                    }
                }
                let s = &mut self.spans.all[p.who];
                s.predicted += p.r.len() / page;
                s.changed += n;
            }
            let n: usize = changed.iter().map(|r| r.len() / page).sum();
            stats.compared_changed += n;
            stats.pages += n;
            self.compared.extend(changed.iter().cloned());
            runs.extend(changed);
            *runs = normalize(std::mem::take(runs));
        }
        self.last.extend(runs.iter().cloned());
    }

    /// Ends a collection's scan: predictions not resolved (a failed range) are dropped; each
    /// span's back-off and trust follow what was measured.
    pub(super) fn end(&mut self) {
        self.preds.clear();
        self.last = normalize(std::mem::take(&mut self.last));
        for s in &mut self.spans.all {
            s.end();
        }
    }

    /// `cands` split at span boundaries, each piece with its span's entry, without those of
    /// spans backing off.
    fn assign(
        &mut self,
        cands: Vec<Range<usize>>,
        span_of: &dyn Fn(usize) -> Option<Range<usize>>,
    ) -> Vec<(Range<usize>, usize)> {
        let mut out = Vec::new();
        for r in cands {
            let mut at = r.start;
            while at < r.end {
                let Some(span) = span_of(at) else { break };
                let piece = at..r.end.min(span.end);
                at = piece.end;
                let (who, skipping) = self.spans.entry(span.start);
                if !skipping && out.len() < MAX_RUNS {
                    out.push((piece, who));
                }
            }
        }
        out
    }

    /// The runs to predict (inside `ranges`, the set's scan ranges of non-sharing spans): hot
    /// pages (written in both of the last two collections) and the continuation of streams (a run
    /// that starts where one of the previous collection ended predicts as much again after it).
    /// A stream wraps within its span (`span_of`: the span holding an address), as a ring
    /// buffer does: past the span's end the prediction goes on at its start, and a run at the
    /// span's start that follows a run reaching its end continues both.
    fn candidates(
        &mut self,
        ranges: &[Range<usize>],
        span_of: &dyn Fn(usize) -> Option<Range<usize>>,
    ) -> Vec<Range<usize>> {
        // One prediction starts here ([`assign`](Self::assign) follows): the back-offs move on.
        self.spans.tick();
        let Predictor { prev, last, spans, budget, .. } = self;
        // The runs are sorted: one span lookup and back-off check per span rather than per run
        // (a random pattern of 256 MiB has thousands of runs). A span backing off predicts
        // nothing: its candidates would only be dropped by `assign`, after taking the room of
        // other spans' under `MAX_RUNS`.
        let mut cur: Option<(Range<usize>, bool)> = None;
        let mut span_at = |a: usize| -> Option<(Range<usize>, bool)> {
            if !cur.as_ref().is_some_and(|(s, _)| s.contains(&a)) {
                let s = span_of(a)?;
                let off = spans.backing_off(s.start);
                cur = Some((s, off));
            }
            cur.clone()
        };
        let mut c = intersect_sorted(last, prev);
        // Hot runs inside one backing-off span (a run may cross into a neighbouring span).
        c.retain(|r| !span_at(r.start).is_some_and(|(s, off)| off && r.end <= s.end));
        let ends_at = |v: &[Range<usize>], a: usize| v.binary_search_by_key(&a, |p| p.end).ok();
        for r in last.iter() {
            let Some((span, off)) = span_at(r.start) else { continue };
            if off {
                continue;
            }
            // A run at the span's start after one that reached its end: the ring wrapped between
            // the two collections (a ring a whole number of frames long always does).
            let continues =
                ends_at(prev, r.start).is_some() || (r.start == span.start && ends_at(prev, span.end).is_some());
            // A ring that wrapped in this collection: its tail run reached the span's end.
            let tail = (r.start == span.start).then(|| ends_at(last, span.end)).flatten();
            let len = match (continues, tail) {
                (_, Some(t)) if last[t].start > r.end => r.len() + last[t].len(),
                (true, _) => {
                    // Reaching the span's end: the run at its start (if any) continues the ring.
                    let starts = last.binary_search_by_key(&span.start, |p| p.start).is_ok();
                    if r.end >= span.end && starts && span.start < r.start {
                        continue;
                    }
                    r.len()
                }
                _ => continue,
            };
            let end = r.end.min(span.end);
            let ahead = len.min(span.end - end);
            if ahead > 0 {
                c.push(end..end + ahead);
            }
            // Wrapped: on from the span's start, short of the run itself.
            let wrap = (len - ahead).min(r.start.saturating_sub(span.start));
            if wrap > 0 {
                c.push(span.start..span.start + wrap);
            }
        }
        let c = normalize(c);
        let mut out = Vec::new();
        let mut bytes = 0;
        'all: for r in c {
            for s in ranges.iter().filter_map(|g| intersect(g, &r)) {
                if out.len() == MAX_RUNS {
                    break 'all;
                }
                let s = s.start..s.end.min(s.start + (*budget - bytes) / page_size() * page_size());
                if s.is_empty() {
                    break 'all;
                }
                bytes += s.len();
                out.push(s);
            }
        }
        out
    }
}

impl WpTracker {
    /// After a [`scan_set`](Self::scan_set) whose runs the caller has consumed (copied), and
    /// while it still holds `set`: predicts the pages the next collection will find written,
    /// copies them to the set's snapshot and lifts their protection (see the module
    /// documentation). Does nothing when prediction is off or backed off.
    pub fn predict_set<K: Copy + Eq + Hash>(&self, set: &mut super::SpanSet<K>) -> Result<(), GuardError> {
        let cands = {
            let (Some(p), ranges, span_of) = set.predictor_and_ranges() else { return Ok(()) };
            let c = p.candidates(ranges, &span_of);
            p.assign(c, &span_of)
        };
        if cands.is_empty() {
            return Ok(());
        }
        let populate: Vec<bool> = cands.iter().map(|(r, _)| set.populates(r)).collect();
        // Trusted runs that still take a snapshot (`shadow-wp` where the device may write: its
        // refresh tells the application's writes from the GPU's by it); only the compare is skipped.
        let keep: Vec<bool> = cands.iter().map(|(r, _)| set.snapshots(r)).collect();
        // Before the snapshot: a foreign scan from here on makes these predictions stale.
        let epoch = self.foreign.lock().seq;
        let st = self.read_state()?;
        if !set.plan_current(&st) {
            return Ok(());
        }
        let (Some(p), _, _) = set.predictor_and_ranges() else { return Ok(()) };
        p.epoch = epoch;
        let page = page_size();
        // Per span: trusted or compared.
        let mut pages = vec![0usize; p.spans.all.len()];
        for (r, who) in &cands {
            pages[*who] += r.len() / page;
        }
        for (who, &n) in pages.iter().enumerate().filter(|(_, &n)| n > 0) {
            p.spans.all[who].decide(n, p.trust);
        }
        // Snapshot room: whole runs where compared (or kept), the last page where trusted.
        let snapped: Vec<bool> =
            cands.iter().zip(&keep).map(|((_, who), &k)| !p.spans.all[*who].trusted_now || k).collect();
        let mut placed = Vec::with_capacity(cands.len());
        let mut off = 0;
        for ((r, _), &s) in cands.iter().zip(&snapped) {
            placed.push(off);
            off += if s { r.len() } else { page };
        }
        p.snap.resize(off.max(p.snap.len()), 0);
        for (((r, _), &o), &s) in cands.iter().zip(&placed).zip(&snapped) {
            let from = if s { r.start } else { r.end - page };
            // SAFETY: `from..r.end` lies inside spans of the set, registered and mapped while the
            // caller holds it; the snapshot has room (resized above) and does not overlap them.
            unsafe { std::ptr::copy_nonoverlapping(from as *const u8, p.snap.as_mut_ptr().add(o), r.end - from) };
        }
        // Snapshotted runs written since the scan re-protected them (possibly while we copied)
        // are not predicted. Trusted runs without a snapshot need no check: a page written since
        // is unprotected already, and the next scan reports every unprotected page.
        let mut written = Vec::new();
        let mut stats = ScanStats::default();
        for ((r, _), &s) in cands.iter().zip(&snapped) {
            if s {
                pagemap_scan_with(&st.pagemap, r.clone(), false, false, &mut written, &mut stats)?;
            }
        }
        let written = normalize(written);
        for ((((r, who), o), pop), s) in cands.into_iter().zip(placed).zip(populate).zip(snapped) {
            let trusted = p.spans.all[who].trusted_now;
            if !s {
                unprotect(&st.uffd, &r, pop)?;
                p.preds.push(Pred { r, off: usize::MAX, who, sample: Some(o) });
                continue;
            }
            for keep in subtract(std::slice::from_ref(&r), &written) {
                let off = o + (keep.start - r.start);
                debug_assert_eq!(off % page, 0);
                unprotect(&st.uffd, &keep, pop)?;
                let sample = trusted.then(|| off + keep.len() - page);
                p.preds.push(Pred { r: keep, off, who, sample });
            }
        }
        Ok(())
    }
}

/// Lifts the write protection of `r` (pages of a set's spans); `populate`: the memory is shared,
/// where the kernel leaves the entries read-only after the unprotect, so the first write would
/// still fault (without marking anything): `MADV_POPULATE_WRITE` makes them writable in one call
/// without writing data (`vma.rs`).
fn unprotect(uffd: &OwnedFd, r: &Range<usize>, populate: bool) -> Result<(), GuardError> {
    uffd_unprotect(uffd, r.clone()).map_err(|source| GuardError::Os { op: "UFFDIO_WRITEPROTECT(0)", source })?;
    if populate {
        // SAFETY: advice on page-aligned, mapped, registered pages of the set.
        unsafe { libc::madvise(r.start as *mut libc::c_void, r.len(), libc::MADV_POPULATE_WRITE) };
    }
    Ok(())
}

/// The last scans made outside span sets ([`WpTracker::scan`]), numbered.
#[derive(Default)]
pub(crate) struct ForeignScans {
    pub(super) seq: u64,
    ranges: std::collections::VecDeque<(u64, Range<usize>)>,
}

/// Foreign scans kept; predictions older than the oldest are not compared at all.
const FOREIGN_KEPT: usize = 256;

/// The foreign scans since a predictor's epoch.
pub(super) enum Since {
    Ranges(Vec<Range<usize>>),
    /// More than [`FOREIGN_KEPT`] ago: any page may have been scanned.
    Unknown,
}

impl ForeignScans {
    pub(super) fn note(&mut self, r: Range<usize>) {
        self.seq += 1;
        if self.ranges.len() == FOREIGN_KEPT {
            self.ranges.pop_front();
        }
        self.ranges.push_back((self.seq, r));
    }

    pub(super) fn since(&self, epoch: u64) -> Since {
        if self.seq == epoch {
            return Since::Ranges(Vec::new());
        }
        match self.ranges.front() {
            Some(&(first, _)) if first <= epoch + 1 => {
                Since::Ranges(self.ranges.iter().filter(|(n, _)| *n > epoch).map(|(_, r)| r.clone()).collect())
            }
            _ => Since::Unknown,
        }
    }
}

/// `a` minus `b` (both sorted, disjoint).
pub(super) fn subtract(a: &[Range<usize>], b: &[Range<usize>]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut j = 0;
    for r in a {
        let mut cur = r.start;
        while j < b.len() && b[j].end <= cur {
            j += 1;
        }
        let mut k = j;
        while k < b.len() && b[k].start < r.end {
            if b[k].start > cur {
                out.push(cur..b[k].start);
            }
            cur = cur.max(b[k].end);
            k += 1;
        }
        if cur < r.end {
            out.push(cur..r.end);
        }
    }
    out
}

/// Pages in both `a` and `b` (sorted, disjoint).
fn intersect_sorted(a: &[Range<usize>], b: &[Range<usize>]) -> Vec<Range<usize>> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        if let Some(r) = intersect(&a[i], &b[j]) {
            out.push(r);
        }
        if a[i].end < b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

#[cfg(test)]
// Run lists of one run are the point of several cases.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn subtract_and_intersect() {
        assert_eq!(subtract(&[0..10, 20..30], &[2..4, 8..22, 25..26]), vec![0..2, 4..8, 22..25, 26..30]);
        assert_eq!(subtract(&[0..10], &[]), vec![0..10]);
        assert_eq!(intersect_sorted(&[0..10, 20..30], &[5..25]), vec![5..10, 20..25]);
    }

    #[test]
    fn streams_and_hot_pages_are_predicted_within_bounds() {
        let p = page_size();
        let mut pr = Predictor::new(Prediction { enabled: true, budget: 4 * p, trust: true }).unwrap();
        pr.prev = vec![0..2 * p, 10 * p..11 * p];
        pr.last = vec![2 * p..4 * p, 10 * p..11 * p];
        // Stream: 2..4 continues 0..2, so 4..6 is predicted; 10..11 is hot. Budget: 4 pages.
        let whole = |_| Some(0..100 * p);
        assert_eq!(pr.candidates(&[0..100 * p], &whole), vec![4 * p..6 * p, 10 * p..11 * p]);
        assert_eq!(pr.candidates(&[0..5 * p], &whole), vec![4 * p..5 * p]);
        let mut pr = Predictor::new(Prediction { enabled: true, budget: p, trust: true }).unwrap();
        pr.prev = vec![0..p];
        pr.last = vec![0..p, 3 * p..4 * p];
        assert_eq!(pr.candidates(&[0..100 * p], &whole), vec![0..p]);
    }

    #[test]
    fn a_span_backing_off_leaves_the_room_to_the_others() {
        let p = page_size();
        let (a, b) = (0..200 * p, 200 * p..300 * p);
        let span = |x: usize| [a.clone(), b.clone()].into_iter().find(|s| s.contains(&x));
        let runs = |pr: &mut Predictor| {
            // Span a: 64 hot pages (written in both collections); span b: a stream.
            let hot: Vec<_> = (0..MAX_RUNS).map(|k| 2 * k * p..(2 * k + 1) * p).collect();
            pr.prev = [hot.clone(), vec![210 * p..212 * p]].concat();
            pr.last = [hot, vec![212 * p..214 * p]].concat();
        };
        let mut pr = Predictor::new(Prediction { enabled: true, budget: 1000 * p, trust: true }).unwrap();
        runs(&mut pr);
        let c = pr.candidates(&[0..300 * p], &span);
        assert_eq!((c.len(), c.last()), (MAX_RUNS, Some(&(126 * p..127 * p))), "a's hot pages fill the room");
        // Span a's predictions missed: it backs off, and b's stream is predicted.
        let (i, _) = pr.spans.entry(a.start);
        (pr.spans.all[i].predicted, pr.spans.all[i].changed) = (MAX_RUNS, 0);
        pr.spans.all[i].end();
        runs(&mut pr);
        let c = pr.candidates(&[0..300 * p], &span);
        assert_eq!(c, vec![214 * p..216 * p]);
        assert_eq!(pr.assign(c, &span).len(), 1);
    }

    #[test]
    fn a_ring_wraps_within_its_span() {
        let p = page_size();
        let span = |a: usize| (10 * p..20 * p).contains(&a).then(|| 10 * p..20 * p);
        let mut pr = Predictor::new(Prediction { enabled: true, budget: 64 * p, trust: true }).unwrap();
        // 3 pages a frame: 14..17 after 11..14 predicts 17..20.
        pr.prev = vec![11 * p..14 * p];
        pr.last = vec![14 * p..17 * p];
        assert_eq!(pr.candidates(&[0..100 * p], &span), vec![17 * p..20 * p]);
        // 16..19 after 13..16: 19..20, then 10..12 at the start of the span.
        pr.prev = vec![13 * p..16 * p];
        pr.last = vec![16 * p..19 * p];
        assert_eq!(pr.candidates(&[0..100 * p], &span), vec![10 * p..12 * p, 19 * p..20 * p]);
        // The wrapping frame wrote 19..20 and 10..12: next come 12..15.
        pr.prev = vec![16 * p..19 * p];
        pr.last = vec![10 * p..12 * p, 19 * p..20 * p];
        assert_eq!(pr.candidates(&[0..100 * p], &span), vec![12 * p..15 * p]);
        // Then 12..15 continues 10..12.
        pr.prev = vec![10 * p..12 * p, 19 * p..20 * p];
        pr.last = vec![12 * p..15 * p];
        assert_eq!(pr.candidates(&[0..100 * p], &span), vec![15 * p..18 * p]);
        // Wrapped between two collections: 10..12 after 18..20 (5 frames of 2 pages) goes on.
        pr.prev = vec![18 * p..20 * p];
        pr.last = vec![10 * p..12 * p];
        assert_eq!(pr.candidates(&[0..100 * p], &span), vec![12 * p..14 * p]);
        // A span written whole twice is hot, and not continued past itself.
        pr.prev = vec![10 * p..20 * p];
        pr.last = vec![10 * p..20 * p];
        assert_eq!(pr.candidates(&[0..100 * p], &span), vec![10 * p..20 * p]);
    }
}
