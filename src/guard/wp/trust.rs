//! Per-span bookkeeping of write prediction: back-off, and trust (see `predict.rs` and
//! docs/design.md, "Trusted predictions"). One entry per span predicted lately (keyed by the
//! span's first page), at most [`MAX_SPANS`], so a set's unpredictable spans (a readback buffer
//! the GPU rewrites whole) neither back off nor keep from trust the spans it predicts well.

/// Spans with bookkeeping at most; the one predicted longest ago makes room.
pub(super) const MAX_SPANS: usize = 64;
/// Longest back-off, in collections, after predictions that mostly missed.
const MAX_BACKOFF: u32 = 64;
/// Verified collections in a row whose predictions hit before they are trusted.
const TRUST_AFTER: u32 = 2;
/// A trusted prediction is verified (compared) again after this many collections.
pub(super) const VERIFY_EVERY: u32 = 16;
/// Hit rate a verified collection needs, as the over-capture it allows: predicted pages not
/// written at most 1/20 of those written, so trusting them captures ≤ 1.05× the written pages.
pub(super) const TRUST_HITS: usize = 20;

#[derive(Default)]
pub(super) struct SpanTrust {
    /// The span's first page; `usize::MAX`: free.
    pub(super) key: usize,
    /// The prediction that last used it (which entry makes room).
    used: u64,
    backoff: u32,
    skip: u32,
    /// Verified collections in a row whose predictions hit.
    hits_in_row: u32,
    /// Trusted collections since the last verified one.
    since_verify: u32,
    /// Pages predicted now, and at the last verified hit.
    made: usize,
    verified: usize,
    /// The current predictions of the span are trusted (not compared).
    pub(super) trusted_now: bool,
    /// This collection's measurement: compared pages and those found changed; samples.
    pub(super) predicted: usize,
    pub(super) changed: usize,
    pub(super) sample_hits: usize,
    pub(super) sample_misses: usize,
}

/// The bookkeeping of a set's spans.
#[derive(Default)]
pub(super) struct Spans {
    pub(super) all: Vec<SpanTrust>,
    tick: u64,
}

impl Spans {
    /// Starts a prediction: one collection passes for every back-off.
    pub(super) fn tick(&mut self) {
        self.tick += 1;
        for s in &mut self.all {
            s.skip = s.skip.saturating_sub(1);
        }
    }

    /// The entry of the span starting at `key` (made, evicting the least recently used, when
    /// missing) and whether it is backing off now.
    pub(super) fn entry(&mut self, key: usize) -> (usize, bool) {
        let i = match self.all.iter().position(|s| s.key == key) {
            Some(i) => i,
            None if self.all.len() < MAX_SPANS => {
                self.all.push(SpanTrust { key, ..Default::default() });
                self.all.len() - 1
            }
            None => {
                let (i, _) = self
                    .all
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| if s.key == usize::MAX { 0 } else { s.used + 1 })
                    .expect("full");
                self.all[i] = SpanTrust { key, ..Default::default() };
                i
            }
        };
        self.all[i].used = self.tick;
        (i, self.all[i].skip > 0)
    }

    /// Whether the span starting at `key` is backing off now; unlike [`entry`](Self::entry)
    /// it neither makes an entry nor counts as a use.
    pub(super) fn backing_off(&self, key: usize) -> bool {
        self.all.iter().any(|s| s.key == key && s.skip > 0)
    }

    /// The span starting at `key` left the set.
    pub(super) fn forget(&mut self, key: usize) {
        for s in self.all.iter_mut().filter(|s| s.key == key) {
            *s = SpanTrust { key: usize::MAX, ..Default::default() };
        }
    }
}

impl SpanTrust {
    /// Whether this span's predictions about to be made (`pages` of them) are trusted.
    pub(super) fn decide(&mut self, pages: usize, trust: bool) -> bool {
        // The same volume as the verified hits (a ring's runs move, their size stays).
        let same = pages * 8 >= self.verified * 7 && pages * 8 <= self.verified * 9;
        let t = trust && self.hits_in_row >= TRUST_AFTER && self.since_verify < VERIFY_EVERY - 1 && same;
        self.since_verify = if t { self.since_verify + 1 } else { 0 };
        self.trusted_now = t;
        self.made = pages;
        t
    }

    /// After a collection: trusted predictions end at a missed sample; compared ones back off
    /// exponentially when mostly missed, and count towards trust when they hit.
    pub(super) fn end(&mut self) {
        if std::mem::take(&mut self.trusted_now) {
            if self.sample_misses * TRUST_HITS > self.sample_hits {
                self.hits_in_row = 0;
            }
        } else if self.predicted > 0 {
            if self.changed * 4 < self.predicted {
                self.backoff = (self.backoff * 2).clamp(1, MAX_BACKOFF);
                // `Spans::tick` takes one off before the next prediction looks.
                self.skip = self.backoff + 1;
            } else {
                self.backoff = 0;
            }
            let missed = self.predicted - self.changed.min(self.predicted);
            if missed * TRUST_HITS <= self.changed {
                self.hits_in_row = self.hits_in_row.saturating_add(1);
                self.verified = self.made;
            } else {
                self.hits_in_row = 0;
            }
        }
        (self.predicted, self.changed, self.sample_hits, self.sample_misses) = (0, 0, 0, 0);
    }
}
