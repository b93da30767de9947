//! Settings, read from `VKDIRTY_*` environment variables (and `debug.vkdirty.*` properties on
//! Android).
//!
//! Every setting is listed once in [`SETTINGS`]; the README table is checked against that list by
//! a test. Values come from a [`SettingSource`]; a bad value never stops anything: it produces one
//! warning line (setting, value, accepted values) and the default is used.

use crate::guard::BackendKind;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where setting values come from. `name` is the upper-case setting name (`TRACE_FILE`).
pub trait SettingSource {
    fn get(&self, name: &str) -> Option<String>;
}

/// `VKDIRTY_<NAME>` environment variables.
pub struct EnvSource;

impl SettingSource for EnvSource {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(format!("VKDIRTY_{name}")).ok()
    }
}

/// Reads one system property (`__system_property_get` on Android; a map in tests).
pub trait PropertyReader {
    fn property(&self, key: &str) -> Option<String>;
}

/// The Android property name of a setting: `TRACE_FILE` → `debug.vkdirty.trace_file`.
pub fn property_key(name: &str) -> String {
    format!("debug.vkdirty.{}", name.to_ascii_lowercase())
}

/// Settings from `debug.vkdirty.<name>` properties.
pub struct PropertySource<R: PropertyReader>(pub R);

impl<R: PropertyReader> SettingSource for PropertySource<R> {
    fn get(&self, name: &str) -> Option<String> {
        self.0.property(&property_key(name))
    }
}

/// The first source that has a value wins (an empty value counts as unset: an unset Android
/// property reads as "").
pub struct Layered<'a>(pub Vec<&'a dyn SettingSource>);

impl SettingSource for Layered<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.0.iter().find_map(|s| s.get(name).filter(|v| !v.trim().is_empty()))
    }
}

impl<F: Fn(&str) -> Option<String>> SettingSource for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

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

/// A set of 1-based numbers written like `10-20,100,200-`: single numbers, inclusive ranges and
/// open-ended ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeSet {
    /// Sorted, merged, inclusive `(first, last)`; `last == u64::MAX` is open-ended.
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    pub fn parse(s: &str) -> Option<RangeSet> {
        let mut ranges = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => {
                    let a: u64 = a.trim().parse().ok()?;
                    let b = b.trim();
                    let b: u64 = if b.is_empty() { u64::MAX } else { b.parse().ok()? };
                    (a, b)
                }
                None => {
                    let a: u64 = part.parse().ok()?;
                    (a, a)
                }
            };
            if a == 0 || b < a {
                return None;
            }
            ranges.push((a, b));
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Some(RangeSet { ranges: merged })
    }

    pub fn contains(&self, n: u64) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= n && n <= b)
    }

    /// Whether any member is `>= n` (so capture may still resume at or after `n`).
    pub fn any_at_or_after(&self, n: u64) -> bool {
        self.ranges.last().is_some_and(|&(_, b)| b >= n)
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(a, b)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match (a, b) {
                (a, b) if a == b => write!(f, "{a}")?,
                (a, u64::MAX) => write!(f, "{a}-")?,
                (a, b) => write!(f, "{a}-{b}")?,
            }
        }
        Ok(())
    }
}

/// One setting, for documentation and lookup.
pub struct SettingInfo {
    pub name: &'static str,
    pub default: &'static str,
    pub accepted: &'static str,
    pub doc: &'static str,
}

/// Every setting. The README table lists exactly these.
pub const SETTINGS: &[SettingInfo] = &[
    SettingInfo {
        name: "TRACE_FILE",
        default: "vkdirty_<process>_<pid>.vkd in the working directory (Android: /sdcard/Android/data/<package>/files/)",
        accepted: "a file path, or an existing directory to put the default name in",
        doc: "Where the trace is written.",
    },
    SettingInfo {
        name: "BACKEND",
        default: "auto",
        accepted: "auto, async-wp, shadow-wp, shadow, full, assisted, host-import",
        doc: "How written pages are found. auto imports host-visible system memory (host-import), \
              then tries async-wp, shadow-wp, shadow, full per mapping.",
    },
    SettingInfo {
        name: "HOST_IMPORT",
        default: "1",
        accepted: "1, 0, true, false, on, off, yes, no, strict",
        doc: "auto and host-import: back host-visible allocations with the layer's own anonymous \
              memory through VK_EXT_external_memory_host. 0 turns it off. Buffers and images are \
              made external so they can be bound there; 1 allows that where it hides only \
              device-local host-visible memory types from them (NVIDIA's BAR type), strict only \
              where their memory types stay exactly the same.",
    },
    SettingInfo {
        name: "SHADOW_READS",
        default: "0",
        accepted: "1, 0, true, false, on, off, yes, no",
        doc: "Shadow backends: trap reads too, so the application sees what the GPU wrote.",
    },
    SettingInfo {
        name: "SHADOW_REFRESH",
        default: "cached",
        accepted: "never, cached, always",
        doc: "Shadow backends: when the application's view gets what the GPU wrote. cached: at \
              vkInvalidateMappedMemoryRanges, and for HOST_CACHED memory at every host \
              synchronisation point (fence, semaphore and idle waits); always: at those for every \
              memory type; never: not at all.",
    },
    SettingInfo {
        name: "PERSISTENT_SHADOW",
        default: "0",
        accepted: "1, 0, true, false, on, off, yes, no",
        doc: "Shadow backends: keep an allocation's shadow across unmap/map.",
    },
    SettingInfo {
        name: "COMPRESSION",
        default: "lz4",
        accepted: "lz4, none",
        doc: "Compression of trace blocks.",
    },
    SettingInfo {
        name: "FRAMES",
        default: "all",
        accepted: "all, or 1-based frame numbers and ranges: 10-20,100,200-",
        doc: "Frames (ended by vkQueuePresentKHR) whose dirty memory is captured.",
    },
    SettingInfo {
        name: "SUBMITS",
        default: "all",
        accepted: "all, or 1-based submit numbers and ranges: 10-20,100,200-",
        doc: "Submits whose dirty memory is captured (combined with FRAMES: both must match).",
    },
    SettingInfo {
        name: "FLUSH_EVERY_SUBMIT",
        default: "0",
        accepted: "1, 0, true, false, on, off, yes, no",
        doc: "Hand the trace to the OS after every submit (survives a crash, costs time).",
    },
    SettingInfo {
        name: "LOG_LEVEL",
        default: "info",
        accepted: "off, error, warn, info, debug",
        doc: "How much the layer logs (stderr; logcat on Android).",
    },
    SettingInfo {
        name: "ALIGN_REQUIREMENTS",
        default: "1",
        accepted: "1, 0, true, false, on, off, yes, no",
        doc: "When a shadow backend may be used (auto, host-import, shadow, shadow-wp): round the sizes and \
              alignments of vkGet*MemoryRequirements* up to the page size.",
    },
    // Layers below vkdirty and gfxreconstruct (issue 11).
    SettingInfo {
        name: "LAYERS_BELOW",
        default: "auto",
        accepted: "auto, ignore",
        doc: "auto: when a capture layer (gfxreconstruct, RenderDoc) or a layer vkdirty does not know is \
              below it, host-import is off, so that layer sees the application's own allocations, \
              resources and extensions (the validation layer and Mesa's device-select layer are \
              allowed); ignore: host-import whatever is below.",
    },
    SettingInfo {
        name: "GFXR_FLUSH",
        default: "0",
        accepted: "1, 0, true, false, on, off, yes, no",
        doc: "At every submit, host signal, unmap and free, call vkFlushMappedMemoryRanges down the chain \
              for the dirty pages of every mapping, so gfxreconstruct below in \
              GFXRECON_MEMORY_TRACKING_MODE=assisted records exactly what the CPU wrote.",
    },
    SettingInfo {
        name: "WRITE_TRACE",
        default: "1",
        accepted: "1, 0, true, false, on, off, yes, no",
        doc: "Write vkdirty's own trace. 0 with GFXR_FLUSH=1: track for gfxreconstruct only.",
    },
];

/// `VKDIRTY_LAYERS_BELOW`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayersBelow {
    /// Capture and unknown layers below turn host-import off.
    Auto,
    /// Host-import whatever is below.
    Ignore,
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

/// The layer's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `None`: the default name (see [`resolve_trace_path`]).
    pub trace_file: Option<PathBuf>,
    pub backend: BackendChoice,
    pub host_import: HostImport,
    pub shadow_reads: bool,
    pub shadow_refresh: ShadowRefresh,
    pub persistent_shadow: bool,
    pub compression: Compression,
    /// `None`: every frame.
    pub frames: Option<RangeSet>,
    /// `None`: every submit.
    pub submits: Option<RangeSet>,
    pub flush_every_submit: bool,
    pub log_level: LogLevel,
    pub align_requirements: bool,
    pub layers_below: LayersBelow,
    pub gfxr_flush: bool,
    pub write_trace: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            trace_file: None,
            backend: BackendChoice::Auto,
            host_import: HostImport::On,
            shadow_reads: false,
            shadow_refresh: ShadowRefresh::Cached,
            persistent_shadow: false,
            compression: Compression::Lz4,
            frames: None,
            submits: None,
            flush_every_submit: false,
            log_level: LogLevel::Info,
            align_requirements: true,
            layers_below: LayersBelow::Auto,
            gfxr_flush: false,
            write_trace: true,
        }
    }
}

fn accepted(name: &str) -> &'static str {
    SETTINGS.iter().find(|s| s.name == name).map_or("", |s| s.accepted)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

fn parse_host_import(v: &str) -> Option<HostImport> {
    if v.eq_ignore_ascii_case("strict") {
        return Some(HostImport::Strict);
    }
    parse_bool(v).map(|on| if on { HostImport::On } else { HostImport::Off })
}

fn parse_backend(v: &str) -> Option<BackendChoice> {
    if v == "auto" {
        return Some(BackendChoice::Auto);
    }
    BackendKind::parse(v).map(BackendChoice::Fixed)
}

fn parse_shadow_refresh(v: &str) -> Option<ShadowRefresh> {
    [ShadowRefresh::Never, ShadowRefresh::Cached, ShadowRefresh::Always].into_iter().find(|r| r.name() == v)
}

fn parse_compression(v: &str) -> Option<Compression> {
    match v {
        "lz4" => Some(Compression::Lz4),
        "none" => Some(Compression::None),
        _ => None,
    }
}

fn parse_log_level(v: &str) -> Option<LogLevel> {
    [LogLevel::Off, LogLevel::Error, LogLevel::Warn, LogLevel::Info, LogLevel::Debug]
        .into_iter()
        .find(|l| l.name() == v)
}

fn parse_layers_below(v: &str) -> Option<LayersBelow> {
    match v.to_ascii_lowercase().as_str() {
        "auto" => Some(LayersBelow::Auto),
        "ignore" => Some(LayersBelow::Ignore),
        _ => None,
    }
}

fn parse_ranges(v: &str) -> Option<Option<RangeSet>> {
    if v == "all" {
        return Some(None);
    }
    RangeSet::parse(v).map(Some)
}

impl Settings {
    /// Reads every setting from `src`. Returns the settings and one warning line per bad value.
    pub fn load(src: &dyn SettingSource) -> (Settings, Vec<String>) {
        let mut s = Settings::default();
        let mut warnings = Vec::new();
        let get = |name: &str| src.get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());

        fn set<T>(
            warnings: &mut Vec<String>,
            name: &str,
            value: Option<String>,
            parse: impl Fn(&str) -> Option<T>,
            slot: &mut T,
        ) {
            let Some(v) = value else { return };
            match parse(&v) {
                Some(x) => *slot = x,
                None => warnings.push(format!(
                    "VKDIRTY_{name}: bad value {v:?} (accepted: {}); using the default",
                    accepted(name)
                )),
            }
        }

        if let Some(v) = get("TRACE_FILE") {
            s.trace_file = Some(PathBuf::from(v));
        }
        let w = &mut warnings;
        set(w, "BACKEND", get("BACKEND"), parse_backend, &mut s.backend);
        set(w, "HOST_IMPORT", get("HOST_IMPORT"), parse_host_import, &mut s.host_import);
        set(w, "SHADOW_READS", get("SHADOW_READS"), parse_bool, &mut s.shadow_reads);
        set(w, "SHADOW_REFRESH", get("SHADOW_REFRESH"), parse_shadow_refresh, &mut s.shadow_refresh);
        set(w, "PERSISTENT_SHADOW", get("PERSISTENT_SHADOW"), parse_bool, &mut s.persistent_shadow);
        set(w, "COMPRESSION", get("COMPRESSION"), parse_compression, &mut s.compression);
        set(w, "FRAMES", get("FRAMES"), parse_ranges, &mut s.frames);
        set(w, "SUBMITS", get("SUBMITS"), parse_ranges, &mut s.submits);
        set(w, "FLUSH_EVERY_SUBMIT", get("FLUSH_EVERY_SUBMIT"), parse_bool, &mut s.flush_every_submit);
        set(w, "LOG_LEVEL", get("LOG_LEVEL"), parse_log_level, &mut s.log_level);
        set(w, "ALIGN_REQUIREMENTS", get("ALIGN_REQUIREMENTS"), parse_bool, &mut s.align_requirements);
        set(w, "LAYERS_BELOW", get("LAYERS_BELOW"), parse_layers_below, &mut s.layers_below);
        set(w, "GFXR_FLUSH", get("GFXR_FLUSH"), parse_bool, &mut s.gfxr_flush);
        set(w, "WRITE_TRACE", get("WRITE_TRACE"), parse_bool, &mut s.write_trace);
        (s, warnings)
    }

    /// Whether the layer imports host-visible allocations (`VKDIRTY_HOST_IMPORT` and the backend).
    pub fn imports_host_memory(&self) -> bool {
        self.host_import != HostImport::Off && self.backend.imports_host_memory()
    }

    /// Whether the layer rounds memory requirements up to the page size.
    pub fn aligns_requirements(&self) -> bool {
        self.align_requirements && self.backend.may_shadow()
    }

    /// Whether dirty memory is captured at submit `seq` of frame `frame` (both 1-based).
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

/// `vkdirty_<process>_<pid>.vkd`, with characters that are awkward in file names replaced.
pub fn default_trace_file_name(process: &str, pid: u32) -> String {
    let clean: String = process
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    let clean = if clean.is_empty() { "app".to_string() } else { clean };
    format!("vkdirty_{clean}_{pid}.vkd")
}

/// Where the trace goes: the setting when it names a file; inside it when it is an existing
/// directory; otherwise the default name in the working directory, or, on Android (when
/// `android_package` is given), in `/sdcard/Android/data/<package>/files/`.
pub fn resolve_trace_path(
    setting: Option<&Path>,
    process: &str,
    pid: u32,
    android_package: Option<&str>,
) -> PathBuf {
    let name = default_trace_file_name(process, pid);
    match setting {
        Some(p) if p.is_dir() => p.join(name),
        Some(p) => p.to_path_buf(),
        None => match android_package {
            Some(pkg) => PathBuf::from(format!("/sdcard/Android/data/{pkg}/files")).join(name),
            None => PathBuf::from(name),
        },
    }
}

/// The Android package of a process, from its command line (`com.example.app:service` →
/// `com.example.app`).
pub fn package_from_cmdline(cmdline: &[u8]) -> Option<String> {
    let first = cmdline.split(|&b| b == 0).next()?;
    let s = std::str::from_utf8(first).ok()?;
    let pkg = s.split(':').next()?.trim();
    (!pkg.is_empty() && !pkg.contains('/')).then(|| pkg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn map_source(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name: &str| m.get(name).cloned()
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let (s, w) = Settings::load(&map_source(&[]));
        assert_eq!(s, Settings::default());
        assert!(w.is_empty());
        assert_eq!(s.backend, BackendChoice::Auto);
        assert!(s.align_requirements);
        assert_eq!(s.compression, Compression::Lz4);
    }

    #[test]
    fn every_setting_parses() {
        let (s, w) = Settings::load(&map_source(&[
            ("TRACE_FILE", "/tmp/x.vkd"),
            ("BACKEND", "shadow"),
            ("HOST_IMPORT", "off"),
            ("SHADOW_READS", "on"),
            ("SHADOW_REFRESH", "always"),
            ("PERSISTENT_SHADOW", "yes"),
            ("COMPRESSION", "none"),
            ("FRAMES", "10-20,100"),
            ("SUBMITS", "5-"),
            ("FLUSH_EVERY_SUBMIT", "1"),
            ("LOG_LEVEL", "debug"),
            ("ALIGN_REQUIREMENTS", "false"),
        ]));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.trace_file.as_deref(), Some(Path::new("/tmp/x.vkd")));
        assert_eq!(s.backend, BackendChoice::Fixed(BackendKind::Shadow));
        assert!(s.shadow_reads && s.persistent_shadow && s.flush_every_submit);
        assert_eq!(s.shadow_refresh, ShadowRefresh::Always);
        assert!(!s.align_requirements);
        assert_eq!(s.host_import, HostImport::Off);
        assert_eq!(s.compression, Compression::None);
        assert_eq!(s.log_level, LogLevel::Debug);
        assert_eq!(s.frames.as_ref().map(|r| r.to_string()).as_deref(), Some("10-20,100"));
        assert_eq!(s.submits.as_ref().map(|r| r.to_string()).as_deref(), Some("5-"));
    }

    #[test]
    fn every_backend_name_is_accepted() {
        for k in BackendKind::ALL {
            let (s, w) = Settings::load(&map_source(&[("BACKEND", k.name())]));
            assert!(w.is_empty());
            assert_eq!(s.backend, BackendChoice::Fixed(k));
        }
    }

    #[test]
    fn bad_values_warn_once_each_and_keep_defaults() {
        let (s, w) = Settings::load(&map_source(&[
            ("BACKEND", "magic"),
            ("SHADOW_READS", "maybe"),
            ("COMPRESSION", "zstd"),
            ("FRAMES", "20-10"),
            ("SUBMITS", "0"),
            ("LOG_LEVEL", "loud"),
        ]));
        assert_eq!(s, Settings::default());
        assert_eq!(w.len(), 6, "{w:?}");
        assert!(w[0].contains("VKDIRTY_BACKEND") && w[0].contains("\"magic\""));
        assert!(w[0].contains("auto, async-wp, shadow-wp, shadow, full, assisted, host-import"));
        assert!(w[2].contains("VKDIRTY_COMPRESSION") && w[2].contains("lz4, none"));
        for line in &w {
            assert!(line.contains("using the default"), "{line}");
        }
    }

    #[test]
    fn values_are_trimmed_and_empty_means_unset() {
        let (s, w) = Settings::load(&map_source(&[("BACKEND", "  full "), ("LOG_LEVEL", "")]));
        assert!(w.is_empty());
        assert_eq!(s.backend, BackendChoice::Fixed(BackendKind::Full));
        assert_eq!(s.log_level, LogLevel::Info);
    }

    #[test]
    fn shadow_refresh_policy() {
        assert_eq!(Settings::default().shadow_refresh, ShadowRefresh::Cached);
        for (v, cached, uncached) in [("never", false, false), ("cached", true, false), ("always", true, true)] {
            let (s, w) = Settings::load(&map_source(&[("SHADOW_REFRESH", v)]));
            assert!(w.is_empty(), "{w:?}");
            assert_eq!(s.shadow_refresh.name(), v);
            assert_eq!(s.shadow_refresh.at_sync_points(true), cached, "{v}");
            assert_eq!(s.shadow_refresh.at_sync_points(false), uncached, "{v}");
        }
        let (s, w) = Settings::load(&map_source(&[("SHADOW_REFRESH", "sometimes")]));
        assert_eq!(s.shadow_refresh, ShadowRefresh::Cached);
        assert!(w[0].contains("never, cached, always"), "{w:?}");
    }

    #[test]
    fn range_sets() {
        let r = RangeSet::parse("100, 10-20 ,15-25,26").unwrap();
        assert_eq!(r.to_string(), "10-26,100");
        assert!(r.contains(10) && r.contains(26) && r.contains(100));
        assert!(!r.contains(9) && !r.contains(27) && !r.contains(101));
        assert!(r.any_at_or_after(100) && !r.any_at_or_after(101));
        let open = RangeSet::parse("7-").unwrap();
        assert!(open.contains(u64::MAX) && !open.contains(6));
        for bad in ["", "a", "1-b", "0", "0-3", "5-4", "1,,2", "-3", "1-2-3"] {
            assert_eq!(RangeSet::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn capture_windows() {
        let (s, _) = Settings::load(&map_source(&[("FRAMES", "3-4"), ("SUBMITS", "10-")]));
        assert!(!s.captures(2, 50));
        assert!(!s.captures(3, 9));
        assert!(s.captures(3, 10) && s.captures(4, 11));
        assert!(!s.captures(5, 12));
        assert!(s.captures_later(1, 1) && s.captures_later(4, 100));
        assert!(!s.captures_later(5, 100));
        let all = Settings::default();
        assert!(all.captures(1, 1) && all.captures_later(u64::MAX, u64::MAX));
    }

    #[test]
    fn alignment_follows_backend() {
        let cases = [
            ("auto", true),
            ("shadow", true),
            ("shadow-wp", true),
            // Memory it cannot import falls back to auto's order.
            ("host-import", true),
            ("async-wp", false),
            ("full", false),
            ("assisted", false),
        ];
        for (b, want) in cases {
            let (s, _) = Settings::load(&map_source(&[("BACKEND", b)]));
            assert_eq!(s.aligns_requirements(), want, "{b}");
        }
        let (s, _) = Settings::load(&map_source(&[("ALIGN_REQUIREMENTS", "0")]));
        assert!(!s.aligns_requirements());
    }

    #[test]
    fn auto_order_starts_with_async_wp_and_ends_with_full() {
        assert_eq!(BackendChoice::Auto.order().first(), Some(&BackendKind::AsyncWp));
        assert_eq!(BackendChoice::Auto.order().last(), Some(&BackendKind::Full));
        assert_eq!(BackendChoice::Fixed(BackendKind::Shadow).order(), &[BackendKind::Shadow]);
        assert_eq!(BackendChoice::Fixed(BackendKind::HostImport).order(), BackendChoice::Auto.order());
    }

    #[test]
    fn host_import_follows_backend_and_setting() {
        for (b, want) in [("auto", true), ("host-import", true), ("async-wp", false), ("shadow-wp", false), ("full", false)] {
            let (s, _) = Settings::load(&map_source(&[("BACKEND", b)]));
            assert_eq!(s.imports_host_memory(), want, "{b}");
            let (s, w) = Settings::load(&map_source(&[("BACKEND", b), ("HOST_IMPORT", "0")]));
            assert!(w.is_empty());
            assert!(!s.imports_host_memory(), "{b} with HOST_IMPORT=0");
            let (s, w) = Settings::load(&map_source(&[("BACKEND", b), ("HOST_IMPORT", "Strict")]));
            assert!(w.is_empty());
            assert_eq!((s.host_import, s.imports_host_memory()), (HostImport::Strict, want), "{b} with HOST_IMPORT=strict");
        }
        let (s, w) = Settings::load(&map_source(&[("HOST_IMPORT", "loose")]));
        assert_eq!((s.host_import, w.len()), (HostImport::On, 1), "an unknown value warns and keeps the default");
    }

    struct Props(HashMap<String, String>);
    impl PropertyReader for Props {
        fn property(&self, key: &str) -> Option<String> {
            self.0.get(key).cloned()
        }
    }

    #[test]
    fn android_properties_map_to_settings() {
        assert_eq!(property_key("FLUSH_EVERY_SUBMIT"), "debug.vkdirty.flush_every_submit");
        let props = Props(
            [
                ("debug.vkdirty.backend", "shadow"),
                ("debug.vkdirty.frames", "1-3"),
                ("debug.vkdirty.trace_file", "/data/local/tmp/t.vkd"),
                // An unset property reads as "".
                ("debug.vkdirty.log_level", ""),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let env = map_source(&[("LOG_LEVEL", "warn"), ("BACKEND", "full")]);
        let psrc = PropertySource(props);
        // Environment first, then properties.
        let (s, w) = Settings::load(&Layered(vec![&env, &psrc]));
        assert!(w.is_empty());
        assert_eq!(s.backend, BackendChoice::Fixed(BackendKind::Full));
        assert_eq!(s.log_level, LogLevel::Warn);
        assert_eq!(s.frames, RangeSet::parse("1-3"));
        assert_eq!(s.trace_file.as_deref(), Some(Path::new("/data/local/tmp/t.vkd")));
        let (s, _) = Settings::load(&psrc);
        assert_eq!(s.backend, BackendChoice::Fixed(BackendKind::Shadow));
        assert_eq!(s.log_level, LogLevel::Info);
    }

    #[test]
    fn trace_paths() {
        assert_eq!(default_trace_file_name("my app/x", 42), "vkdirty_my_app_x_42.vkd");
        assert_eq!(default_trace_file_name("", 1), "vkdirty_app_1.vkd");
        assert_eq!(resolve_trace_path(None, "game", 7, None), PathBuf::from("vkdirty_game_7.vkd"));
        assert_eq!(
            resolve_trace_path(None, "com.x.y", 7, Some("com.x.y")),
            PathBuf::from("/sdcard/Android/data/com.x.y/files/vkdirty_com.x.y_7.vkd")
        );
        let dir = std::env::temp_dir();
        assert_eq!(resolve_trace_path(Some(&dir), "g", 1, None), dir.join("vkdirty_g_1.vkd"));
        let file = dir.join("does-not-exist-vkdirty/t.vkd");
        assert_eq!(resolve_trace_path(Some(&file), "g", 1, None), file);
        assert_eq!(package_from_cmdline(b"com.a.b:remote\0--x\0"), Some("com.a.b".into()));
        assert_eq!(package_from_cmdline(b"/system/bin/app\0"), None);
        assert_eq!(package_from_cmdline(b""), None);
    }

    #[test]
    fn readme_documents_every_setting() {
        let readme = include_str!("../README.md");
        for s in SETTINGS {
            assert!(
                readme.contains(&format!("| `VKDIRTY_{}`", s.name)),
                "README lacks a table row for VKDIRTY_{}",
                s.name
            );
            assert!(readme.contains(&format!("`debug.vkdirty.{}`", s.name.to_ascii_lowercase())));
        }
    }
}
