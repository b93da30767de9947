//! The table of settings ([`SETTINGS`]) and vkconfig's presets: names, labels, types, defaults,
//! docs. Everything shown to a person about a setting is generated from here.

use super::sources;

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
        default: "1",
        doc: "Shadow backends: keep an allocation's shadow across unmap and map (`shadow-wp` also \
              keeps its registration); the next map of the same range reuses it, filled again \
              from the driver's memory only where the device may have written it. `0` releases \
              the shadow at each unmap.",
        ..SettingInfo::ROW
    },
    SettingInfo {
        name: "PREDICT",
        label: "Predict written pages",
        ty: SettingType::Enum(&[
            ev("auto", "auto", "On for async-wp, host-import and shadow-wp, where it was measured to pay."),
            ev("1", "on", "On for every backend that can predict."),
            ev("0", "off", "Off."),
        ]),
        default: "auto",
        accepted: Some("`auto`, `1`/`0`, `true`/`false`, `on`/`off`, `yes`/`no`"),
        doc: "`async-wp`, `host-import` and `shadow-wp`: at each collection, pages likely to be written again \
              (written in each of the last two collections, or continuing a stream) are copied \
              to a snapshot and left writable, so the application's writes there take no fault; \
              the next collection compares them with the snapshot and reports the changed ones, \
              and predictions that keep hitting are trusted (`PREDICT_TRUST`). Backs off where \
              predictions miss. `auto` (default): on where it was measured to pay, i.e. for \
              `async-wp`, `host-import` and `shadow-wp` (docs/benchmarks.md, \"Prediction's \
              default per backend\"); `1` on, `0` off for every backend. See docs/design.md, \
              \"Predicted pages\".",
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
        name: "PREDICT_TRUST",
        label: "Trust predictions that keep hitting",
        default: "1",
        doc: "With `PREDICT`: once the compares find nearly every predicted page written (≥ 95 % in \
              two collections in a row), predicted pages are only left writable, neither \
              snapshotted nor compared, and the next collection reports them all (at worst a page \
              too many, never one too few); every 16th collection, and whenever the predicted \
              volume changes, compares again, and trust ends when the hit rate drops. `shadow-wp` \
              keeps the snapshot where the device may write the memory (its refresh needs it) \
              and skips only the compare. `0`: always compare. See docs/design.md, \"Trusted predictions\".",
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
