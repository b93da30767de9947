//! `vkdirty capture --gfxr FILE -- APP`: a replayable gfxreconstruct capture whose memory data
//! comes from vkdirty. gfxreconstruct runs below vkdirty in assisted mode (it records the bytes
//! of every `vkFlushMappedMemoryRanges`) and vkdirty flushes exactly the dirty pages of every
//! mapping down to it (`VKDIRTY_GFXR_FLUSH=1`). The loader's own account of the layer order
//! (`VK_LOADER_DEBUG=layer`) is checked afterwards: the order of `VK_INSTANCE_LAYERS` is not
//! what decides it.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use super::{warn, CliError};

pub const GFXR_LAYER: &str = "VK_LAYER_LUNARG_gfxreconstruct";

/// The instance layers the loader inserted, in the order of its log: nearest the driver first.
pub fn inserted_layers(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once("Insert instance layer \"").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once('"').map(|(name, _)| name.to_string()))
        .collect()
}

/// Whether `layer` sits below `above` in the loader's insertion order (nearest the driver first).
pub fn is_below(order: &[String], layer: &str, above: &str) -> Result<(), String> {
    let pos = |n: &str| order.iter().position(|l| l == n);
    match (pos(layer), pos(above)) {
        (None, _) => Err(format!(
            "the loader did not load {layer} (is gfxreconstruct installed, and its manifest in a layer \
             directory the loader searches?); loaded: {}",
            if order.is_empty() { "none".into() } else { order.join(", ") }
        )),
        (_, None) => Err(format!("the loader did not load {above}; loaded: {}", order.join(", "))),
        (Some(a), Some(b)) if a < b => Ok(()),
        _ => Err(format!(
            "{layer} was loaded above {above} (loader order, driver first: {}): its capture holds no \
             memory data from vkdirty; put gfxreconstruct's manifest in a system layer directory and \
             vkdirty's in VK_ADD_LAYER_PATH",
            order.join(", ")
        )),
    }
}

/// Whether a line of the application's stderr is the loader's debug output.
fn loader_line(l: &str) -> bool {
    let t = l.trim_start();
    t.starts_with("LAYER:")
        || t.split_once(" | ").is_some_and(|(lvl, rest)| {
            lvl.chars().all(|c| c.is_ascii_uppercase()) && rest.trim_start().starts_with("LAYER:")
        })
}

/// Sets gfxreconstruct's and vkdirty's variables on `cmd`, runs it, checks the layer order and
/// prints the capture's summary (and the trace's, when `trace` is written).
pub fn run(mut cmd: Command, program: &Path, gfxr: &Path, trace: Option<&Path>) -> Result<ExitCode, CliError> {
    let gfxr = if gfxr.is_absolute() {
        gfxr.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| CliError::io("reading the working directory", e))?.join(gfxr)
    };
    match std::fs::remove_file(&gfxr) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(CliError::io(format!("removing the old {}", gfxr.display()), e))
        }
        _ => {}
    }
    let user_debug = std::env::var_os("VK_LOADER_DEBUG").filter(|v| !v.is_empty());
    let mut debug = OsString::from("layer");
    if let Some(d) = &user_debug {
        debug.push(",");
        debug.push(d);
    }
    cmd.env("VK_INSTANCE_LAYERS", format!("VK_LAYER_VKDIRTY_capture:{GFXR_LAYER}"))
        .env("VK_LOADER_DEBUG", debug)
        .env("GFXRECON_CAPTURE_FILE", &gfxr)
        .env("GFXRECON_CAPTURE_FILE_TIMESTAMP", "false")
        .env("GFXRECON_MEMORY_TRACKING_MODE", "assisted")
        .env("VKDIRTY_GFXR_FLUSH", "1")
        .env("VKDIRTY_WRITE_TRACE", if trace.is_some() { "1" } else { "0" })
        .stderr(Stdio::piped());
    // LZ4 unless the user chose (vkdirty's reader decodes LZ4, zstd, zlib and none).
    if std::env::var_os("GFXRECON_CAPTURE_COMPRESSION_TYPE").is_none() {
        cmd.env("GFXRECON_CAPTURE_COMPRESSION_TYPE", "LZ4");
    }
    if std::env::var_os("GFXRECON_LOG_LEVEL").is_none() {
        cmd.env("GFXRECON_LOG_LEVEL", "warning");
    }
    let mut child = cmd.spawn().map_err(|e| CliError::io(format!("starting {}", program.display()), e))?;
    // The application's stderr passes through; the loader's layer lines are kept for the check.
    let mut loader_log = String::new();
    if let Some(err) = child.stderr.take() {
        let mut out = std::io::stderr();
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if loader_line(&line) {
                loader_log.push_str(&line);
                loader_log.push('\n');
                if user_debug.is_none() {
                    continue;
                }
            }
            let _ = writeln!(out, "{line}");
        }
    }
    let status = child.wait().map_err(|e| CliError::io(format!("waiting for {}", program.display()), e))?;
    if !status.success() {
        warn(format_args!("{} exited with {status}", program.display()));
    }
    let order = inserted_layers(&loader_log);
    if let Err(why) = is_below(&order, GFXR_LAYER, "VK_LAYER_VKDIRTY_capture") {
        return Err(CliError::Msg(format!("gfxreconstruct capture {} is not usable: {why}", gfxr.display())));
    }
    if !gfxr.is_file() {
        return Err(CliError::Msg(format!("gfxreconstruct wrote no capture to {}", gfxr.display())));
    }
    let s = vkdirty::gfxr::summarize(&gfxr)?;
    super::out(|w| {
        writeln!(w, "gfxreconstruct capture {}: {} bytes, {} submits, {} fill-memory commands holding {} bytes ({} compression)",
            gfxr.display(), s.file_bytes, s.submits, s.fill_commands, s.fill_bytes, s.compression)?;
        writeln!(w, "replay it with: gfxrecon-replay {}", gfxr.display())
    })?;
    if let Some(trace) = trace {
        let exe = std::env::current_exe().map_err(|e| CliError::io("finding the vkdirty program", e))?;
        match Command::new(exe).arg("info").arg(trace).status() {
            Ok(s) if s.success() => {}
            Ok(s) => warn(format_args!("vkdirty info {} failed ({s})", trace.display())),
            Err(e) => warn(format_args!("running vkdirty info: {e}")),
        }
    }
    Ok(ExitCode::from(super::capture::exit_code(status)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
WARNING | LAYER:  env var 'VK_INSTANCE_LAYERS' defined and adding layers \"VK_LAYER_VKDIRTY_capture:VK_LAYER_LUNARG_gfxreconstruct\"
DEBUG | LAYER:    Loading layer library libVkLayer_gfxreconstruct.so
INFO | LAYER:     Insert instance layer \"VK_LAYER_LUNARG_gfxreconstruct\" (libVkLayer_gfxreconstruct.so)
INFO | LAYER:     Insert instance layer \"VK_LAYER_VKDIRTY_capture\" (/t/libVkLayer_vkdirty.so)
INFO | LAYER:     Insert instance layer \"VK_LAYER_MESA_device_select\" (libVkLayer_MESA_device_select.so)
";

    #[test]
    fn the_loader_log_gives_the_order() {
        let order = inserted_layers(LOG);
        assert_eq!(
            order,
            ["VK_LAYER_LUNARG_gfxreconstruct", "VK_LAYER_VKDIRTY_capture", "VK_LAYER_MESA_device_select"]
        );
        assert!(is_below(&order, GFXR_LAYER, "VK_LAYER_VKDIRTY_capture").is_ok());
        let rev: Vec<String> = order.iter().rev().cloned().collect();
        assert!(is_below(&rev, GFXR_LAYER, "VK_LAYER_VKDIRTY_capture").unwrap_err().contains("loaded above"));
        assert!(is_below(&order[1..], GFXR_LAYER, "VK_LAYER_VKDIRTY_capture").unwrap_err().contains("did not load"));
    }

    #[test]
    fn loader_lines_are_told_from_the_application_s() {
        assert!(LOG.lines().all(loader_line));
        assert!(loader_line("LAYER:               VK_LAYER_VKDIRTY_capture"));
        assert!(!loader_line("vkdirty: info: capturing to x"));
        assert!(!loader_line("[gfxrecon] INFO - Recording"));
        assert!(!loader_line("a | LAYER: b"));
    }
}
