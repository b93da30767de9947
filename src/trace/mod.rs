//! The trace stream: what the layer records ([`Event`]), how it is laid out on disk (`format`),
//! the background writer (`writer`), the streaming reader (`reader`) and state reconstruction
//! (`replay`). See docs/trace-format.md.
//!
//! Identifiers: allocation ids are assigned by the layer, unique within a trace (never reused).
//! Submit sequence numbers start at 1 and count every submit of the process in the order the
//! layer saw them. A `Dirty` event carries the submit it belongs to: the bytes are what the CPU
//! had written by the time of that submit (collections at flush or unmap carry the number of the
//! next submit). Offsets in `Dirty` and `Flush` are allocation offsets, not mapping offsets.

use crate::guard::BackendKind;

pub mod check;
pub mod file;
pub mod format;
pub mod reader;
pub mod replay;
pub mod stats;
pub mod summary;
pub mod writer;

pub use check::{Checker, Impact, Problem};
pub use file::{open_trace_file, Existing, Opened};
pub use format::{BlockType, Compression, FileHeader};
pub use reader::{Block, Damage, TraceReader, Truncation};
pub use replay::Replay;
pub use summary::Summary;
pub use writer::{DirtyWriter, TraceSink, TraceWriter, WriterOptions, WriterStats};

/// Everything that can go wrong reading or writing a trace. Offsets are file byte offsets.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a vkdirty trace (bad magic)")]
    BadMagic,
    #[error("unsupported trace format version {found} (this build reads version {supported})")]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error("corrupt trace at byte {offset}: {msg}")]
    Corrupt { offset: u64, msg: String },
    #[error("inconsistent trace at byte {offset}: {msg}")]
    Inconsistent { offset: u64, msg: String },
    #[error("trace writer stopped: {0}")]
    Stopped(String),
}

impl TraceError {
    pub fn corrupt(offset: u64, msg: impl Into<String>) -> TraceError {
        TraceError::Corrupt { offset, msg: msg.into() }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> TraceError {
        TraceError::Io { context: context.into(), source }
    }
}

/// Who produced the trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Session {
    pub pid: u32,
    pub process_name: String,
    pub app_name: String,
    pub engine_name: String,
    pub device_name: String,
    pub vendor_id: u32,
    pub device_id: u32,
    pub driver_version: u32,
    pub api_version: u32,
    /// The layer's effective settings, each with where its value came from (empty in traces
    /// written before settings were recorded).
    pub settings: Vec<SessionSetting>,
}

/// One effective setting of the session.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SessionSetting {
    /// Upper case (`BACKEND`).
    pub name: String,
    /// Canonical text of the value in effect (`shadow`, `1`, `10-20`, or "" for unset).
    pub value: String,
    /// `default`, or where the value was found (`VKDIRTY_BACKEND`, `VK_EXT_layer_settings
    /// backend`, `vkdirty_capture.backend in /path/vk_layer_settings.txt`).
    pub from: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub id: u64,
    /// The `VkDeviceMemory` handle value, so a test can match its own handles to ids.
    pub handle: u64,
    pub device: u64,
    pub size: u64,
    pub memory_type: u32,
    /// `VkMemoryPropertyFlags` of the type.
    pub property_flags: u32,
    pub heap: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Map {
    pub alloc: u64,
    pub offset: u64,
    /// Resolved size (never `VK_WHOLE_SIZE`).
    pub size: u64,
    /// The pointer handed to the application.
    pub app_ptr: u64,
    pub backend: BackendKind,
    /// Why this backend (e.g. "async-wp refused: EINVAL on a PFN map").
    pub reason: String,
}

/// Coalesced dirty bytes of one allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dirty {
    pub alloc: u64,
    pub submit: u64,
    /// `(allocation offset, length)` runs, ascending, non-overlapping.
    pub runs: Vec<(u64, u64)>,
    /// The runs' bytes, concatenated in run order.
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Submit {
    pub device: u64,
    pub queue: u64,
    pub seq: u64,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    pub command_buffers: u32,
    pub waits: u32,
    pub signals: u32,
    /// Which entry point: 0 vkQueueSubmit, 1 vkQueueSubmit2(KHR), 2 vkQueueBindSparse.
    pub kind: u8,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub submits: u64,
    pub frames: u64,
    pub dirty_pages: u64,
    pub dirty_bytes: u64,
    /// Times the producer waited on a full writer queue.
    pub writer_stalls: u64,
}

/// One record of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Session(Session),
    Allocation(Allocation),
    Map(Map),
    Unmap {
        alloc: u64,
    },
    Free {
        alloc: u64,
    },
    Flush {
        alloc: u64,
        ranges: Vec<(u64, u64)>,
    },
    Dirty(Dirty),
    Submit(Submit),
    /// `vkQueuePresentKHR`: frame `frame` ended after submit `last_submit`.
    Frame {
        frame: u64,
        last_submit: u64,
        timestamp_ns: u64,
    },
    CaptureStart {
        frame: u64,
        submit: u64,
    },
    CaptureStop {
        frame: u64,
        submit: u64,
    },
    End(Totals),
    /// Of the bytes the dirty records of `submit` hold for `alloc`, the `ranges` (allocation
    /// offsets) reported because a predicted page differed from its snapshot, not because a
    /// write fault marked it (docs/design.md, "Predicted pages"). After those dirty records.
    Compared {
        alloc: u64,
        submit: u64,
        ranges: Vec<(u64, u64)>,
    },
    /// Of the bytes the dirty records of `submit` hold for `alloc`, the `ranges` (allocation
    /// offsets) in pages a trusted prediction had left unprotected: reported without a fault or a
    /// compare (written, or at worst a page too many; docs/design.md, "Trusted predictions").
    /// After those dirty records.
    Trusted {
        alloc: u64,
        submit: u64,
        ranges: Vec<(u64, u64)>,
    },
}
