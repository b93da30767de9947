//! The fixed-capacity, double-buffered table of shadow regions the fault handler searches
//! (async-signal-safe on the reading side; see "The fault handler" in the module above).

use super::guarded::Guarded;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Regions the fault handler can find at once.
pub const TABLE_CAPACITY: usize = 8192;

struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    region: AtomicPtr<Guarded>,
}

struct Table {
    len: AtomicUsize,
    slots: [Slot; TABLE_CAPACITY],
}

struct FaultTable {
    current: AtomicUsize,
    readers: [AtomicUsize; 2],
    tables: [Table; 2],
}

const fn empty_table() -> Table {
    Table {
        len: AtomicUsize::new(0),
        slots: [const {
            Slot { start: AtomicUsize::new(0), end: AtomicUsize::new(0), region: AtomicPtr::new(std::ptr::null_mut()) }
        }; TABLE_CAPACITY],
    }
}

static FAULTS: FaultTable = FaultTable {
    current: AtomicUsize::new(0),
    readers: [AtomicUsize::new(0), AtomicUsize::new(0)],
    tables: [empty_table(), empty_table()],
};

/// The authoritative list (start, end, region), sorted by start; the writers' lock.
static TABLE_WRITER: Mutex<Vec<(usize, usize, usize)>> = parking_lot::const_mutex(Vec::new());

fn wait_readers(buf: usize) {
    while FAULTS.readers[buf].load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
}

/// Publishes `list` into the inactive buffer, flips, and waits until no handler still reads the
/// old one.
fn publish(list: &[(usize, usize, usize)]) {
    let cur = FAULTS.current.load(Ordering::SeqCst);
    let next = cur ^ 1;
    wait_readers(next);
    let t = &FAULTS.tables[next];
    for (slot, &(s, e, r)) in t.slots.iter().zip(list) {
        slot.start.store(s, Ordering::Relaxed);
        slot.end.store(e, Ordering::Relaxed);
        slot.region.store(r as *mut Guarded, Ordering::Relaxed);
    }
    t.len.store(list.len(), Ordering::Relaxed);
    FAULTS.current.store(next, Ordering::SeqCst);
    wait_readers(cur);
}

pub(super) fn table_insert(g: &Guarded) -> bool {
    let mut list = TABLE_WRITER.lock();
    if list.len() >= TABLE_CAPACITY {
        return false;
    }
    let start = g.map.view.app as usize;
    let at = list.partition_point(|e| e.0 < start);
    list.insert(at, (start, start + g.map.view.span, g as *const Guarded as usize));
    publish(&list);
    true
}

/// Removes `g`; on return no fault handler refers to it any more.
pub(super) fn table_remove(g: &Guarded) {
    let mut list = TABLE_WRITER.lock();
    let me = g as *const Guarded as usize;
    list.retain(|e| e.2 != me);
    publish(&list);
}

/// Finds the region whose application view holds `addr` and runs `f` on it while the table
/// buffer is pinned. Async-signal-safe.
pub(super) fn with_region<R>(addr: usize, f: impl FnOnce(&Guarded) -> R) -> Option<R> {
    let buf = loop {
        let b = FAULTS.current.load(Ordering::SeqCst);
        FAULTS.readers[b].fetch_add(1, Ordering::SeqCst);
        if FAULTS.current.load(Ordering::SeqCst) == b {
            break b;
        }
        FAULTS.readers[b].fetch_sub(1, Ordering::SeqCst);
    };
    let t = &FAULTS.tables[buf];
    let n = t.len.load(Ordering::Relaxed).min(TABLE_CAPACITY);
    // Last slot whose start is <= addr.
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if t.slots[mid].start.load(Ordering::Relaxed) <= addr {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let mut out = None;
    if lo > 0 {
        let s = &t.slots[lo - 1];
        if addr < s.end.load(Ordering::Relaxed) {
            let r = s.region.load(Ordering::Relaxed);
            // SAFETY: a region in the current buffer stays alive until this buffer's readers
            // (us included) have left (`table_remove` waits for them).
            out = Some(f(unsafe { &*r }));
        }
    }
    FAULTS.readers[buf].fetch_sub(1, Ordering::SeqCst);
    out
}
