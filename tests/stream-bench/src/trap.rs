//! The trap floor's probe: bare async-WP on anonymous memory through vkdirty's write-protect
//! tracker (`vkdirty::guard::wp`): one fault per written page, one `PAGEMAP_SCAN` walk of the
//! span per frame.

use crate::floors::{floor_memory, Anon, TrapProbe};
use std::ops::Range;
use vkdirty::guard::wp::{self, WpSpan, WpTracker};
use vkdirty::guard::BackendKind;

struct WpProbe {
    mem: Anon,
    tracker: &'static WpTracker,
    span: Option<WpSpan>,
    found: Vec<Range<usize>>,
}

/// A probe over `span` bytes, or why there is none.
pub fn probe(span: usize) -> Result<Box<dyn TrapProbe>, String> {
    let tracker = wp::tracker(BackendKind::AsyncWp).map_err(|e| format!("trap floor not measured: {e}"))?;
    let mem = floor_memory(span).map_err(|e| format!("trap floor not measured: mmap: {e}"))?;
    Ok(Box::new(WpProbe { mem, tracker, span: None, found: Vec::new() }))
}

impl TrapProbe for WpProbe {
    fn arm(&mut self) -> Result<(), String> {
        let base = self.mem.ptr() as usize;
        let s = self
            .tracker
            .register(base, self.mem.len(), BackendKind::AsyncWp)
            .map_err(|e| format!("trap floor not measured: {e}"))?;
        self.span = Some(s);
        Ok(())
    }

    fn scan(&mut self, out: &mut Vec<Range<usize>>) -> Result<(), String> {
        let span = self.span.as_ref().ok_or("trap probe not armed")?;
        let base = self.mem.ptr() as usize;
        self.tracker
            .scan(span, base..base + self.mem.len(), &mut self.found)
            .map_err(|e| format!("trap floor scan: {e}"))?;
        out.clear();
        out.extend(self.found.iter().map(|r| r.start - base..r.end - base));
        Ok(())
    }

    fn memory(&self) -> &Anon {
        &self.mem
    }
}

impl Drop for WpProbe {
    fn drop(&mut self) {
        if let Some(s) = self.span.take() {
            let _ = self.tracker.unregister(s);
        }
    }
}
