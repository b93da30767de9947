//! The value types of the settings.

use crate::guard::BackendKind;
use std::fmt;

/// Which backend tracks a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// Per mapping, the first of [`AUTO_ORDER`] that accepts it.
    Auto,
    Fixed(BackendKind),
}

/// The order `auto` tries backends in, per mapping. `host-import` is not here: it changes how
/// memory is allocated, so it is decided per allocation (see [`BackendChoice::imports_host_memory`])
/// and tried first for the mappings of memory it imported. `full` never refuses a mapping, so a
/// mapping is always tracked.
pub const AUTO_ORDER: [BackendKind; 4] =
    [BackendKind::AsyncWp, BackendKind::ShadowWp, BackendKind::Shadow, BackendKind::Full];

impl BackendChoice {
    /// The backends to try, in order.
    pub fn order(self) -> &'static [BackendKind] {
        match self {
            // Memory host-import could not import is tracked as auto tracks it.
            BackendChoice::Auto | BackendChoice::Fixed(BackendKind::HostImport) => &AUTO_ORDER,
            BackendChoice::Fixed(k) => {
                let i = BackendKind::ALL.iter().position(|x| *x == k).unwrap_or(0);
                std::slice::from_ref(&BackendKind::ALL[i])
            }
        }
    }

    /// Whether host-visible memory is allocated by importing the layer's own anonymous memory
    /// (`VK_EXT_external_memory_host`), where the driver and the allocation allow it.
    pub fn imports_host_memory(self) -> bool {
        matches!(self, BackendChoice::Auto | BackendChoice::Fixed(BackendKind::HostImport))
    }

    /// Whether a mapping may end up behind a shadow that is copied to the real memory page by
    /// page (so resources sharing a page with GPU-written ones could be clobbered).
    pub fn may_shadow(self) -> bool {
        self.order().iter().any(|k| matches!(k, BackendKind::Shadow | BackendKind::ShadowWp))
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendChoice::Auto => f.write_str("auto"),
            BackendChoice::Fixed(k) => f.write_str(k.name()),
        }
    }
}

/// When a shadow (`shadow`, `shadow-wp`) brings what the GPU wrote into the application's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowRefresh {
    /// Never: for applications that never read GPU-written mapped memory.
    Never,
    /// At `vkInvalidateMappedMemoryRanges` (its ranges) and, for `HOST_CACHED` memory types
    /// (where read-back buffers live), at every host synchronisation point.
    Cached,
    /// At `vkInvalidateMappedMemoryRanges` and at every host synchronisation point, every type.
    Always,
}

impl ShadowRefresh {
    pub fn name(self) -> &'static str {
        match self {
            ShadowRefresh::Never => "never",
            ShadowRefresh::Cached => "cached",
            ShadowRefresh::Always => "always",
        }
    }

    /// Whether a host synchronisation point refreshes mappings of a memory type with
    /// `host_cached` set as given.
    pub fn at_sync_points(self, host_cached: bool) -> bool {
        match self {
            ShadowRefresh::Never => false,
            ShadowRefresh::Cached => host_cached,
            ShadowRefresh::Always => true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Lz4,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
}

impl LogLevel {
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// `VKDIRTY_HOST_IMPORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostImport {
    Off,
    /// Resources are made external where that hides from them at most memory types that are
    /// both device-local and host-visible (no other type offers both; the data goes to system
    /// memory instead).
    On,
    /// Resources are made external only where their memory types stay exactly the same.
    Strict,
}

/// `VKDIRTY_LAYERS_BELOW`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayersBelow {
    /// Capture and unknown layers below turn host-import off.
    Auto,
    /// Host-import whatever is below.
    Ignore,
}
