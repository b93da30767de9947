//! The trap floor's probe: bare async-WP on anonymous memory, through vkdirty's guard module.

use crate::floors::TrapProbe;

/// A probe over `span` bytes, or why there is none.
pub fn probe(_span: usize) -> Result<Box<dyn TrapProbe>, String> {
    Err("trap floor not measured: vkdirty::guard has no async-WP API in this build".into())
}
