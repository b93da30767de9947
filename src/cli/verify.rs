//! `vkdirty verify FILE`

use std::path::PathBuf;
use std::process::ExitCode;

use vkdirty::trace::TraceReader;

use super::{out, CliError, Run};

#[derive(clap::Args)]
pub struct Args {
    /// The trace file.
    file: PathBuf,
}

impl Run for Args {
    fn run(self) -> Result<ExitCode, CliError> {
        let mut r = TraceReader::open(&self.file)?;
        let mut blocks = 0u64;
        let mut unknown = 0u64;
        while let Some(b) = r.next_block()? {
            blocks += 1;
            unknown += u64::from(b.event.is_none());
        }
        if let Some(t) = r.truncation() {
            return Err(CliError::Msg(format!("{}: {t}", self.file.display())));
        }
        let end = r.offset();
        out(|w| {
            write!(w, "{}: ok, {blocks} blocks, {end} bytes", self.file.display())?;
            if unknown > 0 {
                write!(w, " ({unknown} blocks of unknown type skipped)")?;
            }
            writeln!(w)
        })?;
        Ok(ExitCode::SUCCESS)
    }
}
