//! `vkdirty dump FILE --alloc ID [--at-submit N] -o OUT`

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use vkdirty::trace::Replay;

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
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: PathBuf,
}

impl Run for Args {
    fn run(self) -> Result<ExitCode, CliError> {
        let mut replay = Replay::new().only_alloc(self.alloc);
        if let Some(n) = self.at_submit {
            replay = replay.up_to_submit(n);
        }
        let (replay, truncation) = Replay::from_file(&self.file, replay)?;
        if replay.size(self.alloc).is_none() {
            return Err(CliError::Msg(format!("{}: no allocation {} in the trace", self.file.display(), self.alloc)));
        }
        if let Some(t) = &truncation {
            warn(t);
        }
        let ctx = || format!("writing {}", self.output.display());
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.output)
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
                self.output.display()
            )
        })?;
        Ok(ExitCode::SUCCESS)
    }
}
