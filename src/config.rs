//! The layer's settings: one table ([`SETTINGS`]) from which the README table, the layer
//! manifest's `features.settings` (what vkconfig shows), and `vkdirty capture`'s flags are made.
//!
//! Adding a setting: a row in [`SETTINGS`], a field in [`Settings`] (and its default), and an arm
//! in [`Settings::apply`]; then regenerate the manifest and README
//! (`VKDIRTY_REGENERATE=1 cargo test -p vkdirty --lib config::docs`).
//!
//! Values come from [`sources`] in order of precedence ([`Settings::resolve`]); a bad value never
//! stops anything: it produces one warning line (where, value, accepted values) and the next
//! source, or the default, is used.

use std::path::PathBuf;

mod catalog;
pub mod docs;
mod ranges;
pub mod sources;
mod text;
mod trace_path;
mod values;

pub use catalog::{setting, EnumValue, Group, Preset, SettingInfo, SettingType, PRESETS, SETTINGS};
pub use text::{parse_signal, signal_name};
pub use trace_path::{default_trace_file_name, package_from_cmdline, resolve_trace_path};

pub use ranges::RangeSet;
pub use sources::{
    property_key, EnvSource, FileSource, KhronosEnvSource, Layered, MapSource, PropertyReader, PropertySource,
    SettingSource,
};
pub use values::{BackendChoice, HostImport, LayersBelow, LogLevel, Predict, ShadowRefresh, AUTO_ORDER};

pub use crate::trace::file::Existing;
/// The trace's own type: the setting names its values.
pub use crate::trace::Compression;

/// The layer's name, as in its manifest.
pub const LAYER_NAME: &str = "VK_LAYER_VKDIRTY_capture";

/// The layer's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `None`: the default name (see [`resolve_trace_path`]).
    pub trace_file: Option<PathBuf>,
    pub trace_exists: Existing,
    pub backend: BackendChoice,
    pub host_import: HostImport,
    pub shadow_reads: bool,
    pub shadow_refresh: ShadowRefresh,
    pub persistent_shadow: bool,
    pub predict: Predict,
    pub predict_budget_mib: u64,
    pub predict_trust: bool,
    pub compression: Compression,
    /// `None`: every frame.
    pub frames: Option<RangeSet>,
    /// `None`: every submit.
    pub submits: Option<RangeSet>,
    pub flush_every_submit: bool,
    pub log_level: LogLevel,
    pub align_requirements: bool,
    pub trigger_file: Option<PathBuf>,
    /// A signal number.
    pub trigger_signal: Option<i32>,
    /// 0: no limit.
    pub trigger_frames: u64,
    pub log_file: Option<PathBuf>,
    pub layers_below: LayersBelow,
    pub gfxr_flush: bool,
    pub write_trace: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            trace_file: None,
            trace_exists: Existing::Next,
            backend: BackendChoice::Auto,
            host_import: HostImport::On,
            shadow_reads: false,
            shadow_refresh: ShadowRefresh::Cached,
            persistent_shadow: true,
            predict: Predict::Auto,
            predict_budget_mib: 32,
            predict_trust: true,
            compression: Compression::Lz4,
            frames: None,
            submits: None,
            flush_every_submit: false,
            log_level: LogLevel::Info,
            align_requirements: true,
            trigger_file: None,
            trigger_signal: None,
            trigger_frames: 0,
            log_file: None,
            layers_below: LayersBelow::Auto,
            gfxr_flush: false,
            write_trace: true,
        }
    }
}

/// Where one setting's effective value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub name: &'static str,
    pub value: String,
    /// [`SettingSource::describe`] of the source (`VKDIRTY_BACKEND`, `vkdirty_capture.backend in
    /// /path/vk_layer_settings.txt`).
    pub from: String,
}

/// The outcome of [`Settings::resolve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub settings: Settings,
    /// One line per bad value.
    pub warnings: Vec<String>,
    /// Every setting that does not have its default value, with where it came from.
    pub origins: Vec<Origin>,
}

impl Resolved {
    /// One line saying where each non-default value came from ("" when all are defaults).
    pub fn origin_line(&self) -> String {
        self.origins.iter().map(|o| format!("{}={} ({})", o.name, o.value, o.from)).collect::<Vec<_>>().join(", ")
    }
}

impl Settings {
    /// Checks one value as the layer would read it: `Err` holds the message for a person.
    pub fn check(name: &str, v: &str) -> Result<(), String> {
        let Some(info) = setting(name) else {
            let known: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
            return Err(format!("unknown setting {name:?} (known: {})", known.join(", ")));
        };
        Settings::default()
            .apply(name, v.trim())
            .map_err(|()| format!("bad value {v:?} for {name} (accepted: {})", info.accepted()))
    }

    /// Reads every setting from `src`. Returns the settings and one warning line per bad value.
    pub fn load(src: &dyn SettingSource) -> (Settings, Vec<String>) {
        let r = Settings::resolve(&[src]);
        (r.settings, r.warnings)
    }

    /// Reads every setting from `sources`, the first with a good value winning (an empty value
    /// counts as unset; a bad one is reported and the next source is asked).
    pub fn resolve(sources: &[&dyn SettingSource]) -> Resolved {
        let mut s = Settings::default();
        let mut warnings = Vec::new();
        let mut origins = Vec::new();
        for info in SETTINGS {
            let mut bad: Vec<String> = Vec::new();
            let mut found = None;
            for src in sources {
                let Some(v) = src.get(info.name) else { continue };
                let v = v.trim();
                if v.is_empty() {
                    continue;
                }
                if s.apply(info.name, v).is_ok() {
                    found = Some((v.to_string(), src.describe(info.name)));
                    break;
                }
                bad.push(format!("{}: bad value {v:?} (accepted: {})", src.describe(info.name), info.accepted()));
            }
            let fallback = match &found {
                Some((_, from)) => format!("using the value of {from}"),
                None => "using the default".to_string(),
            };
            warnings.extend(bad.into_iter().map(|b| format!("{b}; {fallback}")));
            if let Some((value, from)) = found {
                let mut d = Settings::default();
                let is_default = !info.default.is_empty() && d.apply(info.name, info.default).is_ok() && {
                    let mut x = Settings::default();
                    let _ = x.apply(info.name, &value);
                    x == d
                };
                if !is_default {
                    origins.push(Origin { name: info.name, value, from });
                }
            }
        }
        Resolved { settings: s, warnings, origins }
    }

    /// Whether the layer imports host-visible allocations (`VKDIRTY_HOST_IMPORT` and the backend).
    pub fn imports_host_memory(&self) -> bool {
        self.host_import != HostImport::Off && self.backend.imports_host_memory()
    }

    /// Whether the layer rounds memory requirements up to the page size.
    pub fn aligns_requirements(&self) -> bool {
        self.align_requirements && self.backend.may_shadow()
    }

    /// Whether a trigger (file or signal) decides when capture is on.
    pub fn triggered(&self) -> bool {
        self.trigger_file.is_some() || self.trigger_signal.is_some()
    }

    /// Whether dirty memory is captured at submit `seq` of frame `frame` (both 1-based), as far as
    /// the frame and submit windows go (a trigger is checked by the layer on top).
    pub fn captures(&self, frame: u64, seq: u64) -> bool {
        self.frames.as_ref().map_or(true, |r| r.contains(frame))
            && self.submits.as_ref().map_or(true, |r| r.contains(seq))
    }

    /// Whether capture may still be on at or after this frame and submit (so memory written now
    /// must still be recorded for later reconstruction).
    pub fn captures_later(&self, frame: u64, seq: u64) -> bool {
        self.frames.as_ref().map_or(true, |r| r.any_at_or_after(frame))
            && self.submits.as_ref().map_or(true, |r| r.any_at_or_after(seq))
    }
}

#[cfg(test)]
mod tests;
