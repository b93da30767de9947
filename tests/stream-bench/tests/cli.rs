//! The bench binary end to end on the machine's Vulkan driver (lavapipe in CI), and the report
//! renderer on synthetic results.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vkdirty-stream-bench")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn run_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(bin()).arg("run").args(args).env_remove("VK_INSTANCE_LAYERS").output().expect("spawn bench");
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find(|l| l.starts_with('{')).expect("a JSON line");
    serde_json::from_str(line).unwrap()
}

#[test]
fn run_reports_what_it_wrote() {
    for (pattern, mode) in [("random", "persistent"), ("ring", "map-every-frame"), ("full", "persistent")] {
        let v = run_json(&[
            "--size-mib",
            "2",
            "--fraction",
            "10",
            "--pattern",
            pattern,
            "--mode",
            mode,
            "--frames",
            "7",
            "--warmup",
            "2",
        ]);
        let page = v["page_size"].as_u64().unwrap();
        let span = 2u64 << 20;
        let per_frame = v["written"]["bytes_per_frame"].as_u64().unwrap();
        let expect = if pattern == "full" { span } else { ((span / page) as f64 * 0.1).round() as u64 * page };
        assert_eq!(per_frame, expect, "{pattern}");
        // Initial upload of the whole buffer, then warm-up and timed frames.
        assert_eq!(v["written"]["total_bytes"].as_u64().unwrap(), span + 9 * per_frame);
        assert_eq!(v["written"]["initial_bytes"].as_u64().unwrap(), span);
        assert_eq!(v["mode"], mode);
        let f = &v["frame_ms"];
        assert!(f["min"].as_f64().unwrap() > 0.0 && f["min"].as_f64() <= f["median"].as_f64());
        assert!(f["median"].as_f64() <= f["p99"].as_f64());
        assert!(v["peak_rss_kib"].as_u64().unwrap() > span / 1024, "the mapped buffer is resident");
        let floors = &v["floors"];
        assert!(floors["frames"].as_u64().unwrap() >= 7);
        assert!(floors["copy_ms"]["median"].as_f64().unwrap() > 0.0);
        assert!(!floors["trap_note"].as_str().unwrap().is_empty());
    }
}

#[test]
fn bad_arguments_and_files_are_clear_errors() {
    let out = Command::new(bin()).args(["run", "--fraction", "0", "--frames", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fraction"));

    let dir = std::env::temp_dir().join(format!("stream-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.gfxr");
    std::fs::write(&junk, b"not a capture at all").unwrap();
    let out = Command::new(bin()).arg("gfxr-stats").arg(&junk).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a gfxreconstruct capture"));
    let out = Command::new(bin()).arg("gfxr-stats").arg(dir.join("missing.gfxr")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn run_record(config: &str, rep: u32, median: f64, captured: Option<u64>) -> String {
    serde_json::json!({
        "type": "run", "schema": 1, "machine": "m1", "workload": "stream", "case": "16 MiB random 1%",
        "config": config, "config_note": "", "rep": rep, "frames": 300,
        "frame_ms": {"median": median, "p99": median * 2.0}, "wall_s": 1.0, "peak_rss_kib": 1024,
        "written_bytes": 1000, "trace_bytes": captured.map(|c| c + 10), "captured_bytes": captured,
        "floors": {"copy_ms": 0.01, "trap_ms": 0.05, "fault_us_per_page": 0.7, "scan_us": 60.0, "trap_note": "measured"}
    })
    .to_string()
}

#[test]
fn render_replaces_only_its_own_section() {
    let python = match Command::new("python3").arg("--version").output() {
        Ok(o) if o.status.success() => "python3",
        _ => {
            eprintln!("python3 missing: render not checked");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("stream-bench-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let results = dir.join("m1.jsonl");
    let machine = serde_json::json!({"type": "machine", "schema": 1, "machine": "m1", "date": "d", "cpu": "c",
        "kernel": "k", "device": {"name": "dev"}, "quick": false});
    let lines = [
        machine.to_string(),
        run_record("none", 0, 0.10, None),
        run_record("none", 1, 0.30, None),
        run_record("vkdirty:async-wp", 0, 0.15, Some(1000)),
        run_record("vkdirty:async-wp", 1, 0.17, Some(1000)),
        run_record("gfxr:page_guard", 0, 1.2, Some(1000)),
        run_record("gfxr:page_guard", 1, 1.2, Some(1000)),
    ];
    std::fs::write(&results, lines.join("\n") + "\n").unwrap();
    let doc = dir.join("benchmarks.md");
    let before = "# Benchmarks\n\n## Page-guard engine\n\nkeep me\n\n<!-- vkdirty-bench:capture-overhead:begin -->\nold table\n<!-- vkdirty-bench:capture-overhead:end -->\n\n## Trace writer\n\nkeep me too\n";
    std::fs::write(&doc, before).unwrap();
    let render = || {
        let st = Command::new(python)
            .arg(repo_root().join("scripts/bench.py"))
            .args(["render", "--doc"])
            .arg(&doc)
            .arg(&results)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::read_to_string(&doc).unwrap()
    };
    let after = render();
    assert!(after.starts_with("# Benchmarks\n\n## Page-guard engine\n\nkeep me\n\n<!-- vkdirty-bench"));
    assert!(after.ends_with("<!-- vkdirty-bench:capture-overhead:end -->\n\n## Trace writer\n\nkeep me too\n"));
    assert!(!after.contains("old table"));
    // Medians over the two repetitions: none 0.2, async-wp 0.16, page_guard 1.2.
    let row = after.lines().find(|l| l.contains("| vkdirty:async-wp |")).expect("async-wp row");
    assert!(row.contains("| 0.160 |") && row.contains("0.80×"), "{row}");
    let row = after.lines().find(|l| l.contains("| gfxr:page_guard |")).expect("gfxr row");
    assert!(row.contains("| 1.000 |") && row.contains("100.0×") && row.contains("20.0×"), "{row}");
    // Rendering again gives the same file (only the section is replaced).
    assert_eq!(render(), after);
    std::fs::remove_dir_all(&dir).unwrap();
}
