//! `vkdirty dump FILE --alloc ID [--at-submit N] -o OUT`, or with `--diff --at-submit A --against B`
//! what changed in the allocation between the two submits (see `diff`).

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use vkdirty::trace::{Replay, TraceReader};

use super::progress::Progress;
use super::{out, warn, CliError, Run};

#[derive(clap::Args)]
pub struct Args {
    /// The trace file.
    file: PathBuf,
    /// Allocation id (as in `vkdirty events`).
    #[arg(long = "alloc", value_name = "ID")]
    alloc: u64,
    /// Contents as of this submit (dirty data of submits <= N); default: the end of the trace.
    #[arg(long = "at-submit", value_name = "N")]
    at_submit: Option<u64>,
    /// Output file (created with mode 0600: it holds application memory).
    #[arg(short = 'o', long = "output", value_name = "OUT", required_unless_present = "diff")]
    output: Option<PathBuf>,
    /// Print the byte ranges that differ between --at-submit A and --against B, with a hexdump.
    #[arg(long, requires_all = ["at_submit", "against"], conflicts_with = "output")]
    diff: bool,
    /// With --diff: the other submit.
    #[arg(long, value_name = "B", requires = "diff")]
    against: Option<u64>,
    /// With --diff: changed bytes shown in the hexdump at most (ranges are all listed).
    #[arg(long, value_name = "BYTES", default_value_t = 512)]
    max_dump: u64,
}

/// `ids 1-4, 7` (ranges of consecutive ids), or `no allocations`.
fn id_list(ids: impl Iterator<Item = u64>) -> String {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for id in ids {
        match runs.last_mut() {
            Some(r) if r.1 + 1 == id => r.1 = id,
            _ => runs.push((id, id)),
        }
    }
    if runs.is_empty() {
        return "no allocations".into();
    }
    let parts: Vec<String> = runs.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    format!("allocation ids {}", parts.join(", "))
}

impl Run for Args {
    fn run(self) -> Result<ExitCode, CliError> {
        if self.diff {
            let (a, b) = (self.at_submit.unwrap_or(0), self.against.unwrap_or(0));
            return super::diff::run(&self.file, self.alloc, a, b, self.max_dump);
        }
        let Some(output) = self.output.clone() else {
            return Err(CliError::Msg("dump needs -o OUT (or --diff)".into()));
        };
        let mut replay = Replay::new().only_alloc(self.alloc);
        if let Some(n) = self.at_submit {
            replay = replay.up_to_submit(n);
        }
        // Replay::from_file, with a progress bar.
        let mut r = TraceReader::open(&self.file)?;
        let len = std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0);
        let mut progress = Progress::new(len, "replaying");
        while let Some(b) = r.next_block()? {
            progress.set(r.offset());
            if let Some(ev) = &b.event {
                replay.apply(ev, b.offset)?;
            }
        }
        drop(progress);
        let truncation = r.truncation().cloned();
        if replay.size(self.alloc).is_none() {
            return Err(CliError::Msg(format!(
                "{}: no allocation {} in the trace (it has {})",
                self.file.display(),
                self.alloc,
                id_list(replay.recorded_allocations())
            )));
        }
        if let Some(n) = self.at_submit.filter(|&n| n > replay.last_submit()) {
            return Err(CliError::Msg(format!(
                "{}: --at-submit {n} is past the last submit; the trace has {} (0 is before the first)",
                self.file.display(),
                match replay.last_submit() {
                    0 => "no submits".to_string(),
                    1 => "submit 1 only".to_string(),
                    k => format!("submits 1 to {k}"),
                }
            )));
        }
        if let Some(t) = &truncation {
            warn(t);
        }
        let ctx = || format!("writing {}", output.display());
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&output)
            .map_err(|e| CliError::io(ctx(), e))?;
        let mut w = BufWriter::new(f);
        let size = replay.write_to(self.alloc, &mut w).and_then(|n| w.flush().map(|()| n)).map_err(|e| CliError::io(ctx(), e))?;
        let at = self.at_submit.map_or("the end".to_string(), |n| format!("submit {n}"));
        out(|o| {
            writeln!(
                o,
                "wrote {} bytes of allocation {} as of {at} to {}",
                size.unwrap_or(0),
                self.alloc,
                output.display()
            )
        })?;
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn id_lists() {
        assert_eq!(super::id_list([1, 2, 3, 5, 7, 8].into_iter()), "allocation ids 1-3, 5, 7-8");
        assert_eq!(super::id_list(std::iter::empty()), "no allocations");
    }
}
