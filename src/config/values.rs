//! The value types of the settings.

use crate::guard::BackendKind;
use std::fmt;

/// `VKDIRTY_BACKEND`: what the user chose. Parsed here only ([`BackendChoice::parse`]); the
/// layer asks it which backends to try for a mapping and whether to import host memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// Host-import where possible, then per mapping the first of [`AUTO_ORDER`] that accepts it.
    Auto,
    /// As `auto`; a device where host memory cannot be imported is a warning, not a note.
    HostImport,
    /// This backend for every mapping (never [`BackendKind::OwnedWp`]: only memory the layer
    /// owns can be tracked with it, and `host-import` chooses that).
    Fixed(BackendKind),
}

/// The order `auto` tries backends in, per mapping. Memory the layer imported is not here: it is
/// tracked with [`BackendKind::OwnedWp`] first (see [`BackendChoice::mapping_order`]). `full`
/// never refuses a mapping, so a mapping is always tracked.
pub const AUTO_ORDER: [BackendKind; 4] =
    [BackendKind::AsyncWp, BackendKind::ShadowWp, BackendKind::Shadow, BackendKind::Full];

impl BackendChoice {
    /// Every choice, in the order the settings table lists them.
    pub const ALL: [BackendChoice; 7] = [
        BackendChoice::Auto,
        BackendChoice::Fixed(BackendKind::AsyncWp),
        BackendChoice::Fixed(BackendKind::ShadowWp),
        BackendChoice::Fixed(BackendKind::Shadow),
        BackendChoice::Fixed(BackendKind::Full),
        BackendChoice::Fixed(BackendKind::Assisted),
        BackendChoice::HostImport,
    ];

    /// The value's text (`auto`, `host-import`, a backend's name).
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            // The same word as the backend it tracks imported memory with.
            BackendChoice::HostImport => BackendKind::OwnedWp.name(),
            BackendChoice::Fixed(k) => k.name(),
        }
    }

    pub fn parse(v: &str) -> Option<BackendChoice> {
        BackendChoice::ALL.into_iter().find(|c| c.name() == v)
    }

    /// The backends to try, in order, for a mapping of memory the layer did not import.
    pub fn order(self) -> &'static [BackendKind] {
        match self {
            // Memory host-import could not import is tracked as auto tracks it.
            BackendChoice::Auto | BackendChoice::HostImport => &AUTO_ORDER,
            BackendChoice::Fixed(k) => {
                let i = BackendKind::ALL.iter().position(|x| *x == k).unwrap_or(0);
                std::slice::from_ref(&BackendKind::ALL[i])
            }
        }
    }

    /// The backends to try for a mapping; `imported`: the memory is the layer's own (host-import).
    pub fn mapping_order(self, imported: bool) -> Vec<BackendKind> {
        let mut order = self.order().to_vec();
        if imported {
            order.insert(0, BackendKind::OwnedWp);
        }
        order
    }

    /// The backends to try for memory the application imported from its own host pointer: it
    /// stays mapped at one address, so no shadow; and not `assisted` either, when chosen: that
    /// records what the application flushes, and imported memory need never be mapped, so it
    /// cannot be flushed (the same order for every choice).
    pub fn app_import_order(self) -> &'static [BackendKind] {
        &[BackendKind::AsyncWp, BackendKind::Full]
    }

    /// Whether host-visible memory is allocated by importing the layer's own anonymous memory
    /// (`VK_EXT_external_memory_host`), where the driver and the allocation allow it.
    pub fn imports_host_memory(self) -> bool {
        matches!(self, BackendChoice::Auto | BackendChoice::HostImport)
    }

    /// Whether a mapping may end up behind a shadow that is copied to the real memory page by
    /// page (so resources sharing a page with GPU-written ones could be clobbered).
    pub fn may_shadow(self) -> bool {
        self.order().iter().any(|k| matches!(k, BackendKind::Shadow | BackendKind::ShadowWp))
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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

/// `VKDIRTY_PREDICT`: write prediction per backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Predict {
    /// On for the backends in [`Predict::AUTO_ON`], off for the others.
    Auto,
    Off,
    On,
}

impl Predict {
    /// The backends `auto` predicts for: where prediction was measured to pay
    /// (docs/benchmarks.md, "Prediction's default per backend").
    pub const AUTO_ON: [BackendKind; 3] = [BackendKind::AsyncWp, BackendKind::OwnedWp, BackendKind::ShadowWp];

    /// Whether `kind` predicts written pages.
    pub fn enabled_for(self, kind: BackendKind) -> bool {
        match self {
            Predict::Auto => Self::AUTO_ON.contains(&kind),
            Predict::Off => false,
            Predict::On => true,
        }
    }
}

/// `VKDIRTY_LAYERS_BELOW`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayersBelow {
    /// Capture and unknown layers below turn host-import off.
    Auto,
    /// Host-import whatever is below.
    Ignore,
}
