//! The workload on its own (no vkdirty layer) on the system Vulkan driver (lavapipe in CI):
//! its checks pass, its sidecar is well formed and deterministic, and its checks can fail.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_vkdirty-workload");

fn tmp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("workload-{}-{name}", std::process::id()))
}

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    // Only the layers a test asks for.
    c.env_remove("VK_INSTANCE_LAYERS");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run vkdirty-workload")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn read_sidecar(path: &PathBuf) -> Vec<Value> {
    let s = std::fs::read_to_string(path).expect("sidecar written");
    s.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"))).collect()
}

/// Checks the sidecar's structure; returns, per submit, the hashes in allocation order.
fn check_sidecar(recs: &[Value], frames: u64) -> Vec<Vec<String>> {
    assert_eq!(recs.first().unwrap()["kind"], "header");
    let end = recs.last().unwrap();
    assert_eq!(end["kind"], "end");
    assert_eq!(end["ok"], true);
    assert_eq!(end["submits"], frames + 1);
    let mut live_cpu: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new(); // handle -> (size, off, len)
    let mut gpu: BTreeSet<u64> = BTreeSet::new();
    let mut next_seq = 1;
    let mut pages_sum = 0;
    let mut per_submit = Vec::new();
    let mut frees = 0;
    for r in &recs[1..recs.len() - 1] {
        match r["kind"].as_str().unwrap() {
            "alloc" => {
                let h = r["handle"].as_u64().unwrap();
                assert_ne!(h, 0);
                if r["gpu_written"] == true {
                    assert!(r.get("cpu_range").is_none());
                    gpu.insert(h);
                } else {
                    let size = r["size"].as_u64().unwrap();
                    let cr = r["cpu_range"].as_array().unwrap();
                    let (o, l) = (cr[0].as_u64().unwrap(), cr[1].as_u64().unwrap());
                    assert!(l > 0 && o + l <= size);
                    assert!(live_cpu.insert(h, (size, o, l)).is_none(), "handle {h} live twice");
                }
            }
            "free" => {
                let h = r["handle"].as_u64().unwrap();
                assert!(live_cpu.remove(&h).is_some(), "free of a handle not live: {r}");
                assert_eq!(r["after_submit"].as_u64().unwrap(), next_seq - 1);
                frees += 1;
            }
            "submit" => {
                assert_eq!(r["seq"].as_u64().unwrap(), next_seq, "submits numbered from 1 without gaps");
                next_seq += 1;
                let pages = r["pages"].as_u64().unwrap();
                assert!(pages > 0, "every frame writes something: {r}");
                pages_sum += pages;
                let allocs = r["allocs"].as_array().unwrap();
                let handles: BTreeSet<u64> = allocs.iter().map(|a| a["handle"].as_u64().unwrap()).collect();
                assert_eq!(handles, live_cpu.keys().copied().collect(), "every live CPU-written allocation, once");
                let mut hashes = Vec::new();
                let mut alloc_pages = 0;
                for a in allocs {
                    let h = a["handle"].as_u64().unwrap();
                    assert!(!gpu.contains(&h));
                    let (size, o, l) = live_cpu[&h];
                    assert_eq!(a["size"].as_u64().unwrap(), size);
                    assert_eq!((a["offset"].as_u64().unwrap(), a["len"].as_u64().unwrap()), (o, l));
                    let hash = a["hash"].as_str().unwrap();
                    assert!(hash.starts_with("0x") && hash.len() == 18, "{hash}");
                    alloc_pages += a["pages"].as_u64().unwrap();
                    hashes.push(hash.to_string());
                }
                // Pages are distinct across the submit, so no allocation counts more than that.
                assert!(alloc_pages >= pages);
                per_submit.push(hashes);
            }
            k => panic!("unexpected record kind {k}"),
        }
    }
    assert_eq!(end["pages"].as_u64().unwrap(), pages_sum);
    assert!(frees > 0 || frames < 3, "churn allocations are freed");
    per_submit
}

#[test]
fn default_run_passes_and_writes_a_valid_sidecar() {
    let sc = tmp("default.jsonl");
    let o = run(&["--sidecar", sc.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let recs = read_sidecar(&sc);
    let scenarios = recs[0]["scenarios"].as_array().unwrap().len();
    assert_eq!(scenarios, 9, "default runs every scenario");
    let frames = recs[0]["frames"].as_u64().unwrap();
    let hashes = check_sidecar(&recs, frames);
    // Hashes change as the application writes.
    assert_ne!(hashes[0], hashes[1]);
    let _ = std::fs::remove_file(sc);
}

#[test]
fn sidecar_is_deterministic_per_seed() {
    let runs: Vec<Vec<Vec<String>>> = [("a", "5"), ("b", "5"), ("c", "6")]
        .iter()
        .map(|(name, seed)| {
            let sc = tmp(&format!("seed-{name}.jsonl"));
            let o = run(&["--frames", "6", "--seed", seed, "--size", "64K", "--sidecar", sc.to_str().unwrap()], &[]);
            assert!(o.status.success(), "{}", text(&o));
            let h = check_sidecar(&read_sidecar(&sc), 6);
            let _ = std::fs::remove_file(sc);
            h
        })
        .collect();
    assert_eq!(runs[0], runs[1]);
    assert_ne!(runs[0], runs[2]);
}

#[test]
fn flush_mode_single_thread_and_odd_size_pass() {
    let sc = tmp("flush.jsonl");
    let o =
        run(&["--flush", "--threads", "1", "--size", "5000", "--frames", "8", "--sidecar", sc.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o));
    check_sidecar(&read_sidecar(&sc), 8);
    let _ = std::fs::remove_file(sc);
}

#[test]
fn read_back_check_catches_a_difference() {
    let o = run(&["--frames", "3", "--scenario", "persistent", "--inject-mismatch"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("GPU read-back"), "{}", text(&o));
}

#[test]
fn unknown_scenario_is_an_error() {
    let o = run(&["--scenario", "persistent,nope"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown scenario \"nope\""));
}

#[test]
fn validation_layer_finds_nothing_and_is_really_listening() {
    let env = [("VK_INSTANCE_LAYERS", "VK_LAYER_KHRONOS_validation")];
    let o = run(&["--validation", "--frames", "6"], &env);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("no validation message"), "{}", text(&o));
    let o = run(&["--validation", "--frames", "1", "--scenario", "persistent", "--provoke-validation-error"], &env);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("VUID-VkMappedMemoryRange-offset-00687"), "{}", text(&o));
}
