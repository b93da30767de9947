//! The intercepted entry points, by concern. Each looks its device up in the registry
//! ([`crate::dispatch::dev_of`]), lets capture (and host-import) do its part and calls down the
//! next layer's function of the name the application called; a capture failure is a log line
//! inside `capture`, never a changed result. Which names reach which hook is in `entry/table.rs`.

use ash::vk;

pub mod lifecycle;
pub mod memory;
pub mod requirements;
pub mod resources;
pub mod submit;
pub mod sync_points;

/// The result to return when the entry point the application called has no next function.
const NO_NEXT: vk::Result = vk::Result::ERROR_INITIALIZATION_FAILED;
