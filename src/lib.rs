//! vkdirty core: the page-guard engine (`guard`), the trace stream (`trace`) and configuration
//! (`config`). Nothing here needs a Vulkan driver; the `layer` crate translates the Vulkan ABI into
//! calls on this crate.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod config;
pub mod gfxr;
pub mod guard;
pub mod session;
pub mod sidecar;
pub mod trace;
