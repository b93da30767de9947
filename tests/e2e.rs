//! End-to-end: the workload runs under the real Vulkan loader with the built layer, once per
//! backend. Asserts that the application's own GPU read-back check passes, that the trace
//! reconstructs every CPU-written allocation at every submit exactly as the workload's sidecar
//! says, that every mapping used the backend asked for, the trace-size bound where the backend
//! promises one, and that the validation layer below ours reports nothing.
//!
//! Binaries: the `vkdirty` CLI is this package's (`CARGO_BIN_EXE_vkdirty`); the layer
//! (`libVkLayer_vkdirty.so` + `VkLayer_vkdirty.json`) and `vkdirty-workload` are other packages
//! of the workspace, built into the same target directory (built here on first use, unless
//! `VKDIRTY_E2E_NO_BUILD` is set). On a machine without cargo, `scripts/pack-e2e.sh DIR` packs
//! the test binary and those files; run it there with `VKDIRTY_E2E_NO_BUILD=1
//! VKDIRTY_E2E_BIN_DIR=DIR DIR/e2e`.

#[path = "common/run.rs"]
mod run;

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use vkdirty::guard::BackendKind;
use vkdirty::sidecar::{self, Report, Sidecar};
use vkdirty::trace::{Event, TraceReader};

/// One backend under test: its name and what differs for it.
struct Backend {
    name: &'static str,
    /// Extra workload flags (`assisted` sees only flushed ranges, so the application flushes).
    flags: &'static [&'static str],
    /// Extra `VKDIRTY_*` settings.
    env: &'static [(&'static str, &'static str)],
    /// Upper bound on trace dirty bytes / bytes of the pages the application wrote.
    max_ratio: Option<f64>,
}

/// Every backend, one line each; the test functions are generated from this list.
macro_rules! backends {
    ($($test:ident, $validation_test:ident: $b:expr;)*) => {
        $(
            #[test]
            fn $test() {
                capture_and_check(&$b);
            }
            #[test]
            fn $validation_test() {
                validation_is_clean(&$b);
            }
        )*
    };
}

backends! {
    async_wp, async_wp_validation: Backend { name: "async-wp", flags: &[], env: &[], max_ratio: Some(1.05) };
    shadow, shadow_validation: Backend { name: "shadow", flags: &[], env: &[], max_ratio: None };
    shadow_persistent_reads, shadow_persistent_reads_validation: Backend { name: "shadow", flags: &[], env: &[("VKDIRTY_PERSISTENT_SHADOW", "1"), ("VKDIRTY_SHADOW_READS", "1")], max_ratio: None };
    shadow_wp, shadow_wp_validation: Backend { name: "shadow-wp", flags: &[], env: &[], max_ratio: Some(1.05) };
    full, full_validation: Backend { name: "full", flags: &[], env: &[], max_ratio: None };
    assisted, assisted_validation: Backend { name: "assisted", flags: &["--flush"], env: &[], max_ratio: None };
    host_import, host_import_validation: Backend { name: "host-import", flags: &[], env: &[], max_ratio: Some(1.05) };
    // The plain rows run with the default write prediction (`VKDIRTY_PREDICT=auto`: on for these
    // three); forced off and forced on here.
    async_wp_nopredict, async_wp_nopredict_validation: Backend { name: "async-wp", flags: &[], env: &[("VKDIRTY_PREDICT", "0")], max_ratio: Some(1.05) };
    host_import_nopredict, host_import_nopredict_validation: Backend { name: "host-import", flags: &[], env: &[("VKDIRTY_PREDICT", "0")], max_ratio: Some(1.05) };
    shadow_wp_nopredict, shadow_wp_nopredict_validation: Backend { name: "shadow-wp", flags: &[], env: &[("VKDIRTY_PREDICT", "0")], max_ratio: Some(1.05) };
    shadow_wp_predict, shadow_wp_predict_validation: Backend { name: "shadow-wp", flags: &[], env: &[("VKDIRTY_PREDICT", "1")], max_ratio: Some(1.05) };
    // Refreshes at every fence wait racing predicted (unprotected) pages of the shadow.
    shadow_wp_fence_refresh_predict, shadow_wp_fence_refresh_predict_validation: Backend {
        name: "shadow-wp", flags: &["--no-coherent-invalidate"], env: &[("VKDIRTY_SHADOW_REFRESH", "always"), ("VKDIRTY_PREDICT", "1")], max_ratio: Some(1.05)
    };
    // Shadows released at each unmap (the default keeps them).
    shadow_released, shadow_released_validation: Backend { name: "shadow", flags: &[], env: &[("VKDIRTY_PERSISTENT_SHADOW", "0")], max_ratio: None };
    shadow_wp_released, shadow_wp_released_validation: Backend { name: "shadow-wp", flags: &[], env: &[("VKDIRTY_PERSISTENT_SHADOW", "0")], max_ratio: Some(1.05) };
    // GPU results in coherent memory reach the application through the fence-wait refresh alone.
    shadow_wp_fence_refresh, shadow_wp_fence_refresh_validation: Backend {
        name: "shadow-wp", flags: &["--no-coherent-invalidate"], env: &[("VKDIRTY_SHADOW_REFRESH", "always")], max_ratio: Some(1.05)
    };
    // auto where async-wp refuses every mapping (as on NVIDIA) must take shadow-wp.
    auto_async_wp_refused, auto_async_wp_refused_validation: Backend {
        name: "shadow-wp",
        flags: &[],
        env: &[("VKDIRTY_BACKEND", "auto"), ("VKDIRTY_HOST_IMPORT", "0"), ("VKDIRTY_TEST_REFUSE", "async-wp")],
        max_ratio: Some(1.05)
    };
}

/// Frames of the main run and of the run under the validation layer (slower).
const FRAMES: &str = "20";
const VALIDATION_FRAMES: &str = "5";
/// The longest a workload run may take before it counts as hung.
const WORKLOAD_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);
use run::LAYER_NAME;

use run::{bin_dir, ensure_built};

fn tmp(name: &str) -> PathBuf {
    // The build's scratch directory, or the system's where the binary was carried elsewhere.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = if dir.is_dir() { dir } else { std::env::temp_dir() };
    dir.join(format!("e2e-{}-{name}", std::process::id()))
}

/// Runs the workload with `layers` enabled (ours first, closest to the application).
fn run_workload(backend: &Backend, layers: &[&str], trace: &Path, args: &[&str]) -> Output {
    let dir = ensure_built();
    let mut c = Command::new(dir.join("vkdirty-workload"));
    for (k, _) in std::env::vars() {
        if k.starts_with("VKDIRTY_") {
            c.env_remove(k);
        }
    }
    c.env("VK_ADD_LAYER_PATH", run::layer_path(dir))
        .env("VK_INSTANCE_LAYERS", layers.join(":"))
        .env("VKDIRTY_TRACE_FILE", trace)
        .env("VKDIRTY_BACKEND", backend.name)
        .envs(backend.env.iter().copied())
        .args(backend.flags)
        .args(args);
    run::output_within(c, WORKLOAD_LIMIT)
}

fn read_sidecar(path: &Path) -> Sidecar {
    sidecar::read(path, false).unwrap_or_else(|e| panic!("sidecar {}: {e}", path.display()))
}

/// The trace is whole (not truncated, ends with its End record) and, replayed in stream order,
/// matches the sidecar at every submit (the oracle `vkdirty check-sidecar` uses).
fn compare(trace: &Path, sc: &Sidecar, backend: Option<BackendKind>) -> Report {
    let reader = TraceReader::open(trace).unwrap_or_else(|e| panic!("open trace {}: {e}", trace.display()));
    let (events, truncation) = reader.events().unwrap_or_else(|e| panic!("read trace {}: {e}", trace.display()));
    assert!(truncation.is_none(), "trace truncated: {truncation:?}");
    assert!(matches!(events.last(), Some(Event::End(_))), "trace ends with its End record");
    sidecar::check(trace, sc, backend).unwrap_or_else(|e| panic!("check trace {}: {e}", trace.display()))
}

/// A file-name tag unique per list entry (a backend may appear with different settings).
fn test_tag(b: &Backend) -> String {
    let mut t = b.name.to_string();
    for (k, v) in b.env {
        t.push_str(&format!("-{}{v}", k.trim_start_matches("VKDIRTY_").to_lowercase()));
    }
    t
}

fn capture_and_check(backend: &Backend) {
    capture_and_check_then(backend, |_| {});
}

/// [`capture_and_check`], then `then` on the trace's events before the files go.
fn capture_and_check_then(backend: &Backend, then: impl FnOnce(&[Event])) {
    let kind = BackendKind::parse(backend.name).expect("known backend");
    let tag = test_tag(backend);
    let trace = tmp(&format!("{tag}.vkd"));
    let sidecar = tmp(&format!("{tag}.jsonl"));
    let o = run_workload(backend, &[LAYER_NAME], &trace, &["--frames", FRAMES, "--sidecar", sidecar.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "{}: the workload's own checks failed under the layer:\n{}",
        backend.name,
        run::output_text(&o)
    );
    assert!(trace.exists(), "{}: no trace written (was the layer loaded?)\n{}", backend.name, run::output_text(&o));
    let sc = read_sidecar(&sidecar);
    let r = compare(&trace, &sc, Some(kind));
    let app_bytes = sc.pages * sc.page_size;
    let ratio = r.cpu_dirty_bytes as f64 / app_bytes as f64;
    eprintln!(
        "e2e {}: {} submits, {} allocation states checked; CPU-written dirty bytes {} / {} bytes of pages written = {:.3} (all dirty bytes {})",
        test_tag(backend), r.submits_checked, r.states_checked, r.cpu_dirty_bytes, app_bytes, ratio, r.all_dirty_bytes
    );
    assert!(
        r.wrong_backend == 0,
        "{}: {} mappings not tracked with {}, first ones:\n{}",
        backend.name,
        r.wrong_backend,
        backend.name,
        r.wrong_backend_examples.join("\n")
    );
    assert!(
        r.mismatches.is_empty(),
        "{}: {} mismatches between trace and sidecar, first ones:\n{}",
        backend.name,
        r.mismatches.len(),
        r.mismatches.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(r.submits_checked > 0 && r.states_checked > 0);
    if let Some(max) = backend.max_ratio {
        assert!(
            ratio <= max,
            "{}: trace dirty bytes {} are {ratio:.3}x the {app_bytes} bytes of the pages written (max {max})",
            backend.name,
            r.cpu_dirty_bytes
        );
    }
    let (events, _) = TraceReader::open(&trace).and_then(|r| r.events()).expect("read back");
    then(&events);
    let _ = std::fs::remove_file(trace);
    let _ = std::fs::remove_file(sidecar);
}

/// A ring buffer (the workload's `ring` scenario beside the persistent one) with write
/// prediction as set by default: the ring's predictions become trusted (unprotected, neither trapped nor compared),
/// and the trace is still exact and captures at most 1.05x the pages written.
#[test]
fn trusted_predictions_on_a_ring_stay_exact() {
    // async-wp last: it runs only where userfaultfd can track the driver's memory (not NVIDIA's),
    // and the backends before it are still shown exact where it fails.
    for name in ["host-import", "shadow-wp", "async-wp"] {
        let b = Backend {
            name,
            flags: &["--scenario", "persistent,ring"],
            // The default (`auto`) predicts on all three.
            env: &[],
            max_ratio: Some(1.05),
        };
        capture_and_check_then(&b, |events| {
            let page = 4096;
            let count = |t: bool| -> u64 {
                events
                    .iter()
                    .map(|e| match e {
                        Event::Trusted { ranges, .. } if t => ranges.iter().map(|r| r.1.div_ceil(page)).sum(),
                        Event::Compared { ranges, .. } if !t => ranges.iter().map(|r| r.1.div_ceil(page)).sum(),
                        _ => 0,
                    })
                    .sum()
            };
            let (trusted, compared) = (count(true), count(false));
            eprintln!("{name}: ring pages by trusted prediction {trusted}, by compare {compared}");
            // 20 frames of 8 ring pages: most of them trusted once the ring has proven itself.
            assert!(trusted >= 80, "{name}: only {trusted} pages by trusted prediction ({compared} compared)");
        });
    }
}

fn validation_is_clean(backend: &Backend) {
    if run::need_validation(&format!("{} under the validation layer", backend.name)).is_none() {
        return;
    }
    let kind = BackendKind::parse(backend.name).expect("known backend");
    let tag = test_tag(backend);
    let trace = tmp(&format!("{tag}-validation.vkd"));
    let sidecar = tmp(&format!("{tag}-validation.jsonl"));
    let o = run_workload(
        backend,
        &[LAYER_NAME, run::VALIDATION_LAYER],
        &trace,
        &["--validation", "--frames", VALIDATION_FRAMES, "--sidecar", sidecar.to_str().unwrap()],
    );
    assert!(
        o.status.success(),
        "{}: validation messages or failed checks with the layer:\n{}",
        backend.name,
        run::output_text(&o)
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("no validation message"),
        "{}: the messenger was not installed:\n{}",
        backend.name,
        run::output_text(&o)
    );
    // The layer was really in the chain: it wrote a trace that matches.
    let r = compare(&trace, &read_sidecar(&sidecar), Some(kind));
    assert!(
        r.mismatches.is_empty() && r.wrong_backend == 0,
        "{}: {:?} {:?}",
        backend.name,
        r.mismatches,
        r.wrong_backend_examples
    );
    let _ = std::fs::remove_file(trace);
    let _ = std::fs::remove_file(sidecar);
}

/// The refresh is what shows the application GPU results in a shadow: without it (and without
/// an invalidate), the workload reads stale bytes and fails its own check.
#[test]
fn shadow_wp_without_refresh_reads_stale_gpu_results() {
    let backend = Backend {
        name: "shadow-wp",
        flags: &["--no-coherent-invalidate"],
        env: &[("VKDIRTY_SHADOW_REFRESH", "never")],
        max_ratio: None,
    };
    let trace = tmp("stale.vkd");
    let o = run_workload(&backend, &[LAYER_NAME], &trace, &["--frames", "2", "--scenario", "gpu-write"]);
    assert_eq!(o.status.code(), Some(1), "{}", run::output_text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("gpu-write"), "{}", run::output_text(&o));
    let _ = std::fs::remove_file(trace);
}

/// Map every frame under shadow-wp: the shadow kept since the unmap is filled again from the real
/// memory at the map only where the device may have written it. Without invalidates, memory the
/// GPU wrote while it was unmapped (gpu-remap: not mapped at the fence wait, so no sync-point
/// refresh reaches it) shows the GPU's results after the map; the memory only copied from (remap)
/// is resumed as kept; the trace is exact.
#[test]
fn shadow_wp_kept_shadows_show_gpu_results_after_the_map_and_stay_exact() {
    let backend = Backend {
        name: "shadow-wp",
        flags: &["--no-coherent-invalidate"],
        // The read-back buffer, mapped throughout, is refreshed at the fence wait.
        env: &[("VKDIRTY_SHADOW_REFRESH", "always")],
        max_ratio: None,
    };
    let trace = tmp("kept.vkd");
    let sidecar = tmp("kept.jsonl");
    let args = ["--frames", "6", "--scenario", "remap,gpu-remap", "--sidecar", sidecar.to_str().unwrap()];
    let o = run_workload(&backend, &[LAYER_NAME], &trace, &args);
    assert!(o.status.success(), "{}", run::output_text(&o));
    let r = compare(&trace, &read_sidecar(&sidecar), Some(BackendKind::ShadowWp));
    assert!(r.mismatches.is_empty() && r.submits_checked > 0, "{:?}", r.mismatches);
    let (events, _) = TraceReader::open(&trace).unwrap().events().unwrap();
    let kept = events.iter().filter(|e| matches!(e, Event::Map(m) if m.reason.contains("kept since the last unmap")));
    assert!(kept.count() >= 10, "maps after the first resume the kept shadow");
    let _ = std::fs::remove_file(trace);
    let _ = std::fs::remove_file(sidecar);
}

/// A buffer the device may write, bound to memory the application already maps and writes (as a
/// sub-allocator binds one later): until then `shadow-wp` tracks it with a private shadow, from
/// then on refreshes that shadow through its one view while the application writes the other
/// half during the GPU's fills. The workload reads every GPU fill through its pointer (after
/// `vkInvalidateMappedMemoryRanges`, or after the fence wait alone with the fence-wait refresh),
/// and the trace is exact at every submit; also with prediction off.
#[test]
fn a_buffer_bound_later_lets_the_gpu_write_a_private_shadow() {
    let runs: [(&[&str], &[(&str, &str)]); 3] = [
        (&[], &[]),
        (&[], &[("VKDIRTY_PREDICT", "0")]),
        (&["--no-coherent-invalidate"], &[("VKDIRTY_SHADOW_REFRESH", "always")]),
    ];
    for (flags, env) in runs {
        let backend = Backend { name: "shadow-wp", flags, env, max_ratio: None };
        let tag = test_tag(&backend);
        let trace = tmp(&format!("late-{tag}.vkd"));
        let sidecar = tmp(&format!("late-{tag}.jsonl"));
        let args = ["--frames", "8", "--scenario", "mixed-late,persistent", "--sidecar", sidecar.to_str().unwrap()];
        let o = run_workload(&backend, &[LAYER_NAME], &trace, &args);
        assert!(o.status.success(), "{tag}: {}", run::output_text(&o));
        let r = compare(&trace, &read_sidecar(&sidecar), Some(BackendKind::ShadowWp));
        assert!(r.mismatches.is_empty() && r.submits_checked >= 8, "{tag}: {:?}", r.mismatches);
        let _ = std::fs::remove_file(trace);
        let _ = std::fs::remove_file(sidecar);
    }
}

/// `vkdirty check-sidecar`, the comparison runs on other machines make with the built binaries
/// only, agrees with the one above and fails where it must; `vkdirty info` shows why `auto`
/// took shadow-wp.
#[test]
fn check_sidecar_cli_and_info_show_the_auto_fallback() {
    let backend = Backend {
        name: "shadow-wp",
        flags: &[],
        env: &[("VKDIRTY_BACKEND", "auto"), ("VKDIRTY_HOST_IMPORT", "0"), ("VKDIRTY_TEST_REFUSE", "async-wp")],
        max_ratio: None,
    };
    let trace = tmp("cli.vkd");
    let sidecar = tmp("cli.jsonl");
    let o = run_workload(&backend, &[LAYER_NAME], &trace, &["--frames", "3", "--sidecar", sidecar.to_str().unwrap()]);
    assert!(o.status.success(), "{}", run::output_text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let why = "async-wp refused a mapping: refused for testing (VKDIRTY_TEST_REFUSE)";
    assert_eq!(stderr.matches(why).count(), 1, "logged once per distinct reason:\n{stderr}");
    let cli = |args: &[&str]| {
        let o = Command::new(bin_dir().join("vkdirty")).args(args).output().expect("run vkdirty");
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
    };
    let (t, s) = (trace.to_str().unwrap(), sidecar.to_str().unwrap());
    let (code, text) = cli(&["check-sidecar", "--backend", "shadow-wp", t, s]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("exact: 4 submits"), "{text}");
    assert!(text.contains(&format!("shadow-wp: {why}; using shadow-wp")), "{text}");
    let (code, text) = cli(&["check-sidecar", "--backend", "async-wp", t, s]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("mappings not using async-wp: "), "{text}");
    let (code, text) = cli(&["check-sidecar", "--json", t, s]);
    assert_eq!(code, Some(0), "{text}");
    let v: Value = serde_json::from_str(text.trim()).expect("one JSON object");
    assert_eq!((v["pass"].as_bool(), v["exact"].as_bool()), (Some(true), Some(true)), "{v}");
    let (code, text) = cli(&["info", t]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("shadow-wp") && text.contains(why), "{text}");
    // One wrong hash: not exact, exit 1.
    let body = std::fs::read_to_string(&sidecar).unwrap();
    let bad = tmp("cli-bad.jsonl");
    let pos = body.find("\"hash\":\"0x").expect("a hash") + 10;
    let flipped = if &body[pos..pos + 1] == "0" { "1" } else { "0" };
    std::fs::write(&bad, format!("{}{flipped}{}", &body[..pos], &body[pos + 1..])).unwrap();
    let (code, text) = cli(&["check-sidecar", t, bad.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.starts_with("NOT exact") && text.contains("submit 1:"), "{text}");
    // Bad input: a clear error, no panic.
    std::fs::write(&bad, "not json\n").unwrap();
    let (code, text) = cli(&["check-sidecar", t, bad.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("sidecar line 1: not JSON"), "{text}");
    for f in [trace, sidecar, bad] {
        let _ = std::fs::remove_file(f);
    }
}

/// The comparison is not vacuous: one wrong hash in the sidecar is reported, at that submit.
#[test]
fn comparison_catches_a_wrong_hash() {
    let backend = Backend { name: "async-wp", flags: &[], env: &[], max_ratio: None };
    let trace = tmp("checker.vkd");
    let sidecar = tmp("checker.jsonl");
    let o = run_workload(
        &backend,
        &[LAYER_NAME],
        &trace,
        &["--frames", "3", "--scenario", "persistent,churn", "--sidecar", sidecar.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", run::output_text(&o));
    let mut sc = read_sidecar(&sidecar);
    assert!(compare(&trace, &sc, Some(BackendKind::AsyncWp)).mismatches.is_empty());
    let entry = &mut sc.submits.get_mut(&3).expect("submit 3")[0];
    let good = entry.3.clone();
    entry.3 = format!("{:#018x}", u64::from_str_radix(&good[2..], 16).unwrap() ^ 1);
    let r = compare(&trace, &sc, Some(BackendKind::AsyncWp));
    assert_eq!(r.mismatches.len(), 1, "{:?}", r.mismatches);
    assert!(r.mismatches[0].starts_with("submit 3:"), "{:?}", r.mismatches);
    let _ = std::fs::remove_file(trace);
    let _ = std::fs::remove_file(sidecar);
}

/// `auto` per memory type: the workload's written buffers go round-robin over every suitable
/// host-visible memory type (`--host-types spread`), and one allocation with no buffer is
/// written in each host-visible coherent type (`--memory-only`: also types a driver offers no
/// buffer the layer made external); every mapping of a memory type
/// must use the backend expected for it, and the trace must reconstruct exactly. Expectations
/// come from `VKDIRTY_E2E_EXPECT` (`type:backend,...`, e.g. `2:host-import,3:host-import,4:shadow-wp`
/// on NVIDIA); on lavapipe (one memory type, system memory) they default to `0:host-import`.
#[test]
fn auto_picks_a_backend_per_memory_type() {
    let backend =
        Backend { name: "auto", flags: &["--host-types", "spread", "--memory-only"], env: &[], max_ratio: None };
    let trace = tmp("auto-types.vkd");
    let sidecar = tmp("auto-types.jsonl");
    let o =
        run_workload(&backend, &[LAYER_NAME], &trace, &["--frames", FRAMES, "--sidecar", sidecar.to_str().unwrap()]);
    assert!(o.status.success(), "auto: the workload's own checks failed under the layer:\n{}", run::output_text(&o));
    let sc = read_sidecar(&sidecar);
    let r = compare(&trace, &sc, None);
    assert!(
        r.mismatches.is_empty(),
        "auto: mismatches:\n{}",
        r.mismatches.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(r.submits_checked > 0 && r.states_checked > 0);

    let (events, _) = TraceReader::open(&trace).expect("open trace").events().expect("read trace");
    let device = events
        .iter()
        .find_map(|e| match e {
            Event::Session(s) => Some(s.device_name.clone()),
            _ => None,
        })
        .expect("session record");
    let mut types: HashMap<u64, (u32, u32)> = HashMap::new(); // alloc id -> (memory type, flags)
                                                              // memory type -> (flags, backend -> (maps, a reason))
    let mut table: BTreeMap<u32, (u32, BTreeMap<String, (u64, String)>)> = BTreeMap::new();
    for e in &events {
        match e {
            Event::Allocation(a) => {
                types.insert(a.id, (a.memory_type, a.property_flags));
            }
            Event::Map(m) => {
                let (ty, flags) = types[&m.alloc];
                let row = table.entry(ty).or_insert_with(|| (flags, BTreeMap::new()));
                let cell = row.1.entry(m.backend.name().to_string()).or_insert((0, m.reason.clone()));
                cell.0 += 1;
            }
            _ => {}
        }
    }
    let mut report = format!("auto on {device}, per memory type:\n");
    for (ty, (flags, backends)) in &table {
        for (b, (n, reason)) in backends {
            report += &format!("  type {ty} ({:?}): {b} x{n}: {reason}\n", ash_flags(*flags));
        }
    }
    eprint!("{report}");

    let expect = match std::env::var("VKDIRTY_E2E_EXPECT") {
        Ok(v) if !v.trim().is_empty() => v,
        _ if device.starts_with("llvmpipe") => "0:host-import".to_string(),
        _ => panic!("auto on {device}: set VKDIRTY_E2E_EXPECT (type:backend,...) for this device\n{report}"),
    };
    for item in expect.split(',') {
        let (ty, b) = item
            .trim()
            .split_once(':')
            .unwrap_or_else(|| panic!("VKDIRTY_E2E_EXPECT item {item:?} is not type:backend"));
        let ty: u32 = ty.parse().expect("memory type index");
        assert!(BackendKind::parse(b).is_some(), "unknown backend {b:?} in VKDIRTY_E2E_EXPECT");
        let (_, backends) = table.get(&ty).unwrap_or_else(|| panic!("no mapping of memory type {ty}\n{report}"));
        assert!(
            backends.len() == 1 && backends.contains_key(b),
            "memory type {ty}: expected every mapping with {b}\n{report}"
        );
    }
    let _ = std::fs::remove_file(trace);
    let _ = std::fs::remove_file(sidecar);
}

/// Readable memory property flags.
fn ash_flags(raw: u32) -> Vec<&'static str> {
    let names = ["DEVICE_LOCAL", "HOST_VISIBLE", "HOST_COHERENT", "HOST_CACHED", "LAZILY_ALLOCATED", "PROTECTED"];
    names.iter().enumerate().filter(|(i, _)| raw & (1 << i) != 0).map(|(_, n)| *n).collect()
}

/// `vkdirty-workload --report-memory` (the probe used on new drivers): one line of memory
/// types, then per buffer usage the types of plain and external buffers. lavapipe has one memory
/// type and imports host memory for every usage.
#[test]
fn report_memory_lists_types_and_external_buffer_types() {
    let dir = ensure_built();
    let o = Command::new(dir.join("vkdirty-workload"))
        .arg("--report-memory")
        .env_remove("VK_INSTANCE_LAYERS")
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", run::output_text(&o));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    let types = lines.iter().find(|v| v["kind"] == "memory_types").expect("memory_types line");
    assert!(!types["types"].as_array().expect("types array").is_empty(), "{types}");
    let buffers: Vec<&Value> = lines.iter().filter(|v| v["kind"] == "buffer").collect();
    assert!(buffers.len() >= 5, "{}", run::output_text(&o));
    if types["device"].as_str().unwrap_or("").starts_with("llvmpipe") {
        for b in buffers {
            assert_eq!((b["plain"].as_str(), b["external"].as_str()), (Some("0b1"), Some("0b1")), "{b}");
            assert!(b["features"].as_str().unwrap_or("").contains("IMPORTABLE"), "{b}");
        }
    }
}

/// The application calls `vkQueueSubmit2KHR` (and `vkMapMemory2KHR` / `vkUnmapMemory2KHR` where
/// the driver offers `VK_KHR_map_memory2`; lavapipe of Mesa 22.3 does not) by their KHR names,
/// found with `vkGetDeviceProcAddr`: the layer's alias entry points collect as the core ones
/// do, so `vkdirty check-sidecar` finds the trace exact and holding every submit. A layer that
/// answered those names with the driver's functions would miss those submits and mappings.
#[test]
fn khr_alias_names_are_captured_exactly() {
    let number = |text: &str, before: &str| -> Option<u64> {
        let rest = &text[text.find(before)? + before.len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    // The shadow backends first: they run on every driver (async-wp needs anonymous driver memory).
    for name in ["shadow-wp", "shadow", "async-wp"] {
        let backend = Backend { name, flags: &["--khr-names"], env: &[], max_ratio: None };
        let (trace, sidecar) = (tmp(&format!("khr-{name}.vkd")), tmp(&format!("khr-{name}.jsonl")));
        let o =
            run_workload(&backend, &[LAYER_NAME], &trace, &["--frames", "6", "--sidecar", sidecar.to_str().unwrap()]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "{name}: {}", run::output_text(&o));
        let line = out.lines().find(|l| l.contains("khr names: ")).unwrap_or_else(|| panic!("no khr line:\n{out}"));
        eprintln!("e2e {name}: {line}");
        let submit2 = number(line, "vkQueueSubmit2KHR ");
        if out.contains(" on llvmpipe") {
            // lavapipe offers VK_KHR_synchronization2: every other submit goes through it.
            assert!(submit2.is_some_and(|n| n >= 3), "{name}: {line}");
        }
        assert!(
            submit2.is_some() || number(line, "vkMapMemory2KHR ").is_some(),
            "nothing went through a KHR name: {line}"
        );
        let c = Command::new(bin_dir().join("vkdirty"))
            .args(["check-sidecar", "--backend", name])
            .args([&trace, &sidecar])
            .output()
            .expect("run vkdirty check-sidecar");
        let text = String::from_utf8_lossy(&c.stdout).into_owned();
        assert!(c.status.success() && text.starts_with("exact: "), "{name}: {}", run::output_text(&c));
        assert_eq!(number(&text, "exact: "), number(&out, "ok: "), "{name}: every submit in the trace: {text}{out}");
        let _ = std::fs::remove_file(trace);
        let _ = std::fs::remove_file(sidecar);
    }
}
