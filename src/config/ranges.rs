//! Frame and submit number sets (`10-20,100,200-`).

use std::fmt;

/// A set of 1-based numbers written like `10-20,100,200-`: single numbers, inclusive ranges and
/// open-ended ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeSet {
    /// Sorted, merged, inclusive `(first, last)`; `last == u64::MAX` is open-ended.
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    pub fn parse(s: &str) -> Option<RangeSet> {
        let mut ranges = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => {
                    let a: u64 = a.trim().parse().ok()?;
                    let b = b.trim();
                    let b: u64 = if b.is_empty() { u64::MAX } else { b.parse().ok()? };
                    (a, b)
                }
                None => {
                    let a: u64 = part.parse().ok()?;
                    (a, a)
                }
            };
            if a == 0 || b < a {
                return None;
            }
            ranges.push((a, b));
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Some(RangeSet { ranges: merged })
    }

    pub fn contains(&self, n: u64) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= n && n <= b)
    }

    /// Whether any member is `>= n` (so capture may still resume at or after `n`).
    pub fn any_at_or_after(&self, n: u64) -> bool {
        self.ranges.last().is_some_and(|&(_, b)| b >= n)
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(a, b)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match (a, b) {
                (a, b) if a == b => write!(f, "{a}")?,
                (a, u64::MAX) => write!(f, "{a}-")?,
                (a, b) => write!(f, "{a}-{b}")?,
            }
        }
        Ok(())
    }
}
