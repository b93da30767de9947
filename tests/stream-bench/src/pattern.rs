//! Which pages the CPU writes each frame: the write plan, independent of Vulkan.

use std::ops::Range;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// A ring buffer: one contiguous span per frame, starting where the last one ended.
    Ring,
    /// Scattered pages, chosen at random (distinct within a frame).
    Random,
    /// The whole span, every frame (the fraction is ignored).
    Full,
}

/// Deterministic generator (splitmix64), so runs under different tools write the same pages.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by rejection so there is no modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }
}

/// Produces the byte ranges written in each frame.
#[derive(Clone, Debug)]
pub struct Planner {
    pattern: Pattern,
    span: usize,
    page: usize,
    pages_per_frame: usize,
    ring_cursor: usize,
    rng: SplitMix,
    /// Page indices; the first `pages_per_frame` are the current random pick.
    perm: Vec<u32>,
}

impl Planner {
    /// `span` bytes, a multiple of `page`; `fraction_pct` of its pages written per frame (at
    /// least one page).
    pub fn new(pattern: Pattern, span: usize, page: usize, fraction_pct: f64, seed: u64) -> Planner {
        assert!(page > 0 && span >= page && span % page == 0, "span must be whole pages");
        let total = span / page;
        let pages_per_frame = match pattern {
            Pattern::Full => total,
            _ => ((total as f64 * fraction_pct / 100.0).round() as usize).clamp(1, total),
        };
        let perm = match pattern {
            Pattern::Random => (0..total as u32).collect(),
            _ => Vec::new(),
        };
        Planner { pattern, span, page, pages_per_frame, ring_cursor: 0, rng: SplitMix::new(seed), perm }
    }

    pub fn pages_per_frame(&self) -> usize {
        self.pages_per_frame
    }

    pub fn bytes_per_frame(&self) -> usize {
        self.pages_per_frame * self.page
    }

    /// The next frame's writes: ascending, non-overlapping, page-aligned, coalesced ranges.
    pub fn next_frame(&mut self, out: &mut Vec<Range<usize>>) {
        out.clear();
        let bytes = self.bytes_per_frame();
        match self.pattern {
            Pattern::Full => out.push(0..self.span),
            Pattern::Ring => {
                let start = self.ring_cursor;
                let end = start + bytes;
                if end <= self.span {
                    out.push(start..end);
                } else {
                    // Wrapped: the head of the span first, to keep the list ascending.
                    out.push(0..end - self.span);
                    out.push(start..self.span);
                }
                self.ring_cursor = end % self.span;
            }
            Pattern::Random => {
                // Partial Fisher-Yates: the first k entries become a uniform pick of k pages.
                let n = self.perm.len();
                for i in 0..self.pages_per_frame {
                    let j = i + self.rng.below((n - i) as u64) as usize;
                    self.perm.swap(i, j);
                }
                let mut picked: Vec<u32> = self.perm[..self.pages_per_frame].to_vec();
                picked.sort_unstable();
                for p in picked {
                    let s = p as usize * self.page;
                    match out.last_mut() {
                        Some(last) if last.end == s => last.end = s + self.page,
                        _ => out.push(s..s + self.page),
                    }
                }
            }
        }
    }
}

/// Bytes covered by a plan.
pub fn plan_bytes(plan: &[Range<usize>]) -> usize {
    plan.iter().map(|r| r.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PAGE: usize = 4096;

    fn check_shape(plan: &[Range<usize>], span: usize) {
        for r in plan {
            assert!(r.start < r.end && r.end <= span, "range {r:?} outside span {span}");
            assert_eq!(r.start % PAGE, 0);
            assert_eq!(r.end % PAGE, 0);
        }
        for w in plan.windows(2) {
            assert!(w[0].end < w[1].start, "not ascending and coalesced: {plan:?}");
        }
    }

    #[test]
    fn ring_advances_and_wraps() {
        let span = 10 * PAGE;
        let mut p = Planner::new(Pattern::Ring, span, PAGE, 40.0, 1);
        assert_eq!(p.pages_per_frame(), 4);
        let mut plan = Vec::new();
        p.next_frame(&mut plan);
        assert_eq!(plan, vec![0..4 * PAGE]);
        p.next_frame(&mut plan);
        assert_eq!(plan, vec![4 * PAGE..8 * PAGE]);
        p.next_frame(&mut plan);
        assert_eq!(plan, vec![0..2 * PAGE, 8 * PAGE..10 * PAGE]);
        p.next_frame(&mut plan);
        assert_eq!(plan, vec![2 * PAGE..6 * PAGE]);
    }

    #[test]
    fn small_fraction_writes_at_least_one_page() {
        let p = Planner::new(Pattern::Random, 16 * PAGE, PAGE, 0.1, 1);
        assert_eq!(p.pages_per_frame(), 1);
    }

    #[test]
    fn full_ignores_fraction() {
        let mut p = Planner::new(Pattern::Full, 8 * PAGE, PAGE, 1.0, 1);
        let mut plan = Vec::new();
        p.next_frame(&mut plan);
        assert_eq!(plan, vec![0..8 * PAGE]);
    }

    #[test]
    fn random_differs_between_frames_and_is_deterministic() {
        let mut a = Planner::new(Pattern::Random, 4096 * PAGE, PAGE, 1.0, 7);
        let mut b = Planner::new(Pattern::Random, 4096 * PAGE, PAGE, 1.0, 7);
        let (mut pa, mut pb, mut prev) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..5 {
            a.next_frame(&mut pa);
            b.next_frame(&mut pb);
            assert_eq!(pa, pb);
            assert_ne!(pa, prev);
            prev = pa.clone();
        }
    }

    proptest! {
        #[test]
        fn plans_cover_exactly_the_requested_pages(
            pages in 1usize..300,
            pct in 0.05f64..100.0,
            pattern in prop_oneof![Just(Pattern::Ring), Just(Pattern::Random), Just(Pattern::Full)],
            seed in any::<u64>(),
            frames in 1usize..6,
        ) {
            let span = pages * PAGE;
            let mut p = Planner::new(pattern, span, PAGE, pct, seed);
            let mut plan = Vec::new();
            for _ in 0..frames {
                p.next_frame(&mut plan);
                check_shape(&plan, span);
                prop_assert_eq!(plan_bytes(&plan), p.bytes_per_frame());
            }
        }
    }
}
