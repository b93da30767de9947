//! `vkdirty dump FILE --alloc ID [--at-submit N] -o OUT`, or with `--diff --at-submit A --against B`
//! what changed in the allocation between the two submits (see `diff`).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use vkdirty::trace::{Checker, Replay, TraceReader};

use super::progress::Progress;
use super::verify::impact_line;
use super::{human_bytes, out, warn, CliError, Run};

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
    /// Output file (a sparse regular file, created with mode 0600: it holds application memory).
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
    /// Largest allocation written without --force (bytes; K, M, G suffixes).
    #[arg(long = "max-size", value_name = "BYTES", value_parser = parse_size, default_value = "4G")]
    max_size: u64,
    /// Write allocations larger than --max-size.
    #[arg(long)]
    force: bool,
    /// Write the readable data even where a damaged range may have held some of it.
    #[arg(long = "allow-damage")]
    allow_damage: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().and_then(|n| n.checked_mul(mul)).ok_or_else(|| format!("not a size: {s:?}"))
}

/// Bytes free for an unprivileged writer on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// A submit number given on the command line must be one the trace has (0: before the first).
pub(super) fn check_submit(file: &Path, flag: &str, n: u64, last: u64) -> Result<(), CliError> {
    if n <= last {
        return Ok(());
    }
    let has = match last {
        0 => "no submits".to_string(),
        1 => "submit 1 only".to_string(),
        k => format!("submits 1 to {k}"),
    };
    Err(CliError::Msg(format!(
        "{}: {flag} {n} is past the last submit; the trace has {has} (0 is before the first)",
        file.display()
    )))
}

/// `ids 1-4, 7` (ranges of consecutive ids), or `no allocations`.
pub(super) fn id_list(ids: impl Iterator<Item = u64>) -> String {
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
    let parts: Vec<String> =
        runs.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
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
        let mut r = TraceReader::open(&self.file)?.salvage(true);
        let len = std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0);
        let mut progress = Progress::new(len, "replaying");
        let mut checker = Checker::new();
        checker.follow(&mut r, |b, ok| {
            progress.set(b.offset + b.file_len());
            match (&b.event, ok) {
                (Some(ev), true) => replay.apply(ev, b.offset),
                _ => Ok(()),
            }
        })?;
        drop(progress);
        let name = self.file.display();
        if let Some(p) = checker.problems().iter().find(|p| p.alloc == Some(self.alloc)) {
            return Err(CliError::Msg(format!("{name}: allocation {}: {p}", self.alloc)));
        }
        let Some(size) = replay.size(self.alloc) else {
            let lost = checker.impacts().iter().any(|i| i.allocations.contains(&self.alloc));
            let why = if lost { "; its allocation record may be in a damaged range" } else { "" };
            return Err(CliError::Msg(format!(
                "{name}: no allocation {} in the trace (it has {}){why}",
                self.alloc,
                id_list(replay.recorded_allocations())
            )));
        };
        // A damaged trace may have lost submit records: then the number is taken as given.
        if let Some(n) = self.at_submit.filter(|_| checker.impacts().is_empty()) {
            check_submit(&self.file, "--at-submit", n, replay.last_submit())?;
        }
        let affecting = checker.affecting(self.alloc, self.at_submit);
        if let Some(i) = affecting.first() {
            let msg = format!(
                "allocation {} as of {} may be incomplete: {}; {}; its contents up to submit {} are intact",
                self.alloc,
                self.at_submit.map_or("the end".to_string(), |n| format!("submit {n}")),
                i.damage,
                impact_line(i),
                i.intact_through
            );
            if !self.allow_damage {
                return Err(CliError::Msg(format!(
                    "{name}: {msg} (use --at-submit {} or --allow-damage)",
                    i.intact_through
                )));
            }
            warn(msg);
        }
        let others = checker.impacts().len() - affecting.len();
        if others > 0 {
            warn(format_args!(
                "{name}: {others} damaged range(s) elsewhere do not affect allocation {} at this submit",
                self.alloc
            ));
        }
        if let Some(t) = r.truncation() {
            warn(t);
        }
        if size > self.max_size && !self.force {
            return Err(CliError::Msg(format!(
                "allocation {} is {} ({size} bytes), above --max-size {}; use --force to write it",
                self.alloc,
                human_bytes(size),
                human_bytes(self.max_size)
            )));
        }
        let needed = replay.written_bytes(self.alloc).unwrap_or(0);
        let dir = match output.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if let Some(free) = free_bytes(&dir) {
            if free < needed {
                return Err(CliError::Msg(format!(
                    "{} has {} free, writing allocation {} needs {}",
                    dir.display(),
                    human_bytes(free),
                    self.alloc,
                    human_bytes(needed)
                )));
            }
        }
        let ctx = || format!("writing {}", output.display());
        // Non-blocking: a FIFO at the name must not hang; the output must be a regular file.
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NONBLOCK)
            .open(&output)
            .map_err(|e| CliError::io(ctx(), e))?;
        if !f.metadata().map_err(|e| CliError::io(ctx(), e))?.is_file() {
            return Err(CliError::Msg(format!("{}: not a regular file", output.display())));
        }
        f.set_len(0).map_err(|e| CliError::io(ctx(), e))?;
        replay.write_sparse(self.alloc, &mut f).and_then(|_| f.flush()).map_err(|e| CliError::io(ctx(), e))?;
        let at = self.at_submit.map_or("the end".to_string(), |n| format!("submit {n}"));
        out(|o| writeln!(o, "wrote {size} bytes of allocation {} as of {at} to {}", self.alloc, output.display()))?;
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

    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("4G"), Ok(4 << 30));
        assert_eq!(super::parse_size("10k"), Ok(10 << 10));
        assert_eq!(super::parse_size("123"), Ok(123));
        assert!(super::parse_size("x").is_err() && super::parse_size("99999999999G").is_err());
    }
}
