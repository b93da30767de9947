//! `vkdirty gfxr-info [--json] CAPTURE.gfxr`: what a gfxreconstruct capture holds in memory data.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{out, CliError, Run};

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of lines.
    #[arg(long)]
    json: bool,
    /// The gfxreconstruct capture.
    capture: PathBuf,
}

impl Run for Args {
    fn run(self) -> Result<ExitCode, CliError> {
        let s = vkdirty::gfxr::summarize(&self.capture)?;
        if self.json {
            let v = serde_json::to_value(&s).map_err(|e| CliError::Msg(format!("encoding JSON: {e}")))?;
            out(|w| writeln!(w, "{v}"))?;
        } else {
            out(|w| {
                writeln!(
                    w,
                    "{}: {} bytes, {} blocks, compression {}",
                    self.capture.display(),
                    s.file_bytes,
                    s.blocks,
                    s.compression
                )?;
                writeln!(w, "calls: {} ({} submits, {} vkFlushMappedMemoryRanges)", s.calls, s.submits, s.flush_calls)?;
                writeln!(w, "fill-memory commands: {} holding {} bytes", s.fill_commands, s.fill_bytes)
            })?;
        }
        Ok(ExitCode::SUCCESS)
    }
}
