//! `vkdirty check-sidecar [--backend B] [--json] TRACE SIDECAR`: is the trace exact? Replays the
//! trace and, at every submit, hashes each CPU-written allocation range the workload's sidecar
//! (`vkdirty-workload --sidecar`) lists, comparing with the hash the workload recorded. Also
//! reports the backends the mappings got (with reasons) and the trace-size ratio. Exit 0 only
//! when every state matches, the workload's own checks passed, and (with `--backend`) every
//! mapping used that backend. TRACE may also be a gfxreconstruct capture (`.gfxr`, recognised by
//! its signature): its fill-memory commands are checked the same way, allocations matched by
//! their number (the sidecar's `alloc_index`), since gfxreconstruct wraps handles.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value};
use vkdirty::guard::BackendKind;
use vkdirty::trace::{Event, Replay, TraceReader};

use super::{out, CliError, Run};

#[derive(clap::Args)]
pub struct Args {
    /// Fail unless every mapping used this backend (e.g. shadow-wp).
    #[arg(long)]
    backend: Option<String>,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    json: bool,
    /// The trace file (or a gfxreconstruct capture).
    trace: PathBuf,
    /// The workload's ground-truth sidecar (JSON lines).
    sidecar: PathBuf,
}

/// What the sidecar says.
struct Sidecar {
    page_size: u64,
    /// Allocation records in order: (memory handle, CPU range when CPU-written).
    allocs: Vec<(u64, Option<(u64, u64)>)>,
    /// Submit seq → (handle, offset, len, hash).
    submits: BTreeMap<u64, Vec<(u64, u64, u64, String)>>,
    pages: u64,
    ok: bool,
    error: Option<String>,
}

fn field<'a>(v: &'a Value, name: &str, line: usize) -> Result<&'a Value, CliError> {
    v.get(name).ok_or_else(|| CliError::Msg(format!("sidecar line {line}: no field {name:?}")))
}

fn num(v: &Value, name: &str, line: usize) -> Result<u64, CliError> {
    field(v, name, line)?.as_u64().ok_or_else(|| CliError::Msg(format!("sidecar line {line}: {name:?} is not a number")))
}

/// `by_index`: name allocations by their `alloc_index` (the number of the allocation) instead of
/// their handle; submit entries name handles, translated through the allocations live then.
fn read_sidecar(path: &PathBuf, by_index: bool) -> Result<Sidecar, CliError> {
    let mut live: HashMap<u64, u64> = HashMap::new();
    let f = File::open(path).map_err(|e| CliError::io(format!("opening {}", path.display()), e))?;
    let mut s = Sidecar { page_size: 0, allocs: Vec::new(), submits: BTreeMap::new(), pages: 0, ok: false, error: None };
    let mut ended = false;
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| CliError::io(format!("reading {}", path.display()), e))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| CliError::Msg(format!("sidecar line {n}: not JSON: {e}")))?;
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
                    let r = r.ok_or_else(|| CliError::Msg(format!("sidecar line {n}: cpu_range is not [offset, len]")))?;
                    match (r[0].as_u64(), r[1].as_u64()) {
                        (Some(o), Some(l)) => Some((o, l)),
                        _ => return Err(CliError::Msg(format!("sidecar line {n}: cpu_range is not two numbers"))),
                    }
                };
                s.allocs.push((handle, cpu));
            }
            Some("submit") => {
                let seq = num(&v, "seq", n)?;
                let list = field(&v, "allocs", n)?.as_array().ok_or_else(|| CliError::Msg(format!("sidecar line {n}: allocs is not a list")))?;
                let mut entries = Vec::with_capacity(list.len());
                for e in list {
                    let hash = field(e, "hash", n)?.as_str().ok_or_else(|| CliError::Msg(format!("sidecar line {n}: hash is not a string")))?;
                    let mut handle = num(e, "handle", n)?;
                    if by_index {
                        handle = *live.get(&handle).ok_or_else(|| CliError::Msg(format!("sidecar line {n}: memory {handle:#x} has no alloc record")))?;
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
        return Err(CliError::Msg(format!("{}: no sidecar header", path.display())));
    }
    if !ended {
        return Err(CliError::Msg(format!("{}: the sidecar has no end record (the workload did not finish)", path.display())));
    }
    Ok(s)
}

/// FNV-1a 64, the sidecar's hash.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Default, serde::Serialize)]
struct Report {
    exact: bool,
    submits_checked: u64,
    /// Submits outside the capture window (FRAMES, SUBMITS, a trigger): no dirty data was
    /// captured for them, so their state is not checked.
    submits_outside_window: u64,
    states_checked: u64,
    mismatches: Vec<String>,
    /// Backend → number of mappings.
    backends: BTreeMap<String, u64>,
    /// (backend, reason) → number of mappings.
    reasons: BTreeMap<String, u64>,
    wrong_backend: u64,
    /// Dirty bytes inside the CPU ranges of CPU-written allocations.
    cpu_dirty_bytes: u64,
    /// Bytes of the pages the workload wrote.
    written_page_bytes: u64,
    /// Every dirty byte of the trace.
    all_dirty_bytes: u64,
    trace_bytes: u64,
    workload_ok: bool,
    workload_error: Option<String>,
}

fn check(a: &Args, sc: &Sidecar, want: Option<BackendKind>) -> Result<Report, CliError> {
    let gfxr = vkdirty::gfxr::is_gfxr(&a.trace);
    let mut reader = if gfxr { None } else { Some(TraceReader::open(&a.trace)?) };
    let mut gfxr_events = if gfxr { vkdirty::gfxr::memory_events(&a.trace)? } else { Vec::new() }.into_iter();
    let mut r = Report {
        written_page_bytes: sc.pages * sc.page_size,
        trace_bytes: std::fs::metadata(&a.trace).map(|m| m.len()).unwrap_or(0),
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
                    v.from != "default" && matches!(v.name.as_str(), "FRAMES" | "SUBMITS" | "TRIGGER_FILE" | "TRIGGER_SIGNAL")
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
                        r.mismatches.push(format!("submit {}: allocation {id} ({handle:#x}) unreadable at {off}+{len}", s.seq));
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

impl Run for Args {
    fn run(self) -> Result<ExitCode, CliError> {
        let want = match &self.backend {
            Some(b) => Some(BackendKind::parse(b).ok_or_else(|| {
                let names: Vec<&str> = BackendKind::ALL.iter().map(|k| k.name()).collect();
                CliError::Msg(format!("unknown backend {b:?} (known: {})", names.join(", ")))
            })?),
            None => None,
        };
        let sc = read_sidecar(&self.sidecar, vkdirty::gfxr::is_gfxr(&self.trace))?;
        let r = check(&self, &sc, want)?;
        let pass = r.exact && r.workload_ok && r.wrong_backend == 0;
        let ratio = if r.written_page_bytes > 0 { r.cpu_dirty_bytes as f64 / r.written_page_bytes as f64 } else { 0.0 };
        if self.json {
            let mut v = serde_json::to_value(&r).map_err(|e| CliError::Msg(format!("encoding JSON: {e}")))?;
            v["pass"] = json!(pass);
            v["dirty_ratio"] = json!(ratio);
            out(|w| writeln!(w, "{v}"))?;
        } else {
            out(|w| {
                let verdict = if r.exact { "exact" } else { "NOT exact" };
                writeln!(w, "{verdict}: {} submits, {} allocation states checked, {} mismatches", r.submits_checked, r.states_checked, r.mismatches.len())?;
                if r.submits_outside_window > 0 {
                    writeln!(w, "  {} submits outside the capture window not checked", r.submits_outside_window)?;
                }
                for m in r.mismatches.iter().take(10) {
                    writeln!(w, "  {m}")?;
                }
                let b: Vec<String> = r.backends.iter().map(|(k, n)| format!("{k} {n}")).collect();
                writeln!(w, "mappings: {}", if b.is_empty() { "none".into() } else { b.join(", ") })?;
                for (reason, n) in &r.reasons {
                    writeln!(w, "  x{n} {reason}")?;
                }
                if let Some(want) = want {
                    writeln!(w, "mappings not using {want}: {}", r.wrong_backend)?;
                }
                writeln!(
                    w,
                    "dirty bytes: {} in CPU ranges / {} bytes of pages written = {ratio:.3}; {} in all; trace {} bytes",
                    r.cpu_dirty_bytes, r.written_page_bytes, r.all_dirty_bytes, r.trace_bytes
                )?;
                match (&r.workload_ok, &r.workload_error) {
                    (true, _) => writeln!(w, "workload: ok"),
                    (false, e) => writeln!(w, "workload: FAILED {}", e.as_deref().unwrap_or("")),
                }
            })?;
        }
        Ok(if pass { ExitCode::SUCCESS } else { ExitCode::from(1) })
    }
}
