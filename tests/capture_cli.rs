//! `vkdirty capture`: the loader variables and settings it sets, exit codes, and clear errors.
//! The last two run the built-in workload under the built layer on lavapipe.

#[path = "common/run.rs"]
mod run;

use std::path::PathBuf;
use std::process::Command;

fn vkdirty() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vkdirty"));
    c.env_remove("VK_LAYER_PATH").env_remove("VK_ADD_LAYER_PATH").env_remove("VK_INSTANCE_LAYERS");
    c.env_remove("VKDIRTY_LAYER_DIR").env_remove("VKDIRTY_BACKEND").env_remove("VKDIRTY_TRACE_FILE");
    c
}

/// A directory that looks like a built layer (the files are never loaded by these tests).
fn fake_layer_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vkdirty-capture-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("VkLayer_vkdirty.json"), "{}").unwrap();
    std::fs::write(d.join("libVkLayer_vkdirty.so"), "").unwrap();
    std::fs::canonicalize(d).unwrap()
}

#[test]
fn sets_loader_variables_and_propagates_the_exit_code() {
    let dir = fake_layer_dir("env");
    let trace = dir.join("out.vkd");
    std::fs::write(&trace, "stale").unwrap();
    // An existing trace is not replaced without --force.
    let out = vkdirty()
        .args(["capture", "-o"])
        .arg(&trace)
        .arg("--layer-dir")
        .arg(&dir)
        .args(["--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("exists; pass --force"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&trace).unwrap(), "stale");

    let out = vkdirty()
        .args(["capture", "--force", "--backend", "shadow", "--frames", "2-3", "--flush-every-submit"])
        .args(["--set", "log-level=debug", "--log-file", "/tmp/l.log", "-o"])
        .arg(&trace)
        .arg("--layer-dir")
        .arg(&dir)
        .args([
            "--",
            "sh",
            "-c",
            "echo \"$VK_ADD_LAYER_PATH|$VK_INSTANCE_LAYERS|$VKDIRTY_TRACE_FILE|$VKDIRTY_BACKEND\"; \
             echo \"$VKDIRTY_FRAMES|$VKDIRTY_FLUSH_EVERY_SUBMIT|$VKDIRTY_LOG_LEVEL|$VKDIRTY_LOG_FILE\"; exit 5",
        ])
        .env("VK_INSTANCE_LAYERS", "VK_LAYER_KHRONOS_validation")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "stderr: {stderr}");
    let want =
        format!("{}|VK_LAYER_VKDIRTY_capture:VK_LAYER_KHRONOS_validation|{}|shadow", dir.display(), trace.display());
    assert_eq!(stdout.lines().next(), Some(want.as_str()));
    assert_eq!(stdout.lines().nth(1), Some("2-3|1|debug|/tmp/l.log"));
    // The stale file was removed and the app wrote none: no summary of an old trace.
    assert!(!trace.exists());
    assert!(stderr.contains("no trace was written"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn trigger_after_creates_and_removes_the_trigger_file_on_time() {
    let dir = fake_layer_dir("trigger");
    let trig = dir.join("go");
    // The application samples whether the trigger file exists every 0.1 s for 1.2 s.
    let script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do if [ -e \"$VKDIRTY_TRIGGER_FILE\" ]; then printf 1; else printf 0; fi; sleep 0.1; done; echo; echo \"$VKDIRTY_TRIGGER_FILE\"";
    let out = vkdirty()
        .args(["capture", "--trigger-after", "0.3", "--trigger-for", "0.5", "--trigger-file"])
        .arg(&trig)
        .arg("--layer-dir")
        .arg(&dir)
        .arg("-o")
        .arg(dir.join("t.vkd"))
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let samples = lines.next().unwrap_or("");
    assert_eq!(lines.next(), Some(trig.to_str().unwrap()));
    // Off, then on for about 0.5 s, then off again (sleep granularity allows one sample either way).
    let on = samples.chars().filter(|&c| c == '1').count();
    assert!(samples.starts_with("00") && samples.ends_with("00") && (3..=7).contains(&on), "{samples}");
    assert!(samples.trim_matches('0').chars().all(|c| c == '1'), "one window: {samples}");
    assert!(!trig.exists(), "the trigger file is gone after the run");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn extends_vk_layer_path_when_it_is_set() {
    let dir = fake_layer_dir("layerpath");
    let out = vkdirty()
        .arg("capture")
        .arg("--layer-dir")
        .arg(&dir)
        .arg("-o")
        .arg(dir.join("x.vkd"))
        .args(["--", "sh", "-c", "echo \"$VK_LAYER_PATH|$VK_ADD_LAYER_PATH\""])
        .env("VK_LAYER_PATH", "/somewhere")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().next(), Some(format!("{}:/somewhere|", dir.display()).as_str()));
    assert!(out.status.success());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn layer_dir_comes_from_the_environment() {
    let dir = fake_layer_dir("envdir");
    let out = vkdirty()
        .args(["capture", "-o"])
        .arg(dir.join("x.vkd"))
        .args(["--", "sh", "-c", "echo \"$VK_ADD_LAYER_PATH\""])
        .env("VKDIRTY_LAYER_DIR", &dir)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().next(), Some(dir.to_str().unwrap()));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn clear_errors() {
    // A directory without the layer.
    let out = vkdirty().args(["capture", "--layer-dir", "/", "--", "true"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("has no VkLayer_vkdirty.json"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // A bad backend name.
    let dir = fake_layer_dir("errors");
    let out = vkdirty().args(["capture", "--backend", "fast", "--"]).arg("true").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("bad value \"fast\" for BACKEND (accepted: auto, async-wp"), "{stderr}");

    // An application that does not exist.
    let out = vkdirty().arg("capture").arg("--layer-dir").arg(&dir).args(["--", "/nonexistent/app"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("starting /nonexistent/app"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The built layer and workload beside the `vkdirty` binary (scripts/test.sh builds them first).
fn built_dir() -> PathBuf {
    run::built(&[run::LAYER_FILES[0], run::LAYER_FILES[1], run::WORKLOAD])
}

#[test]
fn captures_the_built_in_workload_and_summarises_it() {
    let _ = built_dir();
    let trace = std::env::temp_dir().join(format!("vkdirty-capture-cli-workload-{}.vkd", std::process::id()));
    let out = vkdirty().args(["capture", "--backend", "async-wp", "-o"]).arg(&trace).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("vkdirty-workload: ok") || stderr.contains("vkdirty-workload: ok"), "{stdout}{stderr}");
    // The `vkdirty info` summary of this run's trace.
    assert!(stdout.contains(&trace.display().to_string()), "{stdout}");
    assert!(stdout.contains("async-wp"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("submits")), "{stdout}");
    let _ = std::fs::remove_file(&trace);
}

#[test]
fn the_applications_failure_is_the_exit_code() {
    let dir = built_dir();
    let trace = std::env::temp_dir().join(format!("vkdirty-capture-cli-fail-{}.vkd", std::process::id()));
    let out = vkdirty()
        .args(["capture", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(dir.join("vkdirty-workload"))
        .args(["--scenario", "persistent", "--frames", "2", "--inject-mismatch"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("exited with"), "{stderr}");
    let _ = std::fs::remove_file(&trace);
}
