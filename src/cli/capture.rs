//! `vkdirty capture [-o FILE] [--backend B] [--layer-dir DIR] [-- APP ARGS...]`: runs an
//! application under the layer, then prints `vkdirty info` of its trace.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use vkdirty::config::BackendChoice;

use super::{warn, CliError, Run};

const LAYER_NAME: &str = "VK_LAYER_VKDIRTY_capture";
const MANIFEST: &str = "VkLayer_vkdirty.json";
const LIBRARY: &str = "libVkLayer_vkdirty.so";
const WORKLOAD: &str = "vkdirty-workload";

#[derive(clap::Args)]
pub struct Args {
    /// The trace file [default: vkdirty_<app>.vkd in the working directory].
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Backend: auto, async-wp, shadow-wp, shadow, full, assisted, host-import.
    #[arg(long, value_name = "B", value_parser = parse_backend)]
    backend: Option<BackendChoice>,
    /// Directory holding libVkLayer_vkdirty.so and VkLayer_vkdirty.json [default: $VKDIRTY_LAYER_DIR,
    /// else the directory of this program].
    #[arg(long, value_name = "DIR")]
    layer_dir: Option<PathBuf>,
    /// Also write a replayable gfxreconstruct capture here: gfxreconstruct runs below vkdirty,
    /// which hands it the dirty pages (see README, "Replayable captures with gfxreconstruct").
    #[arg(long, value_name = "FILE")]
    gfxr: Option<PathBuf>,
    /// With --gfxr: do not write vkdirty's own trace.
    #[arg(long, requires = "gfxr")]
    no_trace: bool,
    /// The application and its arguments [default: the built-in workload].
    #[arg(last = true, value_name = "APP ARGS")]
    app: Vec<OsString>,
}

fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    if s == "auto" {
        return Ok(BackendChoice::Auto);
    }
    vkdirty::guard::BackendKind::parse(s)
        .map(BackendChoice::Fixed)
        .ok_or_else(|| format!("unknown backend {s:?} (accepted: auto, async-wp, shadow-wp, shadow, full, assisted, host-import)"))
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

fn default_output(app: &Path) -> PathBuf {
    let name = app.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
    PathBuf::from(format!("vkdirty_{clean}.vkd"))
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
        let output = self.output.unwrap_or_else(|| default_output(&program));
        let output = if output.is_absolute() {
            output
        } else {
            std::env::current_dir().map_err(|e| CliError::io("reading the working directory", e))?.join(output)
        };
        // A stale trace must not be summarised as this run's.
        match std::fs::remove_file(&output) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(CliError::io(format!("removing the old {}", output.display()), e))
            }
            _ => {}
        }

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
        cmd.env("VKDIRTY_TRACE_FILE", &output);
        if let Some(b) = self.backend {
            cmd.env("VKDIRTY_BACKEND", b.to_string());
        }
        if let Some(gfxr) = &self.gfxr {
            let trace = (!self.no_trace).then_some(output.as_path());
            return super::capture_gfxr::run(cmd, &program, gfxr, trace);
        }
        let status = cmd
            .status()
            .map_err(|e| CliError::io(format!("starting {}", program.display()), e))?;
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
    fn backend_names() {
        assert_eq!(parse_backend("auto"), Ok(BackendChoice::Auto));
        assert_eq!(
            parse_backend("shadow"),
            Ok(BackendChoice::Fixed(vkdirty::guard::BackendKind::Shadow))
        );
        assert!(parse_backend("fast").unwrap_err().contains("accepted"));
    }

    #[test]
    fn default_output_names_the_app() {
        assert_eq!(default_output(Path::new("/usr/bin/vk cube")), PathBuf::from("vkdirty_vk_cube.vkd"));
    }
}
