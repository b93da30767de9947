//! A capture session without Vulkan: what the layer keeps between calls and the decisions it
//! takes from it. The layer translates each intercepted call into a call here (and into the guard
//! backends and the trace writer); everything here is testable without a device.
//!
//! - [`memory`]: allocation ids, map/unmap bookkeeping, regions back to allocations, shadows.
//! - [`window`]: submit and frame numbering, the FRAMES/SUBMITS/trigger window.
//! - [`sync_points`]: which host synchronisation points refresh shadows.
//! - [`TraceSlot`]: the trace's life cycle (not opened, open, closed; numbered reopenings).

pub mod memory;
pub mod sync_points;
pub mod window;

use std::sync::Arc;

use crate::trace::{Existing, Totals, TraceError, TraceWriter};

pub use memory::{clip, must_collect, Kept, Mapping, Memories, Memory, RegionRef, Resource, Untracked};
pub use sync_points::SyncFilter;
pub use window::{Mark, PresentStep, SubmitStep, Trigger, Window};

/// The trace of a capture.
#[derive(Default)]
pub enum Trace {
    /// Opened at the first device.
    #[default]
    NotOpened,
    /// Shared: a collection holds its own reference while it writes (outside the session's lock).
    Open(Arc<TraceWriter>),
    /// Could not be created, or has been closed (a later device opens a new one).
    Closed,
}

/// The trace's life cycle.
#[derive(Default)]
pub struct TraceSlot {
    trace: Trace,
    /// Traces opened so far (a second one gets a numbered name).
    opened: u32,
}

impl TraceSlot {
    /// The writer, while the trace is open and writing has not failed.
    pub fn writer(&self) -> Option<&Arc<TraceWriter>> {
        match &self.trace {
            Trace::Open(w) if w.is_active() => Some(w),
            _ => None,
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.trace, Trace::Open(_))
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.trace, Trace::Closed)
    }

    /// A trace is about to be opened: what to do with an existing file. A later trace of the
    /// process never replaces the first one.
    pub fn opening(&mut self, first: Existing) -> Existing {
        self.opened += 1;
        if self.opened > 1 {
            Existing::Next
        } else {
            first
        }
    }

    pub fn opened(&mut self, w: TraceWriter) {
        self.trace = Trace::Open(Arc::new(w));
    }

    /// No trace (it could not be created, or is off).
    pub fn off(&mut self) {
        self.trace = Trace::Closed;
    }

    /// Closes an open trace: its totals, or `None` when none was open.
    pub fn close(&mut self) -> Option<Result<Totals, TraceError>> {
        match std::mem::replace(&mut self.trace, Trace::Closed) {
            Trace::Open(w) => Some(w.close()),
            _ => None,
        }
    }
}

/// The process-wide part of a capture, behind the layer's small lock (held briefly, never across a
/// collection): the trace, numbering and window, sync points, allocation ids. What belongs to one
/// device (its allocations and mappings, [`Memories`]) is behind that device's own lock; see
/// docs/design.md, "Locking".
pub struct Session<T> {
    pub trace: TraceSlot,
    pub app_name: String,
    pub engine_name: String,
    pub window: Window<T>,
    pub sync: SyncFilter,
    /// Allocation ids handed out (1, 2, ... in allocation order, across devices).
    allocations: u64,
}

impl<T: Trigger> Session<T> {
    pub fn new(trigger: Option<T>) -> Session<T> {
        Session {
            trace: TraceSlot::default(),
            app_name: String::new(),
            engine_name: String::new(),
            window: Window::new(trigger),
            sync: SyncFilter::default(),
            allocations: 0,
        }
    }

    pub fn writer(&self) -> Option<&Arc<TraceWriter>> {
        self.trace.writer()
    }

    /// The id of a new allocation (of any device).
    pub fn next_allocation_id(&mut self) -> u64 {
        self.allocations += 1;
        self.allocations
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Event, WriterOptions};

    #[test]
    fn a_second_trace_never_replaces_the_first() {
        let mut t = TraceSlot::default();
        assert!(!t.is_open() && !t.is_closed() && t.writer().is_none());
        assert!(matches!(t.opening(Existing::Overwrite), Existing::Overwrite));
        t.off();
        assert!(t.is_closed() && t.close().is_none());
        assert!(matches!(t.opening(Existing::Overwrite), Existing::Next));
    }

    struct NoTrigger;
    impl Trigger for NoTrigger {
        fn is_on(&self) -> bool {
            false
        }
        fn check(&mut self) -> bool {
            false
        }
        fn check_at_submit(&mut self) -> bool {
            false
        }
        fn consumed(&mut self) {}
    }

    #[test]
    fn allocation_ids_count_across_devices() {
        let mut s = Session::<NoTrigger>::new(None);
        assert_eq!((s.next_allocation_id(), s.next_allocation_id(), s.next_allocation_id()), (1, 2, 3));
    }

    #[test]
    fn closing_an_open_trace_gives_its_totals_once() {
        let path = std::env::temp_dir().join(format!("vkdirty-session-unit-{}.vkd", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let w = TraceWriter::with_sink(file, path.display().to_string(), WriterOptions::default()).unwrap();
        let mut t = TraceSlot::default();
        t.opened(w);
        assert!(t.is_open());
        t.writer().unwrap().record(&Event::Frame { frame: 1, last_submit: 0, timestamp_ns: 0 });
        let totals = t.close().unwrap().unwrap();
        assert_eq!(totals.frames, 1);
        assert!(t.is_closed() && t.writer().is_none() && t.close().is_none());
        let _ = std::fs::remove_file(&path);
    }
}
