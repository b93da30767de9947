//! `vkdirty capture [OPTIONS] [-- APP ARGS...]`: runs an application under the layer, with every
//! setting as a flag (made from the settings table), a progress line on a terminal, and an
//! optional timed trigger; then prints `vkdirty info` of its trace.

use std::ffi::{OsStr, OsString};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vkdirty::config::LAYER_NAME;

use super::{warn, CliError, Run};

mod flags;
mod progress;

pub use flags::SettingFlags;

const MANIFEST: &str = "VkLayer_vkdirty.json";
const LIBRARY: &str = "libVkLayer_vkdirty.so";
const WORKLOAD: &str = "vkdirty-workload";

#[derive(clap::Args)]
#[command(after_help = "Settings given here are passed to the layer as VKDIRTY_<NAME> variables, so they win over \
    every other place a setting can come from (see README, Settings).")]
pub struct Args {
    /// The trace file [default: vkdirty_<app>_<UTC time>.vkd in the working directory; with
    /// --gfxr, vkdirty's own trace is written only when this (or TRACE_FILE) names one].
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace the output file if it exists (without this, an existing file is an error).
    #[arg(long)]
    force: bool,
    /// Directory holding libVkLayer_vkdirty.so and VkLayer_vkdirty.json [default: $VKDIRTY_LAYER_DIR,
    /// else the directory of this program].
    #[arg(long, value_name = "DIR")]
    layer_dir: Option<PathBuf>,
    /// Start capturing this many seconds after the application starts (through a trigger file:
    /// --trigger-file, or a temporary one). Until then only tracking runs and nothing is written.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    trigger_after: Option<f64>,
    /// With --trigger-after: stop capturing this many seconds after it started.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, requires = "trigger_after")]
    trigger_for: Option<f64>,
    /// Also write a replayable gfxreconstruct capture here: gfxreconstruct runs below vkdirty,
    /// which hands it the dirty pages (see README, "Replayable captures with gfxreconstruct").
    #[arg(long, value_name = "FILE")]
    gfxr: Option<PathBuf>,
    /// With --gfxr: do not write vkdirty's own trace even where -o names one (without -o none is
    /// written).
    #[arg(long, requires = "gfxr")]
    no_trace: bool,
    /// No progress line, even on a terminal.
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    settings: SettingFlags,
    /// The application and its arguments [default: the built-in workload].
    #[arg(last = true, value_name = "APP ARGS")]
    app: Vec<OsString>,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=1e6).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds (0 to 1000000, e.g. 2.5)")),
    }
}

fn exe_dir() -> Result<PathBuf, CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::io("finding the vkdirty program", e))?;
    Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// The layer directory: `--layer-dir`, `$VKDIRTY_LAYER_DIR`, or beside this program.
fn layer_dir(arg: Option<PathBuf>) -> Result<PathBuf, CliError> {
    let (dir, from) = match (arg, std::env::var_os("VKDIRTY_LAYER_DIR")) {
        (Some(d), _) => (d, "--layer-dir"),
        (None, Some(d)) if !d.is_empty() => (PathBuf::from(d), "VKDIRTY_LAYER_DIR"),
        _ => (exe_dir()?, "the directory of vkdirty"),
    };
    for f in [MANIFEST, LIBRARY] {
        if !dir.join(f).is_file() {
            return Err(CliError::Msg(format!(
                "{} ({from}) has no {f}; build the layer (cargo build -p vkdirty-layer) or pass --layer-dir",
                dir.display()
            )));
        }
    }
    std::fs::canonicalize(&dir).map_err(|e| CliError::io(format!("resolving {}", dir.display()), e))
}

/// `new:old` for a colon-separated variable, without duplicating `new`.
fn prepend(new: &OsStr, old: Option<OsString>) -> OsString {
    let mut v = OsString::from(new);
    if let Some(old) = old.filter(|o| !o.is_empty()) {
        let already = old.to_string_lossy().split(':').any(|p| OsStr::new(p) == new);
        if already {
            return old;
        }
        v.push(":");
        v.push(old);
    }
    v
}

/// `YYYYmmddTHHMMSSZ` (UTC) for `secs` since the Unix epoch.
fn utc_stamp(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// `vkdirty_<app>_<UTC time>.vkd`; `-2`, `-3`... when that exists already.
fn default_output(app: &Path, dir: &Path, now_secs: u64) -> PathBuf {
    let name = app.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
    let stem = format!("vkdirty_{clean}_{}", utc_stamp(now_secs));
    let mut p = dir.join(format!("{stem}.vkd"));
    let mut n = 2;
    while p.exists() {
        p = dir.join(format!("{stem}-{n}.vkd"));
        n += 1;
    }
    p
}

/// The exit code the shell would report for the application's status.
pub(super) fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        _ => 1,
    }
}

/// Creates and removes the trigger file of `--trigger-after`/`--trigger-for` on time.
struct Trigger {
    path: PathBuf,
    on_at: Duration,
    off_at: Option<Duration>,
    /// Whether the launcher chose the path (then it removes it at the end).
    temporary: bool,
    state: u8,
}

impl Trigger {
    fn tick(&mut self, elapsed: Duration) -> Result<(), CliError> {
        if self.state == 0 && elapsed >= self.on_at {
            std::fs::write(&self.path, b"")
                .map_err(|e| CliError::io(format!("creating the trigger file {}", self.path.display()), e))?;
            self.state = 1;
        }
        if self.state == 1 && self.off_at.is_some_and(|t| elapsed >= t) {
            remove_if_there(&self.path)?;
            self.state = 2;
        }
        Ok(())
    }
}

fn remove_if_there(p: &Path) -> Result<(), CliError> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CliError::io(format!("removing {}", p.display()), e)),
        _ => Ok(()),
    }
}

impl Run for Args {
    fn run(self) -> Result<ExitCode, CliError> {
        let layer_dir = layer_dir(self.layer_dir)?;
        let (program, app_args) = match self.app.split_first() {
            Some((p, rest)) => (PathBuf::from(p), rest.to_vec()),
            None => {
                let w = exe_dir()?.join(WORKLOAD);
                if !w.is_file() {
                    return Err(CliError::Msg(format!(
                        "no application given and the built-in workload {} is missing; build it \
                         (cargo build -p vkdirty-workload) or name an application after --",
                        w.display()
                    )));
                }
                (w, Vec::new())
            }
        };
        let cwd = std::env::current_dir().map_err(|e| CliError::io("reading the working directory", e))?;
        let named = self.output.or_else(|| self.settings.get("TRACE_FILE").map(PathBuf::from));
        // With --gfxr the capture is gfxreconstruct's: a second trace costs the application
        // (up to as much again as the capture, docs/benchmarks.md) and is written only when asked.
        let write_trace = named.is_some() || self.gfxr.is_none();
        let output = match named {
            Some(o) => {
                let o = cwd.join(o);
                if o.is_dir() {
                    return Err(CliError::Msg(format!("{} is a directory; name a file with -o", o.display())));
                }
                if o.exists() {
                    if !self.force {
                        return Err(CliError::Msg(format!(
                            "{} exists; pass --force to replace it, or name another file with -o",
                            o.display()
                        )));
                    }
                    // A stale trace must not be summarised as this run's.
                    remove_if_there(&o)?;
                }
                o
            }
            None => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                default_output(&program, &cwd, now)
            }
        };

        let mut trigger = match self.trigger_after {
            None => None,
            Some(after) => {
                let (path, temporary) = match self.settings.get("TRIGGER_FILE") {
                    Some(p) => (cwd.join(p), false),
                    None => (std::env::temp_dir().join(format!("vkdirty-trigger-{}", std::process::id())), true),
                };
                remove_if_there(&path)?;
                Some(Trigger {
                    path,
                    on_at: Duration::from_secs_f64(after),
                    off_at: self.trigger_for.map(|d| Duration::from_secs_f64(after + d)),
                    temporary,
                    state: 0,
                })
            }
        };

        let mut cmd = Command::new(&program);
        cmd.args(&app_args);
        // VK_LAYER_PATH, when set, makes the loader ignore VK_ADD_LAYER_PATH: extend whichever rules.
        let path_var = if std::env::var_os("VK_LAYER_PATH").is_some_and(|v| !v.is_empty()) {
            "VK_LAYER_PATH"
        } else {
            "VK_ADD_LAYER_PATH"
        };
        cmd.env(path_var, prepend(layer_dir.as_os_str(), std::env::var_os(path_var)));
        cmd.env("VK_INSTANCE_LAYERS", prepend(OsStr::new(LAYER_NAME), std::env::var_os("VK_INSTANCE_LAYERS")));
        for (name, value) in &self.settings.values {
            cmd.env(format!("VKDIRTY_{name}"), value);
        }
        cmd.env("VKDIRTY_TRACE_FILE", &output);
        if let Some(t) = &trigger {
            cmd.env("VKDIRTY_TRIGGER_FILE", &t.path);
        }
        if let Some(gfxr) = &self.gfxr {
            let trace = (write_trace && !self.no_trace).then_some(output.as_path());
            return super::capture_gfxr::run(cmd, &program, gfxr, trace);
        }
        let mut child = cmd.spawn().map_err(|e| CliError::io(format!("starting {}", program.display()), e))?;

        let show = !self.no_progress && std::io::stderr().is_terminal();
        let mut follow = progress::Follower::new(output.clone());
        let start = Instant::now();
        let mut last_line = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => return Err(CliError::io(format!("waiting for {}", program.display()), e)),
            }
            if let Some(t) = trigger.as_mut() {
                if let Err(e) = t.tick(start.elapsed()) {
                    warn(e);
                    trigger = None;
                }
            }
            if show && last_line.elapsed() >= Duration::from_millis(500) {
                last_line = Instant::now();
                let _ = write!(std::io::stderr(), "\rvkdirty: {}\x1b[K", progress::line(follow.poll()));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if show {
            let _ = writeln!(std::io::stderr(), "\rvkdirty: {}\x1b[K", progress::line(follow.poll()));
        }
        if let Some(t) = trigger.filter(|t| t.temporary) {
            let _ = remove_if_there(&t.path);
        }
        let code = exit_code(status);
        if !status.success() {
            warn(format_args!("{} exited with {status}", program.display()));
        }

        if output.is_file() {
            let exe = std::env::current_exe().map_err(|e| CliError::io("finding the vkdirty program", e))?;
            match Command::new(exe).arg("info").arg(&output).status() {
                Ok(s) if s.success() => {}
                Ok(s) => warn(format_args!("vkdirty info {} failed ({s})", output.display())),
                Err(e) => warn(format_args!("running vkdirty info: {e}")),
            }
        } else {
            warn(format_args!(
                "no trace was written to {} (the application created no Vulkan device, or the \
                 loader did not load the layer: check VK_LOADER_DEBUG=layer)",
                output.display()
            ));
        }
        // Other processes of the run that loaded the layer (children, a display server) got
        // the next free names.
        let others: Vec<String> = (2..)
            .map(|n| vkdirty::trace::file::numbered(&output, n))
            .take_while(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !others.is_empty() {
            warn(format_args!("other processes of the run wrote {}", others.join(", ")));
        }
        Ok(ExitCode::from(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_keeps_existing_entries_once() {
        assert_eq!(prepend(OsStr::new("/a"), None), OsString::from("/a"));
        assert_eq!(prepend(OsStr::new("/a"), Some("".into())), OsString::from("/a"));
        assert_eq!(prepend(OsStr::new("/a"), Some("/b:/c".into())), OsString::from("/a:/b:/c"));
        assert_eq!(prepend(OsStr::new("/a"), Some("/b:/a".into())), OsString::from("/b:/a"));
    }

    #[test]
    fn default_output_names_the_app_and_time_and_never_an_existing_file() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(1_795_000_000), "20261118T110640Z");
        let dir = std::env::temp_dir().join(format!("vkdirty-default-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = default_output(Path::new("/usr/bin/vk cube"), &dir, 0);
        assert_eq!(first, dir.join("vkdirty_vk_cube_19700101T000000Z.vkd"));
        std::fs::write(&first, b"x").unwrap();
        assert_eq!(default_output(Path::new("vk cube"), &dir, 0), dir.join("vkdirty_vk_cube_19700101T000000Z-2.vkd"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("1.5"), Ok(1.5));
        assert!(parse_seconds("-1").is_err() && parse_seconds("soon").is_err() && parse_seconds("inf").is_err());
    }
}
