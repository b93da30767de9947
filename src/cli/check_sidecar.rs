//! `vkdirty check-sidecar [--backend B] [--json] TRACE SIDECAR`: is the trace exact? Replays the
//! trace and, at every submit, hashes each CPU-written allocation range the workload's sidecar
//! (`vkdirty-workload --sidecar`) lists, comparing with the hash the workload recorded. Also
//! reports the backends the mappings got (with reasons) and the trace-size ratio. Exit 0 only
//! when every state matches, the workload's own checks passed, and (with `--backend`) every
//! mapping used that backend. TRACE may also be a gfxreconstruct capture (`.gfxr`, recognised by
//! its signature): its fill-memory commands are checked the same way, allocations matched by
//! their number (the sidecar's `alloc_index`), since gfxreconstruct wraps handles.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;
use vkdirty::guard::BackendKind;
use vkdirty::sidecar;

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

impl Run for Args {
    fn run(self) -> Result<ExitCode, CliError> {
        let want = match &self.backend {
            Some(b) => Some(BackendKind::parse(b).ok_or_else(|| {
                let names: Vec<&str> = BackendKind::ALL.iter().map(|k| k.name()).collect();
                CliError::Msg(format!("unknown backend {b:?} (known: {})", names.join(", ")))
            })?),
            None => None,
        };
        let sc = sidecar::read(&self.sidecar, vkdirty::gfxr::is_gfxr(&self.trace))?;
        let r = sidecar::check(&self.trace, &sc, want)?;
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
                writeln!(
                    w,
                    "{verdict}: {} submits, {} allocation states checked, {} mismatches",
                    r.submits_checked,
                    r.states_checked,
                    r.mismatches.len()
                )?;
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
