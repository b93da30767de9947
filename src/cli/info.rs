//! `vkdirty info [--json] [--by allocation|frame|submit] FILE`

use std::path::PathBuf;
use std::process::ExitCode;

use vkdirty::trace::stats::Stats;
use vkdirty::trace::summary::{Dist, SummaryBuilder};
use vkdirty::trace::{Checker, Summary, TraceReader};

use super::progress::Progress;
use super::tables::{self, By};
use super::{human_bytes, out, warn, CliError, Run};

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of the human summary.
    #[arg(long)]
    json: bool,
    /// Also list every allocation, frame or submit (dirty pages and bytes, trace bytes, ...);
    /// with --json, as an array `by_allocation`, `by_frame` or `by_submit`.
    #[arg(long, value_enum, value_name = "WHAT")]
    by: Option<By>,
    /// The trace file.
    file: PathBuf,
}

impl Run for Args {
    fn run(self) -> Result<ExitCode, CliError> {
        if let Some(by) = self.by {
            return self.run_by(by);
        }
        let s = self.summary()?;
        if self.json {
            let text = serde_json::to_string(&s).map_err(|e| CliError::Msg(format!("encoding JSON: {e}")))?;
            out(|w| writeln!(w, "{text}"))?;
        } else {
            let text = render(&self.file.display().to_string(), &s);
            out(|w| w.write_all(text.as_bytes()))?;
        }
        if let Some(t) = &s.truncation {
            warn(t);
        }
        if !s.damage.is_empty() || !s.problems.is_empty() {
            warn(format_args!(
                "{} damaged range(s) and {} inconsistent record(s) skipped: the summary covers the readable blocks (vkdirty verify lists them)",
                s.damage.len(),
                s.problems.len()
            ));
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl Args {
    /// `Summary::from_file` with a progress bar.
    fn summary(&self) -> Result<Summary, CliError> {
        let len = std::fs::metadata(&self.file)
            .map_err(|e| CliError::io(format!("cannot open {}", self.file.display()), e))?
            .len();
        // Salvaging: damaged ranges and inconsistent records are skipped and listed.
        let mut r = TraceReader::open(&self.file)?.salvage(true);
        let mut b = SummaryBuilder::new(r.header(), len);
        let mut p = Progress::new(len, "reading");
        let mut checker = Checker::new();
        checker.follow(&mut r, |block, ok| {
            if ok {
                b.add(block);
            }
            p.set(block.offset + block.file_len());
            Ok(())
        })?;
        let mut s = b.finish(&r);
        s.add_damage(&checker);
        Ok(s)
    }

    fn run_by(&self, by: By) -> Result<ExitCode, CliError> {
        let len = std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0);
        let mut p = Progress::new(len, "reading");
        let st = Stats::from_file(&self.file, |o| p.set(o))?;
        drop(p);
        if self.json {
            let v = tables::json(&st, by).map_err(|e| CliError::Msg(format!("encoding JSON: {e}")))?;
            out(|w| writeln!(w, "{v}"))?;
        } else {
            let mut text = render(&self.file.display().to_string(), &st.summary);
            text.push('\n');
            text.push_str(&tables::render(&st, by));
            out(|w| w.write_all(text.as_bytes()))?;
        }
        if let Some(t) = &st.summary.truncation {
            warn(t);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// UTC "YYYY-MM-DD HH:MM:SS" from nanoseconds since the epoch.
pub fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Civil-from-days (proleptic Gregorian), after H. Hinnant.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem / 60 % 60, rem % 60)
}

fn dist_bytes(d: &Dist) -> String {
    format!("median {}, p99 {}, max {}", human_bytes(d.median), human_bytes(d.p99), human_bytes(d.max))
}

fn render(name: &str, s: &Summary) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "trace        {name} ({}, format {}, page {} B, created {})",
        s.writer_version,
        s.format_version,
        s.page_size,
        utc(s.created_ns)
    );
    if let Some(x) = &s.session {
        let _ = writeln!(
            o,
            "session      {} (pid {}), app \"{}\", engine \"{}\", device \"{}\" (vendor {:#x}, device {:#x}, API {})",
            x.process, x.pid, x.app, x.engine, x.device, x.vendor_id, x.device_id, x.api_version
        );
        if !x.settings.is_empty() {
            let set: Vec<String> = x
                .settings
                .iter()
                .filter(|v| v.from != "default")
                .map(|v| format!("{}={} ({})", v.name, v.value, v.from))
                .collect();
            let _ = writeln!(
                o,
                "settings     {}",
                if set.is_empty() { "all defaults".to_string() } else { set.join(", ") }
            );
        }
    }
    let _ = writeln!(o, "allocations  {} ({} total)", s.allocations, human_bytes(s.allocated_bytes));
    let backends: Vec<String> = s.backends.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(
        o,
        "maps         {} ({})",
        s.maps,
        if backends.is_empty() { "none".into() } else { backends.join(", ") }
    );
    for r in &s.backend_reasons {
        let reason = if r.reason.is_empty() { String::new() } else { format!(": {}", r.reason) };
        let _ = writeln!(o, "               {} x{}{}", r.backend, r.maps, reason);
    }
    let _ = writeln!(o, "submits      {}", s.submits);
    let _ = writeln!(o, "frames       {}", s.frames);
    let _ = writeln!(
        o,
        "dirty        {} pages, {} in {} blocks",
        s.dirty_pages,
        human_bytes(s.dirty_bytes),
        s.dirty_blocks
    );
    if s.compared_pages > 0 {
        let _ = writeln!(o, "             {} of them by compare (predicted pages that changed)", s.compared_pages);
    }
    if s.trusted_pages > 0 {
        let _ =
            writeln!(o, "             {} of them by trusted prediction (unprotected, not compared)", s.trusted_pages);
    }
    let p = &s.per_submit.dirty_pages;
    let _ = writeln!(o, "per submit   bytes {}", dist_bytes(&s.per_submit.dirty_bytes));
    let _ = writeln!(o, "             pages median {}, p99 {}, max {}", p.median, p.p99, p.max);
    let _ = writeln!(
        o,
        "on disk      {} (payload {} stored as {}, compression {:.2}x)",
        human_bytes(s.file_bytes),
        human_bytes(s.payload_bytes),
        human_bytes(s.stored_bytes),
        s.compression_ratio
    );
    let _ = writeln!(
        o,
        "writer       {}",
        match s.writer_stalls {
            Some(n) => format!("{n} stalls"),
            None => "stalls unknown (no end block)".into(),
        }
    );
    let status = match (&s.truncation, s.damage.is_empty() && s.problems.is_empty()) {
        (None, true) => "complete".to_string(),
        (Some(t), true) => t.clone(),
        (t, false) => format!(
            "DAMAGED: {} range(s), {} inconsistent record(s); the figures above cover the readable blocks{}",
            s.damage.len(),
            s.problems.len(),
            t.as_ref().map_or(String::new(), |t| format!("; {t}"))
        ),
    };
    let _ = writeln!(o, "status       {status}");
    for d in &s.damage {
        let ids: Vec<String> = d.allocations.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(
            o,
            "damage       bytes {}..{} ({}): {}; intact through submit {}{}",
            d.offset,
            d.offset + d.len,
            human_bytes(d.len),
            d.reason,
            d.intact_through_submit,
            if ids.is_empty() {
                String::new()
            } else {
                format!(", then allocations {} may miss writes", ids.join(", "))
            }
        );
    }
    for p in &s.problems {
        let _ = writeln!(o, "inconsistent {p}");
    }
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(951_782_400_000_000_000 + 3_661_000_000_000), "2000-02-29 01:01:01 UTC");
    }
}
