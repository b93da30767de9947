//! The `vkdirty` binary on real trace files: info, info --json, dump, verify, events, bad input.

mod trace_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use trace_common::*;
use vkdirty::trace::*;

fn vkdirty(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vkdirty")).args(args).output().expect("run vkdirty")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A failed run: non-zero exit, one line on stderr, no panic.
fn assert_clean_failure(o: &Output, what: &str) -> String {
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{what}: exit {:?}", o.status);
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err:?}");
    assert!(err.starts_with("vkdirty: "), "{what}: {err:?}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{what}: {err:?}");
    err
}

fn write_file(events: &[Event], c: Compression) -> PathBuf {
    let path = tmp_path("cli.vkd");
    let w = TraceWriter::create(&path, opts(c)).unwrap();
    for e in events {
        w.record(e);
    }
    w.close().unwrap();
    path
}

fn sample_file() -> PathBuf {
    write_file(&sample_events(), Compression::Lz4)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn info_human() {
    let path = sample_file();
    let o = vkdirty(&["info", s(&path)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for needle in [
        "allocations  2",
        "maps         2 (async-wp 1, shadow 1)",
        "shadow x1: async-wp refused",
        "submits      2",
        "frames       1",
        "dirty        4 pages",
        "writer       0 stalls",
        "status       complete",
        "app \"app\"",
        "compression",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn info_json() {
    let path = sample_file();
    let o = vkdirty(&["info", "--json", s(&path)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["submits"], 2);
    assert_eq!(v["frames"], 1);
    assert_eq!(v["allocations"], 2);
    assert_eq!(v["maps"], 2);
    // 4096 bytes on page 0 of alloc 1; 512 bytes in page 0 of alloc 2; 150 bytes over 2 pages.
    assert_eq!(v["dirty_pages"], 4);
    assert_eq!(v["dirty_bytes"], 4096 + 512 + 150);
    assert_eq!(v["file_bytes"], std::fs::metadata(&path).unwrap().len());
    assert_eq!(v["backends"]["async-wp"], 1);
    assert_eq!(v["backends"]["shadow"], 1);
    assert_eq!(v["truncated"], false);
    assert_eq!(v["writer_stalls"], 0);
    // Submit 1 had 4608 dirty bytes, submit 2 had 150.
    assert_eq!(v["per_submit"]["dirty_bytes"]["max"], 4608);
    assert_eq!(v["per_submit"]["dirty_bytes"]["median"], 150);
    assert!(v["compression_ratio"].as_f64().unwrap() > 1.0);
}

#[test]
fn info_on_a_truncated_trace_warns() {
    let path = sample_file();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 30]).unwrap();
    let o = vkdirty(&["info", "--json", s(&path)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["truncated"], true);
    assert_eq!(v["writer_stalls"], serde_json::Value::Null);
    let err = text(&o.stderr);
    assert!(err.contains("warning: trace truncated at byte"), "{err}");
}

#[test]
fn dump_reconstructs_an_allocation() {
    let path = sample_file();
    let out = tmp_path("dump.bin");
    let run = |n: &str| {
        let o = vkdirty(&["dump", s(&path), "--alloc", "1", "--at-submit", n, "-o", s(&out)]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        std::fs::read(&out).unwrap()
    };
    let mut want = vec![0u8; 3 * 4096];
    assert_eq!(run("0"), want);
    want[..4096].fill(0x11);
    assert_eq!(run("1"), want);
    want[4096..4196].fill(0x22);
    want[8192..8242].fill(0x22);
    assert_eq!(run("2"), want);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);

    let o = vkdirty(&["dump", s(&path), "--alloc", "9", "--at-submit", "2", "-o", s(&out)]);
    let err = assert_clean_failure(&o, "unknown allocation");
    assert!(err.contains("it has allocation ids 1-2"), "{err}");
    assert!(err.contains("no allocation 9"), "{err}");
    let o = vkdirty(&["dump", s(&path), "--alloc", "1", "--at-submit", "3", "-o", s(&out)]);
    let err = assert_clean_failure(&o, "submit out of range");
    assert!(err.contains("--at-submit 3 is past the last submit; the trace has submits 1 to 2"), "{err}");
    let o = vkdirty(&["dump", s(&path), "--alloc", "1", "--diff", "--at-submit", "1", "--against", "5"]);
    let err = assert_clean_failure(&o, "diff submit out of range");
    assert!(err.contains("--against 5 is past the last submit; the trace has submits 1 to 2"), "{err}");
    let o = vkdirty(&["dump", s(&path), "--alloc", "9", "--diff", "--at-submit", "1", "--against", "2"]);
    let err = assert_clean_failure(&o, "diff unknown allocation");
    assert!(err.contains("no allocation 9 in the trace (it has allocation ids 1-2)"), "{err}");
}

#[test]
fn argument_errors_keep_clap_hints() {
    // A missing argument is named, with the usage.
    let o = vkdirty(&["dump", "x.vkd"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("required arguments were not provided") && err.contains("--alloc <ID>") && err.contains("Usage:"),
        "{err}"
    );
    // A misspelt flag gets clap's suggestion.
    let o = vkdirty(&["dump", "x.vkd", "--aloc", "1"]);
    let err = text(&o.stderr);
    assert!(err.contains("similar argument exists") && err.contains("--alloc"), "{err}");
    // The top-level help says the tool captures too.
    let help = text(&vkdirty(&["-h"]).stdout);
    assert!(help.contains("Capture what a Vulkan application writes") && help.contains("capture "), "{help}");
    let help = text(&vkdirty(&["--help"]).stdout);
    assert!(help.contains("vkdirty captures the memory") && help.contains("inspect"), "{help}");
}

#[test]
fn verify_whole_truncated_and_damaged() {
    let path = sample_file();
    let o = vkdirty(&["verify", s(&path)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains(": ok,"));

    let bytes = std::fs::read(&path).unwrap();
    let cut = tmp_path("cut.vkd");
    std::fs::write(&cut, &bytes[..bytes.len() - 1]).unwrap();
    let err = assert_clean_failure(&vkdirty(&["verify", s(&cut)]), "truncated");
    assert!(err.contains("truncated"), "{err}");

    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    let damaged = tmp_path("bad.vkd");
    std::fs::write(&damaged, &bad).unwrap();
    let err = assert_clean_failure(&vkdirty(&["verify", s(&damaged)]), "damaged");
    assert!(err.contains("at byte"), "{err}");
}

#[test]
fn events_one_json_line_per_block() {
    let path = sample_file();
    let o = vkdirty(&["events", s(&path)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let lines: Vec<serde_json::Value> =
        text(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    // Every sample event plus the end block.
    assert_eq!(lines.len(), sample_events().len() + 1);
    assert_eq!(lines[0]["type"], "session");
    assert_eq!(lines[0]["app"], "app");
    let dirty: Vec<_> = lines.iter().filter(|l| l["type"] == "dirty").collect();
    assert_eq!(dirty.len(), 3);
    assert_eq!(dirty[2]["runs"], serde_json::json!([[4096, 100], [8192, 50]]));
    assert_eq!(dirty[2]["bytes"], 150);
    assert_eq!(lines.last().unwrap()["type"], "end");
    assert_eq!(lines.last().unwrap()["submits"], 2);
    let offsets: Vec<u64> = lines.iter().map(|l| l["offset"].as_u64().unwrap()).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn broken_files_fail_cleanly() {
    let garbage = tmp_path("garbage.vkd");
    std::fs::write(&garbage, b"this is not a trace at all").unwrap();
    let missing = tmp_path("missing.vkd");
    for cmd in ["info", "verify", "events"] {
        let err = assert_clean_failure(&vkdirty(&[cmd, s(&garbage)]), cmd);
        assert!(err.contains("not a vkdirty trace"), "{cmd}: {err}");
        let err = assert_clean_failure(&vkdirty(&[cmd, s(&missing)]), cmd);
        assert!(err.contains("missing.vkd"), "{cmd}: {err}");
    }
    let out = tmp_path("never.bin");
    assert_clean_failure(&vkdirty(&["dump", s(&garbage), "--alloc", "1", "-o", s(&out)]), "dump");
    // A damaged block in the middle: events prints the blocks before it, then fails.
    let path = sample_file();
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let o = vkdirty(&["events", s(&path)]);
    assert_clean_failure(&o, "events on a damaged trace");
    assert!(text(&o.stdout).lines().count() >= 10);
    // info summarises the readable part and lists the damage.
    let o = vkdirty(&["info", s(&path)]);
    assert!(o.status.success() && text(&o.stdout).contains("DAMAGED"), "{}", text(&o.stdout));
    // Bad arguments: clap's whole message (what is wrong, the usage), exit 2, no panic.
    let o = vkdirty(&["dump", s(&path), "--alloc", "x", "-o", s(&out)]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("invalid value 'x'") && err.contains("--alloc <ID>") && err.contains("--help"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let o = vkdirty(&["nonsense"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("unrecognized subcommand 'nonsense'") && err.contains("Usage: vkdirty <COMMAND>"), "{err}");
    let o = vkdirty(&["captur"]);
    assert!(text(&o.stderr).contains("similar subcommand exists: 'capture'"), "{}", text(&o.stderr));
}

/// Write prediction's records: `info` says how many dirty pages came from compare and how many
/// from trusted predictions, `events` lists both kinds with their ranges.
#[test]
fn info_and_events_show_compared_and_trusted_pages() {
    let mut events = sample_events();
    // Submit 1 wrote page 0 of allocation 1 and bytes of page 0 of allocation 2.
    events.insert(events.iter().position(|e| matches!(e, Event::Submit(_))).unwrap(), {
        Event::Trusted { alloc: 1, submit: 1, ranges: vec![(0, 4096)] }
    });
    events.push(Event::Compared { alloc: 1, submit: 2, ranges: vec![(4096, 100)] });
    let path = write_file(&events, Compression::Lz4);
    let o = vkdirty(&["info", s(&path)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for needle in ["1 of them by compare", "1 of them by trusted prediction"] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let o = vkdirty(&["events", s(&path)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let lines: Vec<serde_json::Value> =
        text(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let of = |t: &str| lines.iter().find(|l| l["type"] == t).unwrap_or_else(|| panic!("no {t} line")).clone();
    assert_eq!(of("trusted")["ranges"], serde_json::json!([[0, 4096]]));
    assert_eq!(of("trusted")["submit"], 1);
    assert_eq!(of("compared")["ranges"], serde_json::json!([[4096, 100]]));
}
