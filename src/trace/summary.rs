//! What `vkdirty info` reports, computed in one pass over a trace.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use super::check::{Checker, Problem};
use super::format::count_pages;
use super::format::FileHeader;
use super::reader::{Block, TraceReader};
use super::{Event, TraceError};

/// Nearest-rank statistics of one quantity over the submits of a trace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Dist {
    pub median: u64,
    pub p99: u64,
    pub max: u64,
}

impl Dist {
    pub fn of(mut v: Vec<u64>) -> Dist {
        if v.is_empty() {
            return Dist::default();
        }
        v.sort_unstable();
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Dist { median: rank(0.5), p99: rank(0.99), max: v[v.len() - 1] }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PerSubmit {
    pub dirty_bytes: Dist,
    pub dirty_pages: Dist,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SessionInfo {
    pub pid: u32,
    pub process: String,
    pub app: String,
    pub engine: String,
    pub device: String,
    pub vendor_id: u32,
    pub device_id: u32,
    pub driver_version: u32,
    pub api_version: String,
    /// The layer's settings in effect (empty for traces written before they were recorded).
    pub settings: Vec<super::SessionSetting>,
}

/// One distinct (backend, reason) pair with the number of mappings that got it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackendReason {
    pub backend: String,
    pub reason: String,
    pub maps: u64,
}

/// One damaged range and what it may have cost.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DamageInfo {
    pub offset: u64,
    pub len: u64,
    pub reason: String,
    /// Every allocation's contents up to this submit are intact.
    pub intact_through_submit: u64,
    /// Allocations whose later contents may miss writes.
    pub allocations: Vec<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub format_version: u16,
    pub writer_version: String,
    pub page_size: u32,
    pub created_ns: u64,
    pub session: Option<SessionInfo>,
    pub blocks: u64,
    pub unknown_blocks: u64,
    pub allocations: u64,
    /// Sum of allocation sizes.
    pub allocated_bytes: u64,
    pub maps: u64,
    pub unmaps: u64,
    pub frees: u64,
    pub flushes: u64,
    pub submits: u64,
    pub frames: u64,
    pub captures: u64,
    pub dirty_blocks: u64,
    pub dirty_pages: u64,
    pub dirty_bytes: u64,
    /// Of `dirty_pages`, those reported because a predicted page differed from its snapshot
    /// (compared records; 0 without write prediction and in traces written before it).
    pub compared_pages: u64,
    /// Of `dirty_pages`, those a trusted prediction had unprotected (trusted records): reported
    /// neither by a fault nor by compare.
    pub trusted_pages: u64,
    /// Over every submit number seen (in Submit or Dirty blocks); submits without dirty data
    /// count as zero.
    pub per_submit: PerSubmit,
    /// Size of the file.
    pub file_bytes: u64,
    /// Block payload bytes before compression / as stored.
    pub payload_bytes: u64,
    pub stored_bytes: u64,
    /// `payload_bytes / stored_bytes` (1.0 when nothing was compressed).
    pub compression_ratio: f64,
    /// Backend name → number of mappings that used it.
    pub backends: BTreeMap<String, u64>,
    pub backend_reasons: Vec<BackendReason>,
    /// From the end block; `None` when the trace has none.
    pub writer_stalls: Option<u64>,
    pub truncated: bool,
    pub truncation: Option<String>,
    /// Damaged ranges skipped (the summary covers the readable blocks).
    pub damage: Vec<DamageInfo>,
    /// Records that contradict earlier ones (not counted above).
    pub problems: Vec<Problem>,
}

fn api_version(v: u32) -> String {
    format!("{}.{}.{}", (v >> 22) & 0x7f, (v >> 12) & 0x3ff, v & 0xfff)
}

impl Summary {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Summary, TraceError> {
        let path = path.as_ref();
        let file_bytes =
            std::fs::metadata(path).map_err(|e| TraceError::io(format!("cannot open {}", path.display()), e))?.len();
        Summary::from_reader(TraceReader::open(path)?, file_bytes)
    }

    /// Reads every readable block (salvaging: damaged ranges are skipped and listed, as are
    /// inconsistent records). Truncation is reported in the summary; only I/O fails.
    pub fn from_reader<R: Read>(r: TraceReader<R>, file_bytes: u64) -> Result<Summary, TraceError> {
        let mut r = r.salvage(true);
        let mut b = SummaryBuilder::new(r.header(), file_bytes);
        let mut checker = Checker::new();
        checker.follow(&mut r, |block, ok| {
            if ok {
                b.add(block);
            }
            Ok(())
        })?;
        let mut s = b.finish(&r);
        s.add_damage(&checker);
        Ok(s)
    }

    /// Fills [`Summary::damage`] and [`Summary::problems`] from a checker that followed the trace.
    pub fn add_damage(&mut self, checker: &Checker) {
        self.damage = checker
            .impacts()
            .iter()
            .map(|i| DamageInfo {
                offset: i.damage.offset,
                len: i.damage.len,
                reason: i.damage.reason.clone(),
                intact_through_submit: i.intact_through,
                allocations: i.allocations.iter().copied().collect(),
            })
            .collect();
        self.problems = checker.problems().to_vec();
    }
}

/// Builds a [`Summary`] one block at a time, so other passes over a trace (`trace::stats`) can
/// produce it without reading the file twice.
pub struct SummaryBuilder {
    s: Summary,
    page_size: u64,
    per_submit: BTreeMap<u64, (u64, u64)>,
    reasons: BTreeMap<(String, String), u64>,
}

impl SummaryBuilder {
    pub fn new(h: &FileHeader, file_bytes: u64) -> SummaryBuilder {
        SummaryBuilder {
            s: Summary {
                format_version: h.version,
                writer_version: h.writer_version.clone(),
                page_size: h.page_size,
                created_ns: h.created_ns,
                file_bytes,
                ..Summary::default()
            },
            page_size: h.page_size as u64,
            per_submit: BTreeMap::new(),
            reasons: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, b: &Block) {
        let s = &mut self.s;
        s.blocks += 1;
        s.payload_bytes += b.raw_len as u64;
        s.stored_bytes += b.stored_len as u64;
        let Some(ev) = &b.event else {
            s.unknown_blocks += 1;
            return;
        };
        match ev {
            Event::Session(x) => {
                s.session = Some(SessionInfo {
                    pid: x.pid,
                    process: x.process_name.clone(),
                    app: x.app_name.clone(),
                    engine: x.engine_name.clone(),
                    device: x.device_name.clone(),
                    vendor_id: x.vendor_id,
                    device_id: x.device_id,
                    driver_version: x.driver_version,
                    api_version: api_version(x.api_version),
                    settings: x.settings.clone(),
                })
            }
            Event::Allocation(a) => {
                s.allocations += 1;
                s.allocated_bytes = s.allocated_bytes.saturating_add(a.size);
            }
            Event::Map(m) => {
                s.maps += 1;
                *s.backends.entry(m.backend.name().to_string()).or_default() += 1;
                *self.reasons.entry((m.backend.name().to_string(), m.reason.clone())).or_default() += 1;
            }
            Event::Unmap { .. } => s.unmaps += 1,
            Event::Free { .. } => s.frees += 1,
            Event::Flush { .. } => s.flushes += 1,
            Event::Dirty(d) => {
                let pages = count_pages(&d.runs, self.page_size, &mut None);
                let bytes = d.data.len() as u64;
                s.dirty_blocks += 1;
                s.dirty_pages += pages;
                s.dirty_bytes += bytes;
                let e = self.per_submit.entry(d.submit).or_default();
                e.0 += bytes;
                e.1 += pages;
            }
            Event::Submit(x) => {
                s.submits += 1;
                self.per_submit.entry(x.seq).or_default();
            }
            Event::Frame { .. } => s.frames += 1,
            Event::CaptureStart { .. } => s.captures += 1,
            Event::CaptureStop { .. } => {}
            Event::End(t) => s.writer_stalls = Some(t.writer_stalls),
            Event::Compared { ranges, .. } => s.compared_pages += count_pages(ranges, self.page_size, &mut None),
            Event::Trusted { ranges, .. } => s.trusted_pages += count_pages(ranges, self.page_size, &mut None),
        }
    }

    /// The summary, once `r` has ended.
    pub fn finish<R: Read>(self, r: &TraceReader<R>) -> Summary {
        let mut s = self.s;
        s.per_submit = PerSubmit {
            dirty_bytes: Dist::of(self.per_submit.values().map(|v| v.0).collect()),
            dirty_pages: Dist::of(self.per_submit.values().map(|v| v.1).collect()),
        };
        s.compression_ratio = if s.stored_bytes == 0 { 1.0 } else { s.payload_bytes as f64 / s.stored_bytes as f64 };
        s.backend_reasons =
            self.reasons.into_iter().map(|((backend, reason), maps)| BackendReason { backend, reason, maps }).collect();
        if let Some(t) = r.truncation() {
            s.truncated = true;
            s.truncation = Some(t.to_string());
        }
        s
    }
}
