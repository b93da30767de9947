//! Buffers producers fill and the writer thread gives back, so a submit allocates nothing in the
//! steady state: block-sized buffers, small ones in a few size classes (an event record, a block
//! of a few pages), and run tables. One lock for all of them, taken once per step.

use parking_lot::Mutex;

/// Capacities of the small classes: an event record, then blocks of 1, 2, 4, 8 and 16 pages
/// (with header and runs); a block is at most twice the size of its class's buffer.
const SMALL: [usize; 6] = [512, 4352, 8448, 16640, 33024, 66560];
/// Small buffers kept per class (at most about 2.6 MiB in all, reached only if that many
/// records were in flight at once).
const SMALL_KEEP: [usize; 6] = [256, 256, 32, 16, 8, 8];
/// Run tables kept (one per dirty record being built).
const RUNS_KEEP: usize = 16;

pub(super) struct Pools {
    inner: Mutex<Inner>,
    /// Capacity of a block-sized buffer.
    big_capacity: usize,
    /// Block-sized buffers kept at most.
    big_max: usize,
}

struct Inner {
    big: Vec<Vec<u8>>,
    small: [Vec<Vec<u8>>; 6],
    runs: Vec<Vec<(u64, u64)>>,
}

impl Pools {
    pub(super) fn new(big_capacity: usize, big_max: usize) -> Pools {
        Pools {
            inner: Mutex::new(Inner {
                big: Vec::new(),
                small: SMALL_KEEP.map(Vec::with_capacity),
                runs: Vec::with_capacity(RUNS_KEEP),
            }),
            big_capacity,
            big_max,
        }
    }

    pub(super) fn big_capacity(&self) -> usize {
        self.big_capacity
    }

    /// An empty block-sized buffer, and a run table unless `runs` has room already.
    pub(super) fn take_block(&self, runs: &mut Vec<(u64, u64)>) -> Vec<u8> {
        let mut p = self.inner.lock();
        if runs.capacity() == 0 {
            if let Some(r) = p.runs.pop() {
                *runs = r;
            }
        }
        p.big.pop().unwrap_or_else(|| Vec::with_capacity(self.big_capacity))
    }

    /// An empty buffer with room for `len` bytes, of the smallest class that fits.
    pub(super) fn take_small(&self, len: usize) -> Vec<u8> {
        let Some(c) = SMALL.iter().position(|&cap| len <= cap) else { return Vec::with_capacity(len) };
        self.inner.lock().small[c].pop().unwrap_or_else(|| Vec::with_capacity(SMALL[c]))
    }

    /// `block`'s bytes in a small buffer of the class that fits them, and `block` kept for
    /// reuse, under one lock; a copy of its own size when no class fits. Also returns the
    /// capacity dropped (0 when `block` was kept).
    pub(super) fn to_small(&self, block: Vec<u8>) -> (Vec<u8>, usize) {
        let Some(c) = SMALL.iter().position(|&cap| block.len() <= cap) else {
            let copy = block.as_slice().to_vec();
            return (copy, self.give(block));
        };
        let mut p = self.inner.lock();
        let mut small = p.small[c].pop().unwrap_or_else(|| Vec::with_capacity(SMALL[c]));
        small.extend_from_slice(&block);
        let dropped = Self::keep(&mut p, block, self.big_capacity, self.big_max);
        (small, dropped)
    }

    /// Gives a buffer back: kept by its capacity's class while there is room. Returns the
    /// capacity dropped (0 when kept).
    pub(super) fn give(&self, buf: Vec<u8>) -> usize {
        let mut p = self.inner.lock();
        Self::keep(&mut p, buf, self.big_capacity, self.big_max)
    }

    fn keep(p: &mut Inner, mut buf: Vec<u8>, big_capacity: usize, big_max: usize) -> usize {
        let cap = buf.capacity();
        buf.clear();
        if cap >= big_capacity {
            if p.big.len() < big_max {
                p.big.push(buf);
                return 0;
            }
            return cap;
        }
        match SMALL.iter().rposition(|&c| cap >= c) {
            Some(c) if p.small[c].len() < SMALL_KEEP[c] => {
                p.small[c].push(buf);
                0
            }
            _ => cap,
        }
    }

    /// Gives a run table back (emptied).
    pub(super) fn give_runs(&self, mut runs: Vec<(u64, u64)>) {
        if runs.capacity() == 0 {
            return;
        }
        runs.clear();
        let mut p = self.inner.lock();
        if p.runs.len() < RUNS_KEEP {
            p.runs.push(runs);
        }
    }

    /// Keeps at most `keep` block-sized buffers; returns the bytes of those dropped.
    pub(super) fn shrink(&self, keep: usize) -> usize {
        let spare: Vec<Vec<u8>> = {
            let mut p = self.inner.lock();
            let keep = p.big.len().min(keep);
            p.big.split_off(keep)
        };
        spare.iter().map(Vec::capacity).sum()
    }

    /// Block-sized buffers kept.
    pub(super) fn len(&self) -> usize {
        self.inner.lock().big.len()
    }
}
