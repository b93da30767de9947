//! `vkdirty verify FILE`

use std::path::PathBuf;
use std::process::ExitCode;

use vkdirty::trace::{Checker, TraceReader};

use super::{out, CliError, Run};

#[derive(clap::Args)]
pub struct Args {
    /// The trace file.
    file: PathBuf,
}

/// "allocations 1, 3 may miss writes after submit 41" for one damaged range.
pub fn impact_line(i: &vkdirty::trace::Impact) -> String {
    let ids: Vec<String> = i.allocations.iter().map(|a| a.to_string()).collect();
    let after =
        if i.intact_through == 0 { "from the start".to_string() } else { format!("after submit {}", i.intact_through) };
    if ids.is_empty() {
        format!("no live host-visible allocation affected; everything up to submit {} intact", i.intact_through)
    } else {
        format!("allocation{} {} may miss writes {after}", if ids.len() > 1 { "s" } else { "" }, ids.join(", "))
    }
}

impl Run for Args {
    fn run(self) -> Result<ExitCode, CliError> {
        let mut r = TraceReader::open(&self.file)?.salvage(true);
        let mut blocks = 0u64;
        let mut unknown = 0u64;
        let mut checker = Checker::new();
        checker.follow(&mut r, |b, _| {
            blocks += 1;
            unknown += u64::from(b.event.is_none());
            Ok(())
        })?;
        let name = self.file.display();
        let (impacts, problems) = (checker.impacts(), checker.problems());
        if impacts.is_empty() && problems.is_empty() && r.truncation().is_none() {
            let end = r.offset();
            out(|w| {
                write!(w, "{name}: ok, {blocks} blocks, {end} bytes")?;
                if unknown > 0 {
                    write!(w, " ({unknown} blocks of unknown type skipped)")?;
                }
                writeln!(w)
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        out(|w| {
            for i in impacts {
                writeln!(w, "{name}: {}; {}", i.damage, impact_line(i))?;
            }
            for p in problems {
                writeln!(w, "{name}: {p}")?;
            }
            if let Some(t) = r.truncation() {
                writeln!(w, "{name}: {t}")?;
            }
            Ok(())
        })?;
        let mut parts = Vec::new();
        if let Some(first) = impacts.first() {
            let bytes: u64 = impacts.iter().map(|i| i.damage.len).sum();
            parts.push(format!(
                "{} damaged range{} ({bytes} bytes, first at byte {})",
                impacts.len(),
                if impacts.len() > 1 { "s" } else { "" },
                first.damage.offset
            ));
        }
        if let Some(p) = problems.first() {
            parts.push(format!(
                "{} inconsistent record{} (first at byte {})",
                problems.len(),
                if problems.len() > 1 { "s" } else { "" },
                p.offset
            ));
        }
        if let Some(t) = r.truncation() {
            parts.push(format!("truncated at byte {}", t.offset));
        }
        Err(CliError::Msg(format!("{name}: not whole: {}; {blocks} blocks readable", parts.join(", "))))
    }
}
