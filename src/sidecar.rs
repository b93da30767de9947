//! The ground-truth oracle: a workload's sidecar (JSON lines: `header`, `alloc`, `submit` with
//! the FNV-1a hash of each CPU-written range at that submit, `end`) against a trace replayed in
//! stream order. Used by `vkdirty check-sidecar` and the end-to-end tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use crate::guard::BackendKind;
use crate::trace::{Event, Replay, TraceError, TraceReader};

/// Why a sidecar could not be read or a trace not checked against it.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("{0}")]
    Trace(#[from] TraceError),
    #[error("{0}")]
    Gfxr(#[from] crate::gfxr::GfxrError),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("{0}")]
    Msg(String),
}

impl SidecarError {
    fn io(context: impl Into<String>, source: io::Error) -> SidecarError {
        SidecarError::Io { context: context.into(), source }
    }
}

/// What the sidecar says.
pub struct Sidecar {
    pub page_size: u64,
    /// Allocation records in order: (memory handle, CPU range when CPU-written).
    pub allocs: Vec<(u64, Option<(u64, u64)>)>,
    /// Submit seq → (handle, offset, len, hash).
    pub submits: BTreeMap<u64, Vec<(u64, u64, u64, String)>>,
    pub pages: u64,
    pub ok: bool,
    pub error: Option<String>,
}

fn field<'a>(v: &'a Value, name: &str, line: usize) -> Result<&'a Value, SidecarError> {
    v.get(name).ok_or_else(|| SidecarError::Msg(format!("sidecar line {line}: no field {name:?}")))
}

fn num(v: &Value, name: &str, line: usize) -> Result<u64, SidecarError> {
    field(v, name, line)?
        .as_u64()
        .ok_or_else(|| SidecarError::Msg(format!("sidecar line {line}: {name:?} is not a number")))
}

/// `by_index`: name allocations by their `alloc_index` (the number of the allocation) instead of
/// their handle; submit entries name handles, translated through the allocations live then.
pub fn read(path: &Path, by_index: bool) -> Result<Sidecar, SidecarError> {
    let mut live: HashMap<u64, u64> = HashMap::new();
    let f = File::open(path).map_err(|e| SidecarError::io(format!("opening {}", path.display()), e))?;
    let mut s =
        Sidecar { page_size: 0, allocs: Vec::new(), submits: BTreeMap::new(), pages: 0, ok: false, error: None };
    let mut ended = false;
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| SidecarError::io(format!("reading {}", path.display()), e))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(&line).map_err(|e| SidecarError::Msg(format!("sidecar line {n}: not JSON: {e}")))?;
        match field(&v, "kind", n)?.as_str() {
            Some("header") => s.page_size = num(&v, "page_size", n)?,
            Some("alloc") => {
                let mut handle = num(&v, "handle", n)?;
                if by_index {
                    let index = num(&v, "alloc_index", n)?;
                    live.insert(handle, index);
                    handle = index;
                }
                let cpu = if v.get("gpu_written") == Some(&Value::Bool(true)) {
                    None
                } else {
                    let r = field(&v, "cpu_range", n)?.as_array().filter(|a| a.len() == 2);
                    let r = r.ok_or_else(|| {
                        SidecarError::Msg(format!("sidecar line {n}: cpu_range is not [offset, len]"))
                    })?;
                    match (r[0].as_u64(), r[1].as_u64()) {
                        (Some(o), Some(l)) => Some((o, l)),
                        _ => return Err(SidecarError::Msg(format!("sidecar line {n}: cpu_range is not two numbers"))),
                    }
                };
                s.allocs.push((handle, cpu));
            }
            Some("submit") => {
                let seq = num(&v, "seq", n)?;
                let list = field(&v, "allocs", n)?
                    .as_array()
                    .ok_or_else(|| SidecarError::Msg(format!("sidecar line {n}: allocs is not a list")))?;
                let mut entries = Vec::with_capacity(list.len());
                for e in list {
                    let hash = field(e, "hash", n)?
                        .as_str()
                        .ok_or_else(|| SidecarError::Msg(format!("sidecar line {n}: hash is not a string")))?;
                    let mut handle = num(e, "handle", n)?;
                    if by_index {
                        handle = *live.get(&handle).ok_or_else(|| {
                            SidecarError::Msg(format!("sidecar line {n}: memory {handle:#x} has no alloc record"))
                        })?;
                    }
                    entries.push((handle, num(e, "offset", n)?, num(e, "len", n)?, hash.to_string()));
                }
                s.submits.insert(seq, entries);
            }
            Some("end") => {
                ended = true;
                s.pages = num(&v, "pages", n)?;
                s.ok = v.get("ok") == Some(&Value::Bool(true));
                s.error = v.get("error").and_then(|e| e.as_str()).map(str::to_string);
            }
            _ => {}
        }
    }
    if s.page_size == 0 {
        return Err(SidecarError::Msg(format!("{}: no sidecar header", path.display())));
    }
    if !ended {
        return Err(SidecarError::Msg(format!(
            "{}: the sidecar has no end record (the workload did not finish)",
            path.display()
        )));
    }
    Ok(s)
}

/// FNV-1a 64, the sidecar's hash (the workload computes it with this function too).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Default, serde::Serialize)]
pub struct Report {
    pub exact: bool,
    pub submits_checked: u64,
    /// Submits outside the capture window (FRAMES, SUBMITS, a trigger): no dirty data was
    /// captured for them, so their state is not checked.
    pub submits_outside_window: u64,
    pub states_checked: u64,
    pub mismatches: Vec<String>,
    /// Backend → number of mappings.
    pub backends: BTreeMap<String, u64>,
    /// (backend, reason) → number of mappings.
    pub reasons: BTreeMap<String, u64>,
    pub wrong_backend: u64,
    /// The first mappings that did not use the backend asked for (for test failure messages).
    #[serde(skip)]
    pub wrong_backend_examples: Vec<String>,
    /// Dirty bytes inside the CPU ranges of CPU-written allocations.
    pub cpu_dirty_bytes: u64,
    /// Bytes of the pages the workload wrote.
    pub written_page_bytes: u64,
    /// Every dirty byte of the trace.
    pub all_dirty_bytes: u64,
    pub trace_bytes: u64,
    pub workload_ok: bool,
    pub workload_error: Option<String>,
}

pub fn check(trace: &Path, sc: &Sidecar, want: Option<BackendKind>) -> Result<Report, SidecarError> {
    let gfxr = crate::gfxr::is_gfxr(trace);
    let mut reader = if gfxr { None } else { Some(TraceReader::open(trace)?) };
    let mut gfxr_events = if gfxr { crate::gfxr::memory_events(trace)? } else { Vec::new() }.into_iter();
    let mut r = Report {
        written_page_bytes: sc.pages * sc.page_size,
        trace_bytes: std::fs::metadata(trace).map(|m| m.len()).unwrap_or(0),
        workload_ok: sc.ok,
        workload_error: sc.error.clone(),
        ..Report::default()
    };
    // Sidecar allocation records by handle, taken in order (a freed handle may come back).
    let mut pending: HashMap<u64, Vec<Option<(u64, u64)>>> = HashMap::new();
    for (h, cpu) in sc.allocs.iter().rev() {
        pending.entry(*h).or_default().push(*cpu);
    }
    let mut by_handle: HashMap<u64, u64> = HashMap::new();
    let mut cpu_range: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut replay = Replay::new();
    let mut seen = BTreeSet::new();
    let mut buf = Vec::new();
    let mut i = 0u64;
    // A trace whose session says capture was windowed is checked inside its windows only.
    let mut inside = true;
    loop {
        let ev = match reader.as_mut() {
            Some(reader) => match reader.next_block()? {
                Some(block) => match block.event {
                    Some(ev) => ev,
                    None => continue,
                },
                None => break,
            },
            None => match gfxr_events.next() {
                Some(ev) => ev,
                None => break,
            },
        };
        replay.apply(&ev, i)?;
        i += 1;
        match &ev {
            Event::Session(x) => {
                let windowed = x.settings.iter().any(|v| {
                    v.from != "default"
                        && matches!(v.name.as_str(), "FRAMES" | "SUBMITS" | "TRIGGER_FILE" | "TRIGGER_SIGNAL")
                });
                inside = !windowed;
            }
            Event::CaptureStart { .. } => inside = true,
            Event::CaptureStop { .. } => inside = false,
            Event::Submit(s) if !inside => {
                r.submits_outside_window += 1;
                seen.insert(s.seq);
            }
            Event::Allocation(al) => {
                by_handle.insert(al.handle, al.id);
                if let Some(Some(cpu)) = pending.get_mut(&al.handle).and_then(|v| v.pop()) {
                    cpu_range.insert(al.id, cpu);
                }
            }
            Event::Map(m) => {
                *r.backends.entry(m.backend.name().to_string()).or_default() += 1;
                *r.reasons.entry(format!("{}: {}", m.backend, m.reason)).or_default() += 1;
                if want.is_some_and(|w| w != m.backend) {
                    r.wrong_backend += 1;
                    if r.wrong_backend_examples.len() < 10 {
                        r.wrong_backend_examples
                            .push(format!("allocation {} mapped with {} ({})", m.alloc, m.backend, m.reason));
                    }
                }
            }
            Event::Dirty(d) => {
                let (lo, len) = cpu_range.get(&d.alloc).copied().unwrap_or((0, 0));
                for &(o, l) in &d.runs {
                    r.all_dirty_bytes += l;
                    r.cpu_dirty_bytes += (o + l).min(lo + len).saturating_sub(o.max(lo));
                }
            }
            Event::Submit(s) => {
                let Some(entries) = sc.submits.get(&s.seq) else {
                    r.mismatches.push(format!("trace submit {} is not in the sidecar", s.seq));
                    continue;
                };
                r.submits_checked += 1;
                seen.insert(s.seq);
                for (handle, off, len, want_hash) in entries {
                    r.states_checked += 1;
                    let Some(&id) = by_handle.get(handle) else {
                        r.mismatches.push(format!("submit {}: memory {handle:#x} has no Allocation record", s.seq));
                        continue;
                    };
                    let Ok(n) = usize::try_from(*len) else {
                        r.mismatches.push(format!("submit {}: length {len} too large", s.seq));
                        continue;
                    };
                    buf.resize(n, 0);
                    if replay.read(id, *off, &mut buf).is_none() {
                        r.mismatches
                            .push(format!("submit {}: allocation {id} ({handle:#x}) unreadable at {off}+{len}", s.seq));
                        continue;
                    }
                    let got = format!("{:#018x}", fnv1a64(&buf));
                    if &got != want_hash {
                        r.mismatches.push(format!(
                            "submit {}: allocation {id} (memory {handle:#x}, bytes {off}+{len}): trace hash {got}, sidecar {want_hash}",
                            s.seq
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(t) = reader.as_ref().and_then(|r| r.truncation()) {
        r.mismatches.push(t.to_string());
    }
    let missing: Vec<u64> = sc.submits.keys().copied().filter(|q| !seen.contains(q)).collect();
    if !missing.is_empty() {
        r.mismatches.push(format!("sidecar submits missing from the trace: {missing:?}"));
    }
    r.exact = r.mismatches.is_empty() && r.submits_checked > 0;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }
}
