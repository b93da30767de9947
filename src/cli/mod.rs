//! The `vkdirty` command line. Each subcommand is one module with an `Args` type implementing
//! [`Run`]; adding one is a module plus one line in the `commands!` list below.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use vkdirty::trace::TraceError;

mod capture;
mod capture_gfxr;
mod check_sidecar;
mod diff;
mod dump;
mod events;
mod export;
mod gfxr_info;
mod info;
mod progress;
mod report;
mod tables;
mod verify;

/// What a subcommand does once parsed.
pub trait Run {
    fn run(self) -> Result<ExitCode, CliError>;
}

macro_rules! commands {
    ($($(#[$meta:meta])* $variant:ident($args:ty),)*) => {
        #[derive(Subcommand)]
        enum Command {
            $($(#[$meta])* $variant($args),)*
        }

        impl Run for Command {
            fn run(self) -> Result<ExitCode, CliError> {
                match self {
                    $(Command::$variant(a) => a.run(),)*
                }
            }
        }
    };
}

commands! {
    /// Run an application (default: the built-in workload) under the layer and summarise its trace.
    Capture(capture::Args),
    /// Summarise a trace: allocations, maps, submits, frames, dirty data, size on disk.
    Info(info::Args),
    /// Write one allocation's reconstructed bytes as of a submit.
    Dump(dump::Args),
    /// Check every block and CRC; exit 0 only when the trace is whole.
    Verify(verify::Args),
    /// Print one JSON object per block, one per line.
    Events(events::Args),
    /// Write an HTML report (heatmap, timeline, allocation table, session) and optionally a PNG.
    Report(report::Args),
    /// Write the dirty data as CSV (one row per run) or Perfetto / Chrome trace-event JSON.
    Export(export::Args),
    /// Check a trace of vkdirty-workload against the workload's sidecar: exact at every submit?
    CheckSidecar(check_sidecar::Args),
    /// Summarise a gfxreconstruct capture's memory data: submits, flushes, fill-memory commands.
    GfxrInfo(gfxr_info::Args),
}

#[derive(Parser)]
#[command(
    name = "vkdirty",
    version,
    about = "Capture what a Vulkan application writes to mapped memory (vkdirty capture), and inspect the traces",
    long_about = "vkdirty captures the memory a Vulkan application writes through mapped pointers, dirty pages \
                  only, with the VK_LAYER_VKDIRTY_capture layer. `vkdirty capture -- APP ARGS` runs an \
                  application under the layer; the other commands inspect and check the .vkd traces it writes."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// A failure, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Trace(#[from] TraceError),
    #[error("{0}")]
    Gfxr(#[from] vkdirty::gfxr::GfxrError),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("{0}")]
    Sidecar(#[from] vkdirty::sidecar::SidecarError),
    #[error("{0}")]
    Msg(String),
}

impl CliError {
    pub fn io(context: impl Into<String>, source: io::Error) -> CliError {
        CliError::Io { context: context.into(), source }
    }
}

/// Writes to stdout; a closed pipe (`vkdirty events f | head`) ends the command quietly.
pub fn out(f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<(), CliError> {
    let stdout = io::stdout();
    let mut lock = stdout.lock();
    f(&mut lock).and_then(|()| lock.flush()).map_err(|e| CliError::io("writing to stdout", e))
}

pub fn warn(msg: impl std::fmt::Display) {
    let _ = writeln!(io::stderr(), "vkdirty: warning: {msg}");
}

/// "12.3 MiB" style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // clap's own message names the missing or unknown argument, suggests a similar one
            // and shows the usage: keep all of it.
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    match cli.command.run() {
        Ok(code) => code,
        Err(CliError::Io { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "vkdirty: {e}");
            ExitCode::FAILURE
        }
    }
}
