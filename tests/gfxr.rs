//! gfxreconstruct and vkdirty together (needs the `gfxreconstruct`, `vulkan-tools` and `xvfb`
//! packages, which scripts/test.sh installs):
//! - `vkdirty capture --gfxr` of the workload on every backend auto can pick with gfxreconstruct
//!   below: the memory state the capture's fill-memory commands imply at every submit equals the
//!   workload's ground truth (`vkdirty check-sidecar` on the `.gfxr`), and the capture replays;
//! - the same without vkdirty's flushes is not exact (the check can fail);
//! - vkdirty's flushes are validation-clean on mappings at offsets between two atoms;
//! - host-import stays off with gfxreconstruct below, with one log line naming it, unless
//!   `VKDIRTY_LAYERS_BELOW=ignore`;
//! - without gfxreconstruct's layer, `capture --gfxr` fails with a clear error;
//! - `capture --gfxr` writes vkdirty's own trace only where `-o` names one;
//! - scripts/gfxr-check.sh on a few vkcube frames (the script runs 300): screenshots of every
//!   replay identical to a plain page_guard capture's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

#[path = "common/run.rs"]
mod run;

/// The layer and the workload built (`run::ensure_built`), and the tools these tests run.
fn ensure_built() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = run::ensure_built().clone();
        for tool in ["gfxrecon-replay", "vkcube", "xvfb-run"] {
            let found =
                Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().map(|o| o.status.success());
            assert_eq!(
                found.ok(),
                Some(true),
                "{tool} is missing: scripts/test.sh installs gfxreconstruct, vulkan-tools, xvfb"
            );
        }
        dir
    })
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    dir.join(format!("gfxr-{}-{name}", std::process::id()))
}

/// A command without the caller's vkdirty, gfxreconstruct and layer variables.
fn clean(program: &Path) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("VKDIRTY_")
            || k.starts_with("GFXRECON_")
            || k == "VK_INSTANCE_LAYERS"
            || k == "VK_LOADER_DEBUG"
        {
            c.env_remove(k);
        }
    }
    c
}

/// `vkdirty capture --gfxr` of the workload; returns the capture, the sidecar and the output.
fn capture(name: &str, env: &[(&str, &str)], extra: &[&str]) -> (PathBuf, PathBuf, Output) {
    capture_workload(name, env, extra, &[])
}

/// [`capture`] with more workload arguments.
fn capture_workload(name: &str, env: &[(&str, &str)], extra: &[&str], args: &[&str]) -> (PathBuf, PathBuf, Output) {
    let dir = ensure_built();
    let (gfxr, sidecar) = (tmp(&format!("{name}.gfxr")), tmp(&format!("{name}.side")));
    let o = clean(&dir.join("vkdirty"))
        .envs(env.iter().copied())
        .args(["capture", "--no-trace", "--gfxr"])
        .arg(&gfxr)
        .args(extra)
        .arg("--")
        .arg(dir.join("vkdirty-workload"))
        .args(["--frames", "5", "--sidecar"])
        .arg(&sidecar)
        .args(args)
        .output()
        .expect("run vkdirty capture");
    (gfxr, sidecar, o)
}

fn check(gfxr: &Path, sidecar: &Path) -> Output {
    clean(&ensure_built().join("vkdirty"))
        .arg("check-sidecar")
        .arg(gfxr)
        .arg(sidecar)
        .output()
        .expect("run check-sidecar")
}

fn replay(gfxr: &Path) -> Output {
    clean(Path::new("xvfb-run")).args(["-a", "gfxrecon-replay"]).arg(gfxr).output().expect("run gfxrecon-replay")
}

#[test]
fn workload_captures_are_exact_on_every_backend_and_replay() {
    for backend in ["auto", "async-wp", "shadow-wp", "shadow", "full"] {
        let (gfxr, sidecar, o) = capture(&format!("exact-{backend}"), &[], &["--backend", backend]);
        assert!(o.status.success(), "{backend}: {}", run::output_text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("fill-memory commands holding"),
            "{backend}: no capture summary\n{}",
            run::output_text(&o)
        );
        let c = check(&gfxr, &sidecar);
        let report = String::from_utf8_lossy(&c.stdout);
        assert!(c.status.success() && report.starts_with("exact:"), "{backend}: {}", run::output_text(&c));
        let r = replay(&gfxr);
        let log = run::output_text(&r);
        assert!(r.status.success() && !log.contains("ERROR"), "{backend}: replay\n{log}");
        for p in [gfxr, sidecar] {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The application submits with `vkQueueSubmit2KHR` by that name (workload `--khr-names`):
/// vkdirty's alias entry point flushes before it as before `vkQueueSubmit`, gfxreconstruct
/// records the KHR call, the reader counts it as a submit, and the capture is exact and replays.
#[test]
fn khr_submits_are_flushed_and_read() {
    let (gfxr, sidecar, o) = capture_workload("khr", &[], &["--backend", "async-wp"], &["--khr-names"]);
    let out = run::output_text(&o);
    assert!(o.status.success() && out.contains("khr names: vkQueueSubmit2KHR 3 calls"), "{out}");
    let c = check(&gfxr, &sidecar);
    let report = String::from_utf8_lossy(&c.stdout);
    assert!(c.status.success() && report.starts_with("exact: 6 submits"), "{}", run::output_text(&c));
    let r = replay(&gfxr);
    let log = run::output_text(&r);
    assert!(r.status.success() && !log.contains("ERROR"), "replay\n{log}");
    for p in [gfxr, sidecar] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn vkdirty_own_trace_is_written_only_when_named() {
    // In a fresh working directory: without -o, only the .gfxr (no vkdirty_<app>_<time>.vkd);
    // with -o, the trace too, exact against the same sidecar.
    let dir = ensure_built();
    let cwd = tmp("own-trace");
    let _ = std::fs::remove_dir_all(&cwd);
    std::fs::create_dir_all(&cwd).expect("temporary directory");
    let run = |extra: &[&str]| {
        clean(&dir.join("vkdirty"))
            .current_dir(&cwd)
            .args(["capture", "--backend", "async-wp"])
            .args(extra)
            .args(["--gfxr", "c.gfxr", "--"])
            .arg(dir.join("vkdirty-workload"))
            .args(["--frames", "3", "--sidecar", "w.side"])
            .output()
            .expect("run vkdirty capture")
    };
    let o = run(&[]);
    assert!(o.status.success(), "{}", run::output_text(&o));
    let listing = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(listing(&cwd), ["c.gfxr", "w.side"], "{}", run::output_text(&o));
    let o = run(&["-o", "own.vkd"]);
    assert!(o.status.success(), "{}", run::output_text(&o));
    assert_eq!(listing(&cwd), ["c.gfxr", "own.vkd", "w.side"], "{}", run::output_text(&o));
    for f in ["c.gfxr", "own.vkd"] {
        let c = check(&cwd.join(f), &cwd.join("w.side"));
        let report = String::from_utf8_lossy(&c.stdout);
        assert!(c.status.success() && report.starts_with("exact:"), "{f}: {}", run::output_text(&c));
    }
    let _ = std::fs::remove_dir_all(&cwd);
}

#[test]
fn zstd_and_uncompressed_captures_are_read_too() {
    for (kind, name) in [("ZSTD", "zstd"), ("NONE", "none")] {
        let (gfxr, sidecar, o) =
            capture(&format!("compression-{name}"), &[("GFXRECON_CAPTURE_COMPRESSION_TYPE", kind)], &[]);
        assert!(o.status.success(), "{kind}: {}", run::output_text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(&format!("({name} compression)")),
            "{kind}: {}",
            run::output_text(&o)
        );
        let c = check(&gfxr, &sidecar);
        assert!(
            c.status.success() && String::from_utf8_lossy(&c.stdout).starts_with("exact:"),
            "{kind}: {}",
            run::output_text(&c)
        );
    }
}

/// vkdirty's flushes are valid also for mappings that start or end between two
/// `nonCoherentAtomSize` multiples (the workload's `unaligned` and `offset` scenarios map at
/// such offsets): with the validation layer below gfxreconstruct (checked in the loader's log),
/// the workload sees no validation message (before, `VUID-VkMappedMemoryRange-offset-00687` and
/// `size-01390`), and the capture is exact.
#[test]
fn flushes_are_validation_clean_on_unaligned_mappings() {
    let dir = ensure_built();
    if run::need_validation("flushes_are_validation_clean_on_unaligned_mappings").is_none() {
        return;
    }
    for backend in ["async-wp", "shadow-wp", "shadow", "full"] {
        let (gfxr, sidecar) = (tmp(&format!("valid-{backend}.gfxr")), tmp(&format!("valid-{backend}.side")));
        let _ = std::fs::remove_file(&gfxr);
        let o = clean(&dir.join("vkdirty-workload"))
            .env("VK_ADD_LAYER_PATH", run::layer_path(dir))
            .env(
                "VK_INSTANCE_LAYERS",
                "VK_LAYER_VKDIRTY_capture:VK_LAYER_LUNARG_gfxreconstruct:VK_LAYER_KHRONOS_validation",
            )
            .env("VK_LOADER_DEBUG", "layer")
            .env("GFXRECON_CAPTURE_FILE", &gfxr)
            .env("GFXRECON_CAPTURE_FILE_TIMESTAMP", "false")
            .env("GFXRECON_MEMORY_TRACKING_MODE", "assisted")
            .env("GFXRECON_CAPTURE_COMPRESSION_TYPE", "LZ4")
            .env("VKDIRTY_GFXR_FLUSH", "1")
            .env("VKDIRTY_WRITE_TRACE", "0")
            .env("VKDIRTY_BACKEND", backend)
            .args(["--frames", "3", "--scenario", "unaligned,offset,persistent", "--validation", "--sidecar"])
            .arg(&sidecar)
            .output()
            .expect("run the workload");
        let err = String::from_utf8_lossy(&o.stderr);
        let order: Vec<&str> = err
            .lines()
            .filter_map(|l| {
                l.split_once("Insert instance layer \"").and_then(|(_, r)| r.split_once('"')).map(|(n, _)| n)
            })
            .collect();
        let pos = |n: &str| order.iter().position(|l| *l == n).unwrap_or_else(|| panic!("{n} not loaded: {order:?}"));
        assert!(
            pos("VK_LAYER_KHRONOS_validation") < pos("VK_LAYER_LUNARG_gfxreconstruct")
                && pos("VK_LAYER_LUNARG_gfxreconstruct") < pos("VK_LAYER_VKDIRTY_capture"),
            "validation below gfxreconstruct below vkdirty (driver first): {order:?}"
        );
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("no validation message"),
            "{backend}: {}",
            run::output_text(&o)
        );
        let c = check(&gfxr, &sidecar);
        assert!(
            c.status.success() && String::from_utf8_lossy(&c.stdout).starts_with("exact:"),
            "{backend}: {}",
            run::output_text(&c)
        );
        for p in [gfxr, sidecar] {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
fn assisted_without_vkdirty_flushes_is_not_exact() {
    let dir = ensure_built();
    let (gfxr, sidecar) = (tmp("noflush.gfxr"), tmp("noflush.side"));
    let o = clean(&dir.join("vkdirty-workload"))
        .env("VK_INSTANCE_LAYERS", "VK_LAYER_LUNARG_gfxreconstruct")
        .env("GFXRECON_CAPTURE_FILE", &gfxr)
        .env("GFXRECON_CAPTURE_FILE_TIMESTAMP", "false")
        .env("GFXRECON_MEMORY_TRACKING_MODE", "assisted")
        .args(["--frames", "3", "--sidecar"])
        .arg(&sidecar)
        .output()
        .expect("run the workload");
    assert!(o.status.success(), "{}", run::output_text(&o));
    let c = check(&gfxr, &sidecar);
    assert!(
        !c.status.success() && String::from_utf8_lossy(&c.stdout).starts_with("NOT exact"),
        "{}",
        run::output_text(&c)
    );
}

#[test]
fn host_import_stays_off_with_gfxreconstruct_below_unless_ignored() {
    let (_, _, o) = capture("below", &[], &["--backend", "auto"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{}", run::output_text(&o));
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("capture layer VK_LAYER_LUNARG_gfxreconstruct")).collect();
    assert_eq!(lines.len(), 1, "one line naming the layer below:\n{err}");
    assert!(!err.contains("host-import on "), "{err}");
    let (_, _, o) = capture("ignore", &[("VKDIRTY_LAYERS_BELOW", "ignore")], &["--backend", "auto"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("capture layer VK_LAYER_LUNARG_gfxreconstruct") && err.contains("host-import on "),
        "{}",
        run::output_text(&o)
    );
}

#[test]
fn capture_without_gfxreconstruct_is_a_clear_error() {
    // VK_LAYER_PATH replaces the system layer directories: gfxreconstruct's manifest is not found.
    let empty = tmp("no-layers");
    std::fs::create_dir_all(&empty).unwrap();
    let (_, _, o) = capture("missing", &[("VK_LAYER_PATH", empty.to_str().unwrap())], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("did not load VK_LAYER_LUNARG_gfxreconstruct"),
        "{}",
        run::output_text(&o)
    );
}

#[test]
fn vkcube_replays_are_pixel_identical() {
    let dir = ensure_built();
    let o = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gfxr-check.sh"))
        .arg("10")
        .env("VKDIRTY_BIN_DIR", dir)
        .output()
        .expect("run scripts/gfxr-check.sh");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && !out.contains("FAIL") && out.matches("PASS").count() == 13,
        "{}",
        run::output_text(&o)
    );
}
