//! Page ranges: rounding, intersection, merging, and the per-page user count of the registered
//! pages.

use crate::guard::page_size;
use std::collections::BTreeMap;
use std::ops::Range;

pub(crate) fn page_floor(a: usize) -> usize {
    a & !(page_size() - 1)
}

pub(crate) fn page_ceil(a: usize) -> usize {
    a.saturating_add(page_size() - 1) & !(page_size() - 1)
}

pub(super) fn overlaps(a: &Range<usize>, b: &Range<usize>) -> bool {
    a.start < b.end && b.start < a.end
}

pub(crate) fn intersect(a: &Range<usize>, b: &Range<usize>) -> Option<Range<usize>> {
    let r = a.start.max(b.start)..a.end.min(b.end);
    (r.start < r.end).then_some(r)
}

/// Sorts and merges overlapping or touching ranges.
pub(crate) fn normalize(mut v: Vec<Range<usize>>) -> Vec<Range<usize>> {
    v.retain(|r| r.start < r.end);
    v.sort_unstable_by_key(|r| r.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Users per page, as disjoint address segments with a count.
#[derive(Default)]
pub(super) struct PageUsers {
    segs: BTreeMap<usize, (usize, u32)>,
}

impl PageUsers {
    fn split_at(&mut self, at: usize) {
        if let Some((&s, &(e, c))) = self.segs.range(..at).next_back() {
            if e > at {
                self.segs.insert(s, (at, c));
                self.segs.insert(at, (e, c));
            }
        }
    }

    /// Adds one user to every page of `r`; returns the sub-ranges that had none.
    pub(super) fn add(&mut self, r: Range<usize>) -> Vec<Range<usize>> {
        self.split_at(r.start);
        self.split_at(r.end);
        let mut fresh = Vec::new();
        let mut cur = r.start;
        let inside: Vec<usize> = self.segs.range(r.start..r.end).map(|(&s, _)| s).collect();
        for s in inside {
            let seg = self.segs.get_mut(&s).expect("listed");
            if s > cur {
                fresh.push(cur..s);
            }
            seg.1 += 1;
            cur = seg.0;
        }
        if cur < r.end {
            fresh.push(cur..r.end);
        }
        for f in &fresh {
            self.segs.insert(f.start, (f.end, 1));
        }
        fresh
    }

    /// Removes one user from every page of `r`; returns the sub-ranges left with none.
    pub(super) fn remove(&mut self, r: Range<usize>) -> Vec<Range<usize>> {
        self.split_at(r.start);
        self.split_at(r.end);
        let inside: Vec<usize> = self.segs.range(r.start..r.end).map(|(&s, _)| s).collect();
        let mut gone = Vec::new();
        for s in inside {
            let seg = self.segs.get_mut(&s).expect("listed");
            seg.1 -= 1;
            if seg.1 == 0 {
                let e = seg.0;
                self.segs.remove(&s);
                gone.push(s..e);
            }
        }
        normalize(gone)
    }

    /// Every registered page, coalesced.
    pub(super) fn registered(&self) -> Vec<Range<usize>> {
        normalize(self.segs.iter().map(|(&s, &(e, _))| s..e).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_users_count_per_page() {
        let mut u = PageUsers::default();
        assert_eq!(u.add(0x1000..0x4000), vec![0x1000..0x4000]);
        assert_eq!(u.add(0x3000..0x6000), vec![0x4000..0x6000]);
        assert_eq!(u.add(0x0000..0x8000), vec![0x0000..0x1000, 0x6000..0x8000]);
        assert_eq!(u.remove(0x0000..0x8000), vec![0x0000..0x1000, 0x6000..0x8000]);
        assert_eq!(u.remove(0x1000..0x4000), vec![0x1000..0x3000]);
        assert_eq!(u.registered(), vec![0x3000..0x6000]);
        assert_eq!(u.remove(0x3000..0x6000), vec![0x3000..0x6000]);
        assert!(u.registered().is_empty());
    }

    #[test]
    fn normalize_merges_touching_ranges() {
        assert_eq!(normalize(vec![5..7, 0..2, 2..3, 6..9, 4..4]), vec![0..3, 5..9]);
    }
}
