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

use std::path::{Path, PathBuf};

pub mod docs;
mod ranges;
pub mod sources;
mod values;

pub use ranges::RangeSet;
pub use sources::{
    property_key, EnvSource, FileSource, KhronosEnvSource, Layered, MapSource, PropertyReader, PropertySource,
    SettingSource,
};
pub use values::{BackendChoice, Compression, HostImport, LayersBelow, LogLevel, ShadowRefresh, AUTO_ORDER};

use crate::guard::BackendKind;
pub use crate::trace::file::Existing;

/// The layer's name, as in its manifest.
pub const LAYER_NAME: &str = "VK_LAYER_VKDIRTY_capture";

/// How a setting's value is written; the manifest type vkconfig edits it with.
#[derive(Clone, Copy, Debug)]
pub enum SettingType {
    /// `1, 0, true, false, on, off, yes, no` (manifest `BOOL`).
    Bool,
    /// One of the keys (manifest `ENUM`).
    Enum(&'static [EnumValue]),
    /// `all`, or 1-based numbers and ranges `10-20,100,200-` (manifest `STRING`).
    Ranges,
    /// A whole number `0..=max` (manifest `INT`).
    Uint { max: u64 },
    /// A file the layer writes (manifest `SAVE_FILE`).
    SaveFile { filter: &'static str },
    /// A file the layer reads or watches (manifest `LOAD_FILE`).
    LoadFile,
}

/// One value of an [`SettingType::Enum`] setting.
#[derive(Clone, Copy, Debug)]
pub struct EnumValue {
    pub key: &'static str,
    pub label: &'static str,
    pub doc: &'static str,
}

const fn ev(key: &'static str, label: &'static str, doc: &'static str) -> EnumValue {
    EnumValue { key, label, doc }
}

/// One setting. `name` gives every spelling: `VKDIRTY_<NAME>`, `VK_VKDIRTY_CAPTURE_<NAME>`,
/// `debug.vkdirty.<name>`, `vkdirty_capture.<name>` and the manifest/`VK_EXT_layer_settings` key
/// `<name>` (lower case), and `vkdirty capture --<name-with-dashes>`.
#[derive(Clone, Copy, Debug)]
pub struct SettingInfo {
    pub name: &'static str,
    /// vkconfig's label.
    pub label: &'static str,
    pub ty: SettingType,
    /// The default as a value string (`""`: unset; see `default_doc`).
    pub default: &'static str,
    /// Markdown; the manifest gets it without backticks.
    pub doc: &'static str,
    /// Replaces the accepted values derived from `ty` in docs and warnings (aliases, units).
    pub accepted: Option<&'static str>,
    /// Replaces `default` in the README (a default that depends on the process).
    pub default_doc: Option<&'static str>,
    /// Whether `vkdirty capture` offers `--<name>` (otherwise `--set NAME=VALUE`, or the launcher
    /// has its own option, as `-o` for `TRACE_FILE`).
    pub flag: bool,
    /// vkconfig group (a `GROUP` setting holding the rows that share it).
    pub group: Group,
}

/// The groups vkconfig shows settings in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Output,
    Tracking,
    Window,
    Log,
}

impl Group {
    pub const ALL: [Group; 4] = [Group::Output, Group::Tracking, Group::Window, Group::Log];
    pub fn key(self) -> &'static str {
        match self {
            Group::Output => "output",
            Group::Tracking => "tracking",
            Group::Window => "window",
            Group::Log => "log",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Group::Output => "Trace output",
            Group::Tracking => "Memory tracking",
            Group::Window => "Capture window and triggers",
            Group::Log => "Log",
        }
    }
}

impl SettingInfo {
    /// The fields most rows share; rows write `..SettingInfo::ROW`.
    pub const ROW: SettingInfo = SettingInfo {
        name: "",
        label: "",
        ty: SettingType::Bool,
        default: "",
        doc: "",
        accepted: None,
        default_doc: None,
        flag: true,
        group: Group::Tracking,
    };

    /// The accepted values, for docs and warnings.
    pub fn accepted(&self) -> String {
        if let Some(a) = self.accepted {
            return a.replace('`', "");
        }
        match self.ty {
            SettingType::Bool => "1, 0, true, false, on, off, yes, no".into(),
            SettingType::Enum(vals) => vals.iter().map(|v| v.key).collect::<Vec<_>>().join(", "),
            SettingType::Ranges => "all, or 1-based numbers and ranges: 10-20,100,200-".into(),
            SettingType::Uint { max } => format!("0 to {max}"),
            SettingType::SaveFile { .. } | SettingType::LoadFile => "a file path".into(),
        }
    }

    /// The lower-case key (`trace_file`).
    pub fn key(&self) -> String {
        sources::setting_key(self.name)
    }

    /// The `vkdirty capture` flag (`flush-every-submit`).
    pub fn flag_name(&self) -> String {
        self.key().replace('_', "-")
    }
}

/// Trigger signals a person may pick (numbers are accepted too).
const SIGNALS: &[EnumValue] = &[
    ev("", "None", "No signal handler is installed."),
    ev("SIGUSR1", "SIGUSR1", "kill -USR1 <pid> turns capture on, the next one off."),
    ev("SIGUSR2", "SIGUSR2", "kill -USR2 <pid> turns capture on, the next one off."),
    ev("SIGHUP", "SIGHUP", "kill -HUP <pid> turns capture on, the next one off."),
];

/// Every setting. The README table and the manifest's settings list exactly these.
pub const SETTINGS: &[SettingInfo] = &[
    SettingInfo {
        name: "TRACE_FILE",
        label: "Trace file",
        ty: SettingType::SaveFile { filter: "*.vkd" },
        default_doc: Some(
            "`vkdirty_<process>_<pid>.vkd` in the working directory; Android: \
             `/sdcard/Android/data/<package>/files/`",
        ),
        accepted: Some("a file path (`{pid}` and `{process}` are replaced), or an existing directory to put the default name in"),
        doc: "Where the trace is written. Always a new regular file (never through a symlink, never a \
              FIFO or device), mode 0600, locked while written; see `TRACE_EXISTS`.",
        flag: false,
        group: Group::Output,
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "TRACE_EXISTS",
        label: "When the trace name is taken",
        ty: SettingType::Enum(&[
            ev("next", "next free name", "Write x-2.vkd, x-3.vkd, ... and log the name."),
            ev("refuse", "refuse", "Capture is off, with one logged line."),
            ev("overwrite", "overwrite", "Replace a regular file that no live process is writing."),
        ]),
        default: "next",
        doc: "When the trace name is taken (e.g. by a parent or child process given the same \
              `TRACE_FILE`): `next` writes `x-2.vkd`, `x-3.vkd`, ... and logs the name; `refuse` \
              turns capture off with one logged line; `overwrite` replaces a regular file that no \
              live process is writing (never a symlink, FIFO or device).",
        group: Group::Output,
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "BACKEND",
        label: "Backend",
        ty: SettingType::Enum(&[
            ev("auto", "auto", "host-import where possible, then per mapping the first of async-wp, shadow-wp, shadow, full that accepts it."),
            ev("async-wp", "async-wp", "Asynchronous userfaultfd write protection: no copy, no fault on the application's thread."),
            ev("shadow-wp", "shadow-wp", "A write-protected shadow mapping of the memory."),
            ev("shadow", "shadow", "A shadow copy, compared at submits."),
            ev("full", "full", "Every mapped byte at every submit (always works, slowest)."),
            ev("assisted", "assisted", "Only what the application flushes."),
            ev("host-import", "host-import", "Host-visible memory is the layer's own (VK_EXT_external_memory_host)."),
        ]),
        default: "auto",
        doc: "How written pages are found. `auto` imports host-visible system memory (`host-import`, \
              see below), then tries, per mapping, `async-wp`, `shadow-wp`, `shadow`, then `full`, \
              and records in the trace why earlier ones were refused. `host-import` does the same \
              (memory it could not import is tracked as `auto` tracks it).",
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "HOST_IMPORT",
        label: "Host import",
        ty: SettingType::Enum(&[
            ev("1", "on", "Resources may lose device-local host-visible memory types (NVIDIA's BAR type)."),
            ev("strict", "strict", "Only where resources keep exactly the same memory types."),
            ev("0", "off", "Never import."),
        ]),
        default: "1",
        accepted: Some("`1`/`0`, `true`/`false`, `on`/`off`, `yes`/`no`, `strict`"),
        doc: "With `auto` and `host-import`: back host-visible allocations with the layer's own \
              anonymous memory through `VK_EXT_external_memory_host`. `0` turns it off. Buffers and \
              images are made external so they can be bound there: `1` does that also where it \
              hides device-local host-visible memory types (NVIDIA's BAR type) from them, `strict` \
              only where their memory types stay exactly the same (see below).",
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "SHADOW_READS",
        label: "Shadow reads",
        default: "0",
        doc: "Shadow backends: trap reads too, so the application sees what the GPU wrote.",
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "SHADOW_REFRESH",
        label: "Shadow refresh",
        ty: SettingType::Enum(&[
            ev("never", "never", "The application never reads GPU-written mapped memory."),
            ev("cached", "cached", "At vkInvalidateMappedMemoryRanges, and for HOST_CACHED memory at host synchronisation points."),
            ev("always", "always", "At vkInvalidateMappedMemoryRanges and at host synchronisation points, every memory type."),
        ]),
        default: "cached",
        doc: "Shadow backends: when the application's view gets what the GPU wrote into the real \
              memory. `cached`: the ranges of `vkInvalidateMappedMemoryRanges`, and for \
              `HOST_CACHED` memory types (read-back memory) every mapping at each host \
              synchronisation point (`vkWaitForFences`, `vkGetFenceStatus`, `vkQueueWaitIdle`, \
              `vkDeviceWaitIdle`, `vkWaitSemaphores`, `vkGetSemaphoreCounterValue`); `always`: \
              every memory type at those points (each costs a compare of every mapped page the \
              application has not written); `never`: not at all. Pages the application wrote \
              since the last submit keep its bytes. See docs/design.md.",
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "PERSISTENT_SHADOW",
        label: "Persistent shadow",
        default: "0",
        doc: "Shadow backends: keep an allocation's shadow across unmap and map.",
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "PREDICT",
        label: "Predict written pages",
        default: "0",
        doc: "`async-wp` and `host-import`: at each collection, pages likely to be written again               (written in each of the last two collections, or continuing a stream) are copied               to a snapshot and left writable, so the application's writes there take no fault;               the next collection compares them with the snapshot and reports the changed ones.               Backs off where predictions miss. See docs/design.md, \"Predicted pages\".",
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "PREDICT_BUDGET_MIB",
        label: "Prediction snapshot budget (MiB)",
        ty: SettingType::Uint { max: 65536 },
        default: "32",
        doc: "With `PREDICT`: snapshot memory per device and backend, MiB.",
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "ALIGN_REQUIREMENTS",
        label: "Align memory requirements",
        default: "1",
        doc: "When a shadow backend may be used (`auto`, `host-import`, `shadow`, `shadow-wp`): \
              round the sizes and alignments that `vkGet*MemoryRequirements*` report up to the \
              page size, so CPU-written and GPU-written resources never share a page.",
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "COMPRESSION",
        label: "Compression",
        ty: SettingType::Enum(&[
            ev("lz4", "LZ4", "Fast block compression."),
            ev("none", "None", "Blocks are stored as they are."),
        ]),
        default: "lz4",
        doc: "Compression of trace blocks.",
        group: Group::Output,
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "FLUSH_EVERY_SUBMIT",
        label: "Flush every submit",
        default: "0",
        doc: "Hand the trace to the OS after every submit (survives a crash, costs time).",
        group: Group::Output,
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "FRAMES",
        label: "Frames",
        ty: SettingType::Ranges,
        default: "all",
        doc: "Frames (each ended by `vkQueuePresentKHR`) whose dirty memory is captured.",
        group: Group::Window,
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "SUBMITS",
        label: "Submits",
        ty: SettingType::Ranges,
        default: "all",
        doc: "Submits whose dirty memory is captured; with `FRAMES`, both must match.",
        group: Group::Window,
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "TRIGGER_FILE",
        label: "Trigger file",
        ty: SettingType::LoadFile,
        doc: "Capture is on while this file exists (checked at every present, and at every submit \
              until the first present). Unset: no trigger file.",
        group: Group::Window,
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "TRIGGER_SIGNAL",
        label: "Trigger signal",
        ty: SettingType::Enum(SIGNALS),
        accepted: Some("`SIGUSR1`, `SIGUSR2`, `SIGHUP` (or without `SIG`, or the number); unset: none"),
        doc: "A signal that turns capture on, and the next one off; the handler is installed only \
              when this is set. Takes effect at the next present (or submit, before the first \
              present).",
        group: Group::Window,
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "TRIGGER_FRAMES",
        label: "Frames per trigger",
        ty: SettingType::Uint { max: u32::MAX as u64 },
        default: "0",
        doc: "With a trigger: capture this many frames from the trigger, then stop until the next \
              one (without presents: submits). `0`: until the trigger turns capture off.",
        group: Group::Window,
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "LOG_LEVEL",
        label: "Log level",
        ty: SettingType::Enum(&[
            ev("off", "off", "Nothing."),
            ev("error", "error", "Errors only."),
            ev("warn", "warn", "Errors and warnings."),
            ev("info", "info", "Also what the layer decided (trace file, backends, settings)."),
            ev("debug", "debug", "Everything."),
        ]),
        default: "info",
        doc: "How much the layer logs (stderr; logcat on Android).",
        group: Group::Log,
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "LOG_FILE",
        label: "Log file",
        ty: SettingType::SaveFile { filter: "*.log" },
        doc: "Also append every log line to this file (the same text as on stderr). Unset: no file.",
        group: Group::Log,
        ..SettingInfo::ROW
    },
    // Layers below vkdirty and gfxreconstruct.
    SettingInfo {
        name: "LAYERS_BELOW",
        label: "Layers below",
        ty: SettingType::Enum(&[
            ev("auto", "auto", "host-import stays off when a capture layer or an unknown layer is below vkdirty."),
            ev("ignore", "ignore", "Import whatever is below."),
        ]),
        default: "auto",
        doc: "`auto`: when a capture layer (gfxreconstruct, RenderDoc) or a layer vkdirty does not \
              know sits below it, `host-import` stays off, so that layer sees the application's own \
              allocations, resources and extensions (one log line names the layer; the trace's \
              mapping reasons say so). The validation layer and Mesa's device-select layer are \
              allowed. `ignore`: import whatever is below. See [Replayable captures with \
              gfxreconstruct](#replayable-captures-with-gfxreconstruct).",
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "GFXR_FLUSH",
        label: "Flush for gfxreconstruct",
        default: "0",
        doc: "At every submit, host signal, unmap and free, call `vkFlushMappedMemoryRanges` down \
              the chain for the dirty pages of every mapping, so gfxreconstruct below in \
              `GFXRECON_MEMORY_TRACKING_MODE=assisted` records exactly what the CPU wrote.",
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "WRITE_TRACE",
        label: "Write the trace",
        default: "1",
        doc: "Write vkdirty's own trace. `0` with `GFXR_FLUSH=1`: track for gfxreconstruct only.",
        group: Group::Output,
        ..SettingInfo::ROW
    },
];

/// A named set of values vkconfig offers as one choice.
pub struct Preset {
    pub label: &'static str,
    pub doc: &'static str,
    pub values: &'static [(&'static str, &'static str)],
}

pub const PRESETS: &[Preset] = &[
    Preset {
        label: "Fast default",
        doc: "Automatic backend choice, LZ4, no per-submit flush: the least overhead.",
        values: &[("BACKEND", "auto"), ("COMPRESSION", "lz4"), ("FLUSH_EVERY_SUBMIT", "0"), ("SHADOW_READS", "0")],
    },
    Preset {
        label: "Shadow with reads",
        doc: "Shadow backend that also traps reads and refreshes at every host synchronisation point, \
              for applications that read back GPU results from mapped memory.",
        values: &[("BACKEND", "shadow"), ("SHADOW_READS", "1"), ("SHADOW_REFRESH", "always")],
    },
    Preset {
        label: "Crash-safe",
        doc: "Every submit reaches the OS before the next one, so a crash keeps the trace.",
        values: &[("FLUSH_EVERY_SUBMIT", "1"), ("COMPRESSION", "lz4")],
    },
];

/// The setting called `name` (upper case).
pub fn setting(name: &str) -> Option<&'static SettingInfo> {
    SETTINGS.iter().find(|s| s.name == name)
}

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
    pub predict: bool,
    pub predict_budget_mib: u64,
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
            persistent_shadow: false,
            predict: false,
            predict_budget_mib: 32,
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

/// `SIGUSR1`, `usr1`, `10` → the signal number; only signals the layer does not use itself and
/// that may be caught.
pub fn parse_signal(v: &str) -> Option<i32> {
    let up = v.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let n = match name {
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "HUP" => libc::SIGHUP,
        _ => name.parse::<i32>().ok()?,
    };
    let reserved =
        [libc::SIGSEGV, libc::SIGBUS, libc::SIGKILL, libc::SIGSTOP, libc::SIGILL, libc::SIGFPE, libc::SIGABRT];
    ((1..=libc::SIGRTMAX()).contains(&n) && !reserved.contains(&n)).then_some(n)
}

/// `SIGUSR1` for a signal number the table names, else the number.
pub fn signal_name(n: i32) -> String {
    match n {
        libc::SIGUSR1 => "SIGUSR1".into(),
        libc::SIGUSR2 => "SIGUSR2".into(),
        libc::SIGHUP => "SIGHUP".into(),
        _ => n.to_string(),
    }
}

fn parse_uint(v: &str, max: u64) -> Option<u64> {
    v.parse::<u64>().ok().filter(|n| *n <= max)
}

fn path(v: &str) -> Option<Option<PathBuf>> {
    Some(Some(PathBuf::from(v)))
}

fn put<T>(slot: &mut T, v: Option<T>) -> Result<(), ()> {
    *slot = v.ok_or(())?;
    Ok(())
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
    /// Sets the setting `name` from the text `v` (trimmed, non-empty). `Err` for a bad value or an
    /// unknown name; nothing changes then.
    // The caller names the setting, the value and the accepted values itself: no error payload.
    #[allow(clippy::result_unit_err)]
    pub fn apply(&mut self, name: &str, v: &str) -> Result<(), ()> {
        match name {
            "TRACE_FILE" => put(&mut self.trace_file, path(v)),
            "TRACE_EXISTS" => put(&mut self.trace_exists, Existing::parse(v)),
            "BACKEND" => put(&mut self.backend, parse_backend(v)),
            "HOST_IMPORT" => put(&mut self.host_import, parse_host_import(v)),
            "SHADOW_READS" => put(&mut self.shadow_reads, parse_bool(v)),
            "SHADOW_REFRESH" => put(&mut self.shadow_refresh, parse_shadow_refresh(v)),
            "PERSISTENT_SHADOW" => put(&mut self.persistent_shadow, parse_bool(v)),
            "PREDICT" => put(&mut self.predict, parse_bool(v)),
            "PREDICT_BUDGET_MIB" => put(&mut self.predict_budget_mib, parse_uint(v, 65536)),
            "COMPRESSION" => put(&mut self.compression, parse_compression(v)),
            "FRAMES" => put(&mut self.frames, parse_ranges(v)),
            "SUBMITS" => put(&mut self.submits, parse_ranges(v)),
            "FLUSH_EVERY_SUBMIT" => put(&mut self.flush_every_submit, parse_bool(v)),
            "LOG_LEVEL" => put(&mut self.log_level, parse_log_level(v)),
            "ALIGN_REQUIREMENTS" => put(&mut self.align_requirements, parse_bool(v)),
            "TRIGGER_FILE" => put(&mut self.trigger_file, path(v)),
            "TRIGGER_SIGNAL" => put(&mut self.trigger_signal, parse_signal(v).map(Some)),
            "TRIGGER_FRAMES" => put(&mut self.trigger_frames, parse_uint(v, u32::MAX as u64)),
            "LOG_FILE" => put(&mut self.log_file, path(v)),
            "LAYERS_BELOW" => put(&mut self.layers_below, parse_layers_below(v)),
            "GFXR_FLUSH" => put(&mut self.gfxr_flush, parse_bool(v)),
            "WRITE_TRACE" => put(&mut self.write_trace, parse_bool(v)),
            _ => Err(()),
        }
    }

    /// The value in effect for setting `name`, as text the setting accepts (`""`: unset).
    pub fn value_text(&self, name: &str) -> Option<String> {
        let b = |v: bool| if v { "1" } else { "0" }.to_string();
        let p = |v: &Option<PathBuf>| v.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        let r = |v: &Option<RangeSet>| v.as_ref().map_or("all".to_string(), |r| r.to_string());
        Some(match name {
            "TRACE_FILE" => p(&self.trace_file),
            "TRACE_EXISTS" => self.trace_exists.name().to_string(),
            "BACKEND" => self.backend.to_string(),
            "HOST_IMPORT" => match self.host_import {
                HostImport::Off => "0",
                HostImport::On => "1",
                HostImport::Strict => "strict",
            }
            .to_string(),
            "SHADOW_READS" => b(self.shadow_reads),
            "SHADOW_REFRESH" => self.shadow_refresh.name().to_string(),
            "PERSISTENT_SHADOW" => b(self.persistent_shadow),
            "PREDICT" => b(self.predict),
            "PREDICT_BUDGET_MIB" => self.predict_budget_mib.to_string(),
            "COMPRESSION" => match self.compression {
                Compression::Lz4 => "lz4",
                Compression::None => "none",
            }
            .to_string(),
            "FRAMES" => r(&self.frames),
            "SUBMITS" => r(&self.submits),
            "FLUSH_EVERY_SUBMIT" => b(self.flush_every_submit),
            "LOG_LEVEL" => self.log_level.name().to_string(),
            "ALIGN_REQUIREMENTS" => b(self.align_requirements),
            "TRIGGER_FILE" => p(&self.trigger_file),
            "TRIGGER_SIGNAL" => self.trigger_signal.map(signal_name).unwrap_or_default(),
            "TRIGGER_FRAMES" => self.trigger_frames.to_string(),
            "LOG_FILE" => p(&self.log_file),
            "LAYERS_BELOW" => match self.layers_below {
                LayersBelow::Auto => "auto",
                LayersBelow::Ignore => "ignore",
            }
            .to_string(),
            "GFXR_FLUSH" => b(self.gfxr_flush),
            "WRITE_TRACE" => b(self.write_trace),
            _ => return None,
        })
    }

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

/// `vkdirty_<process>_<pid>.vkd`, with characters that are awkward in file names replaced.
pub fn default_trace_file_name(process: &str, pid: u32) -> String {
    let clean: String = process
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    let clean = if clean.is_empty() { "app".to_string() } else { clean };
    format!("vkdirty_{clean}_{pid}.vkd")
}

/// Where the trace goes: the setting when it names a file (`{pid}` and `{process}` replaced);
/// inside it when it is an existing directory; otherwise the default name in the working directory, or, on Android (when
/// `android_package` is given), in `/sdcard/Android/data/<package>/files/`.
pub fn resolve_trace_path(setting: Option<&Path>, process: &str, pid: u32, android_package: Option<&str>) -> PathBuf {
    let name = default_trace_file_name(process, pid);
    match setting {
        Some(p) if p.is_dir() => p.join(name),
        Some(p) => match p.to_str() {
            Some(s) if s.contains("{pid}") || s.contains("{process}") => {
                let clean = default_trace_file_name(process, 0);
                let clean = clean.trim_start_matches("vkdirty_").trim_end_matches("_0.vkd");
                PathBuf::from(s.replace("{pid}", &pid.to_string()).replace("{process}", clean))
            }
            _ => p.to_path_buf(),
        },
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
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name: &str| m.get(name).cloned()
    }

    #[test]
    fn every_setting_reads_back_as_text_the_setting_accepts() {
        let (s, w) = Settings::load(&map_source(&[
            ("BACKEND", "shadow"),
            ("HOST_IMPORT", "strict"),
            ("SHADOW_READS", "on"),
            ("FRAMES", "3,1-2"),
            ("TRIGGER_SIGNAL", "usr2"),
            ("TRIGGER_FRAMES", "7"),
            ("LOG_FILE", "/tmp/x.log"),
        ]));
        assert!(w.is_empty(), "{w:?}");
        for info in SETTINGS {
            let text = s.value_text(info.name).unwrap_or_else(|| panic!("{}: no value_text arm", info.name));
            let mut back = Settings::default();
            if !text.is_empty() {
                back.apply(info.name, &text).unwrap_or_else(|()| panic!("{}: {text:?} does not read back", info.name));
            }
            assert_eq!(back.value_text(info.name), Some(text), "{}", info.name);
        }
        assert_eq!(s.value_text("FRAMES").as_deref(), Some("1-3"));
        assert_eq!(s.value_text("TRIGGER_SIGNAL").as_deref(), Some("SIGUSR2"));
        assert_eq!(s.value_text("SHADOW_READS").as_deref(), Some("1"));
    }

    #[test]
    fn precedence_and_origins() {
        let env = map_source(&[("BACKEND", "full")]);
        let api = MapSource::new(
            "VK_EXT_layer_settings",
            [
                ("backend".into(), "shadow".into()),
                ("frames".into(), "2-3".into()),
                ("compression".into(), "zstd".into()),
            ],
        );
        let file = FileSource::parse(
            Path::new("/x/vk_layer_settings.txt"),
            "vkdirty_capture.frames = 9\nvkdirty_capture.compression = none\nvkdirty_capture.log_level = info\n",
        );
        let r = Settings::resolve(&[&env, &api, &file]);
        assert_eq!(r.settings.backend, BackendChoice::Fixed(BackendKind::Full), "the environment wins");
        assert_eq!(r.settings.frames, RangeSet::parse("2-3"), "VK_EXT_layer_settings beats the file");
        assert_eq!(r.settings.compression, Compression::None, "a bad value falls through to the next source");
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("VK_EXT_layer_settings compression: bad value \"zstd\""), "{:?}", r.warnings);
        assert!(
            r.warnings[0].contains("using the value of vkdirty_capture.compression in /x/vk_layer_settings.txt"),
            "{:?}",
            r.warnings
        );
        // LOG_LEVEL=info is the default: not listed.
        let names: Vec<&str> = r.origins.iter().map(|o| o.name).collect();
        assert_eq!(names, ["BACKEND", "COMPRESSION", "FRAMES"]);
        assert_eq!(
            r.origin_line(),
            "BACKEND=full (VKDIRTY_BACKEND), COMPRESSION=none (vkdirty_capture.compression in /x/vk_layer_settings.txt), \
             FRAMES=2-3 (VK_EXT_layer_settings frames)"
        );
        // Sources given nothing: defaults.
        let r = Settings::resolve(&[&map_source(&[])]);
        assert_eq!(r.settings, Settings::default());
        assert!(r.origins.is_empty());
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
            ("TRACE_EXISTS", "refuse"),
        ]));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.trace_exists, Existing::Refuse);
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
        for (b, want) in
            [("auto", true), ("host-import", true), ("async-wp", false), ("shadow-wp", false), ("full", false)]
        {
            let (s, _) = Settings::load(&map_source(&[("BACKEND", b)]));
            assert_eq!(s.imports_host_memory(), want, "{b}");
            let (s, w) = Settings::load(&map_source(&[("BACKEND", b), ("HOST_IMPORT", "0")]));
            assert!(w.is_empty());
            assert!(!s.imports_host_memory(), "{b} with HOST_IMPORT=0");
            let (s, w) = Settings::load(&map_source(&[("BACKEND", b), ("HOST_IMPORT", "Strict")]));
            assert!(w.is_empty());
            assert_eq!(
                (s.host_import, s.imports_host_memory()),
                (HostImport::Strict, want),
                "{b} with HOST_IMPORT=strict"
            );
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
        let tpl = Path::new("/tmp/t-{process}-{pid}.vkd");
        assert_eq!(resolve_trace_path(Some(tpl), "a b", 9, None), PathBuf::from("/tmp/t-a_b-9.vkd"));
        assert_eq!(package_from_cmdline(b"com.a.b:remote\0--x\0"), Some("com.a.b".into()));
        assert_eq!(package_from_cmdline(b"/system/bin/app\0"), None);
        assert_eq!(package_from_cmdline(b""), None);
    }

    #[test]
    fn gfxr_settings() {
        let (s, w) = Settings::load(&map_source(&[]));
        assert!(w.is_empty());
        assert_eq!((s.layers_below, s.gfxr_flush, s.write_trace), (LayersBelow::Auto, false, true));
        let (s, w) =
            Settings::load(&map_source(&[("LAYERS_BELOW", "Ignore"), ("GFXR_FLUSH", "1"), ("WRITE_TRACE", "off")]));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!((s.layers_below, s.gfxr_flush, s.write_trace), (LayersBelow::Ignore, true, false));
        let (s, w) = Settings::load(&map_source(&[("LAYERS_BELOW", "never")]));
        assert_eq!((s.layers_below, w.len()), (LayersBelow::Auto, 1), "a bad value warns and keeps the default");
    }
}
