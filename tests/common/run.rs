//! Running the built layer and binaries from tests (the root package's and the layer's): where
//! they are, whether they are there and current, the lavapipe driver, and a child process with a
//! time limit. Included with `#[path = ".../tests/common/run.rs"] mod run;`.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// The layer's name, as its manifest declares it.
pub const LAYER_NAME: &str = "VK_LAYER_VKDIRTY_capture";
/// What the layer, its manifest and the workload are, in the build directory.
pub const LAYER_FILES: [&str; 2] = ["libVkLayer_vkdirty.so", "VkLayer_vkdirty.json"];
pub const WORKLOAD: &str = "vkdirty-workload";

/// `target/<profile>`: where cargo puts the workspace's binaries, the layer and its manifest
/// (the test executable is `target/<profile>/deps/<name>-<hash>`). `VKDIRTY_E2E_BIN_DIR`
/// overrides it where the binaries were carried elsewhere (`scripts/pack-e2e.sh`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VKDIRTY_E2E_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("test executable");
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

/// [`bin_dir`], after checking that `files` were built there.
pub fn built(files: &[&str]) -> PathBuf {
    let dir = bin_dir();
    for f in files {
        assert!(
            dir.join(f).exists(),
            "{} missing: run `cargo build --workspace --bins --lib` first (scripts/test.sh does)",
            dir.join(f).display()
        );
    }
    dir
}

/// Builds the layer and the workload into this test's target directory and profile (a no-op
/// when scripts/test.sh built the workspace already, skipped with `VKDIRTY_E2E_NO_BUILD`), so a
/// test never runs stale binaries; returns [`bin_dir`].
pub fn ensure_built() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = bin_dir();
        if std::env::var_os("VKDIRTY_E2E_NO_BUILD").is_none() {
            let profile = match dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") => "dev".to_string(),
                Some(p) => p.to_string(),
                None => panic!("cannot tell the profile from {}", dir.display()),
            };
            let out = Command::new(env!("CARGO"))
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args(["build", "--quiet", "-p", "vkdirty-layer", "-p", "vkdirty-workload", "--profile", &profile])
                .arg("--target-dir")
                .arg(dir.parent().expect("target directory"))
                .output()
                .expect("run cargo build");
            assert!(
                out.status.success(),
                "building the layer and the workload failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        built(&[LAYER_FILES[0], LAYER_FILES[1], WORKLOAD])
    })
}

/// [`bin_dir`] with the layer, refusing a layer older than its sources (`cargo test` does not
/// rebuild a cdylib of another package).
pub fn fresh_layer() -> PathBuf {
    let dir = built(&LAYER_FILES);
    if std::env::var_os("VKDIRTY_E2E_NO_BUILD").is_some() {
        return dir;
    }
    let lib = dir.join(LAYER_FILES[0]);
    let built = std::fs::metadata(&lib).and_then(|m| m.modified()).expect("layer mtime");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // This file is tests/common/run.rs of the workspace root, whichever package includes it.
    let root =
        if root.join("layer").is_dir() { root.to_path_buf() } else { root.parent().expect("root").to_path_buf() };
    for src in
        ["layer/src", "src/guard", "src/trace", "src/config.rs", "src/config", "src/session"].map(|p| root.join(p))
    {
        if let Some(newer) = newer_than(&src, built) {
            panic!("{} is newer than {}; run `cargo build -p vkdirty-layer`", newer.display(), lib.display());
        }
    }
    dir
}

/// A file under `path` modified after `t`.
fn newer_than(path: &Path, t: SystemTime) -> Option<PathBuf> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_dir() {
        std::fs::read_dir(path).ok()?.flatten().find_map(|e| newer_than(&e.path(), t))
    } else {
        (meta.modified().ok()? > t).then(|| path.to_path_buf())
    }
}

/// The lavapipe driver's manifest (`lvp_icd.<arch>.json`) in the loader's system directories.
pub fn lavapipe_icd() -> Option<PathBuf> {
    let name = format!("lvp_icd.{}.json", std::env::consts::ARCH);
    ["/usr/share/vulkan/icd.d", "/usr/local/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
        .iter()
        .map(|d| Path::new(d).join(&name))
        .find(|p| p.exists())
}

/// The Khronos validation layer's name.
pub const VALIDATION_LAYER: &str = "VK_LAYER_KHRONOS_validation";

/// Where the loader looks for explicit layer manifests on Linux, in its order: the directories
/// of `VK_LAYER_PATH` and `VK_ADD_LAYER_PATH`, then `vulkan/explicit_layer.d` under the XDG
/// config directories, /etc, and the XDG data directories (Vulkan-Loader
/// `docs/LoaderLayerInterface.md`, "Linux Layer Discovery"). The flag says whether the loader
/// searches the directory by itself, also when a test sets its own `VK_ADD_LAYER_PATH`.
fn layer_dirs() -> Vec<(PathBuf, bool)> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let split = |v: Option<OsString>, default: &str| -> Vec<PathBuf> {
        std::env::split_paths(&v.unwrap_or_else(|| default.into())).filter(|p| !p.as_os_str().is_empty()).collect()
    };
    let home = var("HOME").map(PathBuf::from).unwrap_or_default();
    let mut dirs: Vec<(PathBuf, bool)> = Vec::new();
    for k in ["VK_LAYER_PATH", "VK_ADD_LAYER_PATH"] {
        dirs.extend(split(var(k), "").into_iter().map(|d| (d, false)));
    }
    let mut system = vec![var("XDG_CONFIG_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".config"))];
    system.extend(split(var("XDG_CONFIG_DIRS"), "/etc/xdg"));
    system.extend(["/usr/local/etc", "/etc"].map(PathBuf::from));
    system.push(var("XDG_DATA_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".local/share")));
    system.extend(split(var("XDG_DATA_DIRS"), "/usr/local/share:/usr/share"));
    dirs.extend(system.into_iter().map(|d| (d.join("vulkan/explicit_layer.d"), true)));
    dirs
}

/// The validation layer's manifest (a `.json` naming [`VALIDATION_LAYER`]) where the loader
/// looks for layers, and whether the loader finds it without help; searched once.
fn validation_found() -> Option<&'static (PathBuf, bool)> {
    static FOUND: OnceLock<Option<(PathBuf, bool)>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            layer_dirs().into_iter().find_map(|(dir, system)| {
                let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir).ok()?.flatten().map(|e| e.path()).collect();
                entries.sort();
                entries
                    .into_iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "json"))
                    .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(&format!("\"{VALIDATION_LAYER}\""))))
                    .map(|p| (p, system))
            })
        })
        .as_ref()
}

/// The validation layer's manifest for a test that runs under it, or `None` after a line saying
/// the test `name` is skipped and why. Where `VKDIRTY_REQUIRE_LAYERS` is set (scripts/test.sh,
/// which installs the layer) a missing layer fails the test instead: CI never skips it.
pub fn need_validation(name: &str) -> Option<&'static Path> {
    if let Some((manifest, _)) = validation_found() {
        return Some(manifest);
    }
    let searched: Vec<String> = layer_dirs().iter().map(|(d, _)| d.display().to_string()).collect();
    let why = format!(
        "{VALIDATION_LAYER} not found (no manifest naming it in {}): install vulkan-validationlayers \
         (scripts/test.sh does) or name its directory in VK_ADD_LAYER_PATH",
        searched.join(", ")
    );
    assert!(std::env::var_os("VKDIRTY_REQUIRE_LAYERS").is_none(), "{name}: {why}");
    eprintln!("skipped {name}: {why}");
    None
}

/// The `VK_ADD_LAYER_PATH` for a child running the layer built in `dir`: `dir`, and the
/// validation layer's directory where the loader would not search it by itself (it was found
/// through this process's own `VK_LAYER_PATH` or `VK_ADD_LAYER_PATH`, which the child's
/// setting replaces).
pub fn layer_path(dir: &Path) -> OsString {
    let mut dirs = vec![dir.to_path_buf()];
    if let Some((manifest, false)) = validation_found() {
        dirs.extend(manifest.parent().map(Path::to_path_buf));
    }
    std::env::join_paths(dirs).expect("layer directories without ':'")
}

/// Runs `cmd` on lavapipe where it is installed (the tests' driver; elsewhere the loader's
/// choice).
pub fn on_lavapipe(cmd: &mut Command) -> &mut Command {
    if let Some(icd) = lavapipe_icd() {
        cmd.env("VK_DRIVER_FILES", &icd).env("VK_ICD_FILENAMES", &icd);
    }
    cmd
}

/// This test executable again, as a child process running its ignored test `child` under the
/// layers `layers` (ours from `dir`), writing the trace to `trace`, on lavapipe where installed.
/// `child_env` (set to 1) tells the child it is one.
pub fn self_under_layers(child_env: &str, dir: &Path, layers: &str, trace: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test executable"));
    cmd.args(["--exact", "child", "--include-ignored", "--nocapture", "--test-threads=1"])
        .env(child_env, "1")
        .env("VK_ADD_LAYER_PATH", layer_path(dir))
        .env("VK_INSTANCE_LAYERS", layers)
        .env("VKDIRTY_TRACE_FILE", trace)
        .env("VKDIRTY_LOG_LEVEL", "info")
        .env_remove("VK_LAYER_PATH");
    on_lavapipe(&mut cmd);
    cmd
}

/// A finished child's status, stdout and stderr, for a failing assertion's message.
pub fn output_text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `cmd` to completion with its output captured; kills it and fails the test when it takes
/// longer than `limit` (a hang must not stall the suite).
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run child");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait child") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
            panic!("{:?} did not finish within {limit:?} (hung?); stderr:\n{stderr}", cmd.get_program());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: t_out.join().unwrap_or_default(), stderr: t_err.join().unwrap_or_default() }
}
