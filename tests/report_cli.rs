//! `vkdirty report`, `info --by`, `export` and `dump --diff` on real traces: the built-in workload
//! and vkcube (under Xvfb) captured under the built layer on lavapipe. Every picture and export is
//! checked against `vkdirty info --json` of the same trace.

#[path = "common/run.rs"]
mod run;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

fn vkdirty() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vkdirty"));
    for v in ["VK_LAYER_PATH", "VK_ADD_LAYER_PATH", "VK_INSTANCE_LAYERS", "VKDIRTY_LAYER_DIR", "VKDIRTY_BACKEND"] {
        c.env_remove(v);
    }
    c.env_remove("VKDIRTY_TRACE_FILE").env_remove("VKDIRTY_FRAMES").env_remove("VKDIRTY_SUBMITS");
    c
}

fn ok(o: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{what}: {}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    stdout
}

fn run(args: &[&str]) -> String {
    ok(vkdirty().args(args).output().unwrap(), &args.join(" "))
}

/// Outputs go under the target directory; each run starts it afresh (capture refuses to
/// overwrite a trace).
fn dir() -> PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-cli");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
    .clone()
}

fn built_dir() -> PathBuf {
    run::built(&[run::LAYER_FILES[0], run::LAYER_FILES[1], run::WORKLOAD])
}

/// A trace of the built-in workload (captured once per test binary).
fn workload_trace() -> &'static Path {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let built = built_dir();
        let trace = dir().join("workload.vkd");
        let o = vkdirty()
            .args(["capture", "--backend", "async-wp", "-o"])
            .arg(&trace)
            .arg("--")
            .arg(built.join("vkdirty-workload"))
            .args(["--frames", "12"])
            .output()
            .unwrap();
        ok(o, "capture workload");
        trace
    })
}

/// An X server for vkcube; killed on drop.
struct Xvfb(std::process::Child, String);

impl Xvfb {
    /// Xvfb picks a free display itself (`-displayfd`) and says which once it accepts
    /// connections: a fixed number could meet a stale socket or another test's server.
    fn start() -> Xvfb {
        use std::io::BufRead;
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1", "-screen", "0", "320x240x24", "-nolisten", "tcp"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("Xvfb (Debian package xvfb) is needed for the vkcube trace");
        let mut line = String::new();
        let read = std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let n: u32 = match (read, line.trim().parse()) {
            (Ok(_), Ok(n)) => n,
            _ => {
                let _ = child.kill();
                panic!("Xvfb did not report its display ({line:?})");
            }
        };
        Xvfb(child, format!(":{n}"))
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM lets Xvfb remove its socket and lock file.
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn info(trace: &Path, by: &str) -> Value {
    serde_json::from_str(&run(&["info", "--json", "--by", by, trace.to_str().unwrap()])).unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// One element of the page, with its attributes and the nearest enclosing `svg` id and
/// `data-alloc` group.
#[derive(Debug)]
struct El {
    name: String,
    attrs: HashMap<String, String>,
    svg: Option<String>,
    group_alloc: Option<String>,
}

impl El {
    fn num(&self, k: &str) -> u64 {
        self.attrs.get(k).unwrap_or_else(|| panic!("{} has no {k}", self.name)).parse().unwrap()
    }
    fn class(&self) -> &str {
        self.attrs.get("class").map_or("", String::as_str)
    }
}

/// Parses the page strictly (every element closed, names matching): the report is well-formed
/// XHTML as well as HTML.
fn parse(html: &str) -> Vec<El> {
    use quick_xml::events::Event as X;
    assert!(html.starts_with("<!DOCTYPE html>"), "no doctype");
    assert!(!html.contains("<script"), "the report runs no script");
    let mut r = quick_xml::Reader::from_str(html);
    r.config_mut().check_end_names = true;
    let mut stack: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    let mut out = Vec::new();
    let mut depth0_closed = false;
    loop {
        let ev = r.read_event().unwrap_or_else(|e| panic!("report is not well-formed at {}: {e}", r.buffer_position()));
        let (e, empty) = match &ev {
            X::Start(e) => (e, false),
            X::Empty(e) => (e, true),
            X::End(_) => {
                stack.pop();
                depth0_closed |= stack.is_empty();
                continue;
            }
            X::Eof => break,
            _ => continue,
        };
        let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
        let mut attrs = HashMap::new();
        for a in e.attributes() {
            let a = a.unwrap();
            attrs.insert(
                String::from_utf8_lossy(a.key.as_ref()).into_owned(),
                String::from_utf8_lossy(&a.value).into_owned(),
            );
        }
        let (psvg, palloc) = stack.last().map(|s| (s.1.clone(), s.2.clone())).unwrap_or((None, None));
        let svg = if name == "svg" { attrs.get("id").cloned() } else { psvg };
        let group_alloc = if name == "g" { attrs.get("data-alloc").cloned().or(palloc) } else { palloc };
        out.push(El { name: name.clone(), attrs, svg: svg.clone(), group_alloc: group_alloc.clone() });
        if !empty {
            stack.push((name, svg, group_alloc));
        }
    }
    assert!(stack.is_empty() && depth0_closed, "unclosed elements: {stack:?}");
    assert_eq!(out[0].name, "html");
    out
}

/// The report of `trace` holds a heatmap and a timeline whose numbers, and whose allocation
/// table, equal `info --json --by allocation`.
fn check_report(trace: &Path, name: &str) -> (Vec<El>, Value) {
    check_report_with(trace, name, "submit")
}

fn check_report_with(trace: &Path, name: &str, columns: &str) -> (Vec<El>, Value) {
    let html_path = dir().join(format!("{name}.html"));
    let png_path = dir().join(format!("{name}.png"));
    let (t, h, p) = (trace.to_str().unwrap(), html_path.to_str().unwrap(), png_path.to_str().unwrap());
    run(&["report", t, "-o", h, "--png", p, "--columns", columns]);
    let html = std::fs::read_to_string(&html_path).unwrap();
    let els = parse(&html);
    for e in &els {
        assert!(!e.attrs.contains_key("src") && e.name != "script" && e.name != "link", "external resource: {e:?}");
    }
    let j = info(trace, "allocation");
    let summary_dirty = u(&j["dirty_bytes"]);
    let summary_pages = u(&j["dirty_pages"]);

    // Totals.
    let totals = els.iter().find(|e| e.attrs.get("id").map(String::as_str) == Some("totals")).expect("totals");
    for (attr, key) in [
        ("data-dirty-bytes", "dirty_bytes"),
        ("data-dirty-pages", "dirty_pages"),
        ("data-submits", "submits"),
        ("data-frames", "frames"),
        ("data-allocations", "allocations"),
        ("data-file-bytes", "file_bytes"),
    ] {
        assert_eq!(totals.num(attr), u(&j[key]), "{name}: {attr}");
    }

    // Allocation table = by_allocation.
    let rows: Vec<&El> = els.iter().filter(|e| e.name == "tr" && e.attrs.contains_key("data-alloc")).collect();
    let by = j["by_allocation"].as_array().unwrap();
    assert_eq!(rows.len(), by.len(), "{name}: one table row per allocation");
    let mut want_pages: BTreeMap<String, u64> = BTreeMap::new();
    for (r, a) in rows.iter().zip(by) {
        assert_eq!(r.num("data-alloc"), u(&a["id"]));
        assert_eq!(r.num("data-size"), u(&a["size"]));
        assert_eq!(r.num("data-maps"), u(&a["maps"]));
        assert_eq!(r.num("data-dirty-pages"), u(&a["dirty_pages"]));
        assert_eq!(r.num("data-dirty-bytes"), u(&a["dirty_bytes"]));
        let first = a["first_submit"].as_u64().map_or(String::new(), |n| n.to_string());
        assert_eq!(r.attrs["data-first"], first);
        if u(&a["dirty_pages"]) > 0 {
            want_pages.insert(u(&a["id"]).to_string(), u(&a["dirty_pages"]));
        }
    }
    assert_eq!(by.iter().map(|a| u(&a["dirty_bytes"])).sum::<u64>(), summary_dirty);

    // Heatmap: each allocation row's cells add up to its dirty pages; all cells to the total.
    let svg = els.iter().find(|e| e.attrs.get("id").map(String::as_str) == Some("heatmap-svg")).expect("heatmap");
    assert_eq!(svg.attrs["data-columns"], columns);
    let cells: Vec<&El> =
        els.iter().filter(|e| e.svg.as_deref() == Some("heatmap-svg") && e.class() == "cell").collect();
    assert!(!cells.is_empty(), "{name}: heatmap has no cells");
    let mut got_pages: BTreeMap<String, u64> = BTreeMap::new();
    for c in &cells {
        *got_pages.entry(c.group_alloc.clone().expect("cell outside a row")).or_default() += c.num("data-pages");
    }
    assert_eq!(got_pages.values().sum::<u64>(), summary_pages, "{name}: heatmap pages");
    assert_eq!(cells.iter().map(|c| c.num("data-bytes")).sum::<u64>(), summary_dirty, "{name}: heatmap bytes");
    if !got_pages.contains_key("other") {
        assert_eq!(got_pages, want_pages, "{name}: heatmap rows");
    }

    // Timeline: bins add up to the dirty bytes and to every byte of the file after its header.
    let bins: Vec<&El> =
        els.iter().filter(|e| e.svg.as_deref() == Some("timeline-svg") && e.class() == "bin").collect();
    assert!(!bins.is_empty(), "{name}: timeline has no bins");
    assert_eq!(bins.iter().map(|b| b.num("data-dirty-bytes")).sum::<u64>(), summary_dirty);
    assert_eq!(bins.iter().map(|b| b.num("data-dirty-pages")).sum::<u64>(), summary_pages);
    let first_block = run(&["events", trace.to_str().unwrap()]);
    let first_block: Value = serde_json::from_str(first_block.lines().next().unwrap()).unwrap();
    let header = u(&first_block["offset"]);
    assert_eq!(bins.iter().map(|b| b.num("data-trace-bytes")).sum::<u64>() + header, u(&j["file_bytes"]));
    assert!(els.iter().any(|e| e.svg.as_deref() == Some("timeline-svg") && e.class() == "trace-bytes"));

    // The PNG decodes and is as wide as drawn.
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png_path).unwrap()));
    let info = dec.read_info().unwrap().info().clone();
    assert!(info.width >= 1024 && info.height > 80, "{}x{}", info.width, info.height);
    (els, j)
}

#[test]
fn workload_report_matches_info() {
    let trace = workload_trace();
    let (els, j) = check_report(trace, "workload");
    assert!(u(&j["submits"]) >= 12);
    // Session facts.
    let html = std::fs::read_to_string(dir().join("workload.html")).unwrap();
    assert!(html.contains("vkdirty-workload") && html.contains("llvmpipe"), "session");
    assert!(html.contains("async-wp"));
    assert!(els.iter().any(|e| e.attrs.get("id").map(String::as_str) == Some("session")));
}

#[test]
fn vkcube_report_has_frames_and_matches_info() {
    let vkcube = ["/usr/bin/vkcube", "/usr/local/bin/vkcube"].into_iter().find(|p| Path::new(p).exists());
    let vkcube = vkcube.expect("vkcube (Debian package vulkan-tools) is needed: scripts/test.sh installs it");
    let built = built_dir();
    let x = Xvfb::start();
    let trace = dir().join("vkcube.vkd");
    let o = vkdirty()
        .args(["capture", "-o"])
        .arg(&trace)
        .arg("--layer-dir")
        .arg(&built)
        .args(["--", vkcube, "--c", "40"])
        .env("DISPLAY", &x.1)
        .env("VKDIRTY_FRAMES", "5-30")
        .output()
        .unwrap();
    ok(o, "capture vkcube");
    let (els, j) = check_report(&trace, "vkcube");
    assert!(u(&j["frames"]) >= 20, "frames: {}", j["frames"]);
    assert!(u(&j["dirty_bytes"]) > 0);
    let frame_lines = els.iter().filter(|e| e.svg.as_deref() == Some("heatmap-svg") && e.class() == "frame").count();
    assert!(frame_lines >= 20, "frame boundaries drawn: {frame_lines}");
    assert!(els.iter().any(|e| e.class() == "capture"), "capture window drawn");
    // The session's settings: the frame window set for this run, with where it came from.
    assert!(
        els.iter().any(|e| e.class() == "setting" && e.attrs.get("data-name").map(String::as_str) == Some("FRAMES")),
        "FRAMES setting shown"
    );
    assert!(std::fs::read_to_string(dir().join("vkcube.html")).unwrap().contains("FRAMES=5-30"));

    // One column per frame: no frame lines, one timeline bin per frame.
    let (els, j) = check_report_with(&trace, "vkcube-frames", "frame");
    assert!(!els.iter().any(|e| e.class() == "frame"));
    let bins = els.iter().filter(|e| e.svg.as_deref() == Some("timeline-svg") && e.class() == "bin").count();
    assert_eq!(bins as u64, u(&j["frames"]) + 1, "40 frames and the unfinished one");

    // Frames and submits: each table adds up to the totals.
    for by in ["frame", "submit"] {
        let v = info(&trace, by);
        let rows = v[format!("by_{by}")].as_array().unwrap();
        assert_eq!(rows.iter().map(|r| u(&r["dirty_bytes"])).sum::<u64>(), u(&v["dirty_bytes"]), "by {by}");
        assert_eq!(rows.iter().map(|r| u(&r["dirty_pages"])).sum::<u64>(), u(&v["dirty_pages"]), "by {by}");
    }
    let v = info(&trace, "submit");
    let windows = v["capture_windows"].as_array().unwrap();
    assert_eq!(windows.len(), 1);
    assert_eq!(u(&windows[0]["start_frame"]), 5);
}

#[test]
fn csv_sums_equal_info() {
    let trace = workload_trace();
    let csv = dir().join("workload.csv");
    run(&["export", trace.to_str().unwrap(), "--format", "csv", "-o", csv.to_str().unwrap()]);
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("submit,frame,allocation,offset,pages,bytes"));
    let j = info(trace, "allocation");
    let mut per_alloc: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut per_submit: BTreeMap<u64, u64> = BTreeMap::new();
    for l in lines {
        let f: Vec<u64> = l.split(',').map(|x| x.parse().unwrap()).collect();
        assert_eq!(f.len(), 6, "{l}");
        let e = per_alloc.entry(f[2]).or_default();
        e.0 += f[4];
        e.1 += f[5];
        *per_submit.entry(f[0]).or_default() += f[5];
    }
    assert_eq!(per_alloc.values().map(|v| v.1).sum::<u64>(), u(&j["dirty_bytes"]));
    assert_eq!(per_alloc.values().map(|v| v.0).sum::<u64>(), u(&j["dirty_pages"]));
    for a in j["by_allocation"].as_array().unwrap() {
        let got = per_alloc.get(&u(&a["id"])).copied().unwrap_or((0, 0));
        assert_eq!(got, (u(&a["dirty_pages"]), u(&a["dirty_bytes"])), "allocation {}", a["id"]);
    }
    let s = info(trace, "submit");
    for r in s["by_submit"].as_array().unwrap() {
        assert_eq!(per_submit.get(&u(&r["seq"])).copied().unwrap_or(0), u(&r["dirty_bytes"]), "submit {}", r["seq"]);
    }
}

#[test]
fn perfetto_json_is_trace_event_format_and_totals_match() {
    let trace = workload_trace();
    let out = dir().join("workload.json");
    run(&["export", trace.to_str().unwrap(), "--format", "perfetto", "-o", out.to_str().unwrap()]);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).expect("valid JSON");
    let events = v["traceEvents"].as_array().expect("traceEvents array");
    let j = info(trace, "allocation");
    let (mut counter_bytes, mut slice_bytes, mut slice_trace_bytes, mut slices) = (0, 0, 0, 0);
    let mut maps = 0;
    for e in events {
        for k in ["ph", "ts", "pid", "tid", "name"] {
            assert!(e.get(k).is_some(), "event without {k}: {e}");
        }
        assert!(e["ts"].is_number() && e["pid"].is_number() && e["tid"].is_number() && e["name"].is_string(), "{e}");
        match e["ph"].as_str().unwrap() {
            "C" => counter_bytes += u(&e["args"]["dirty_bytes"]),
            "X" => {
                assert!(e["dur"].as_f64().unwrap() >= 0.0, "{e}");
                slices += 1;
                slice_bytes += u(&e["args"]["dirty_bytes"]);
                slice_trace_bytes += u(&e["args"]["trace_bytes"]);
            }
            "i" => {
                assert!(matches!(e["s"].as_str(), Some("g" | "p" | "t")), "{e}");
                maps += u64::from(e["name"].as_str().unwrap().starts_with("map "));
            }
            "M" => assert!(e["args"]["name"].is_string()),
            other => panic!("unexpected phase {other}"),
        }
    }
    assert_eq!(counter_bytes, u(&j["dirty_bytes"]));
    assert_eq!(slice_bytes, u(&j["dirty_bytes"]));
    let header = u(&serde_json::from_str::<Value>(run(&["events", trace.to_str().unwrap()]).lines().next().unwrap())
        .unwrap()["offset"]);
    assert_eq!(slice_trace_bytes + header, u(&j["file_bytes"]));
    assert!(slices >= u(&j["submits"]), "{slices} slices for {} submits", j["submits"]);
    assert_eq!(maps, u(&j["maps"]));
    // Timestamps of counters never go backwards per track.
    let mut last: HashMap<String, f64> = HashMap::new();
    for e in events.iter().filter(|e| e["ph"] == "C") {
        let t = e["ts"].as_f64().unwrap();
        let prev = last.insert(e["name"].as_str().unwrap().to_string(), t).unwrap_or(0.0);
        assert!(t >= prev, "{e}");
    }
}

#[test]
fn dump_diff_lists_what_changed_between_two_submits() {
    let trace = workload_trace();
    let j = info(trace, "allocation");
    // An allocation written at many submits.
    let a = j["by_allocation"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["first_submit"].as_u64().is_some() && u(&a["last_submit"]) >= u(&a["first_submit"]) + 3)
        .expect("an allocation written at several submits");
    let (id, first) = (u(&a["id"]).to_string(), u(&a["first_submit"]));
    let (sa, sb) = ((first + 1).to_string(), (first + 2).to_string());
    let t = trace.to_str().unwrap();
    // Ground truth: the two dumps, compared byte by byte.
    let da = dir().join("a.bin");
    let db = dir().join("b.bin");
    run(&["dump", t, "--alloc", &id, "--at-submit", &sa, "-o", da.to_str().unwrap()]);
    run(&["dump", t, "--alloc", &id, "--at-submit", &sb, "-o", db.to_str().unwrap()]);
    let (ba, bb) = (std::fs::read(&da).unwrap(), std::fs::read(&db).unwrap());
    let changed = ba.iter().zip(&bb).filter(|(x, y)| x != y).count();
    assert!(changed > 0, "the allocation changed between submits {sa} and {sb}");
    let text = run(&["dump", t, "--alloc", &id, "--diff", "--at-submit", &sa, "--against", &sb, "--max-dump", "64"]);
    let head = text.lines().next().unwrap();
    assert!(head.contains(&format!(": {changed} bytes in ")), "{head}");
    // Every listed range holds only bytes inside changed stretches, and covers every change.
    let mut covered = vec![false; ba.len()];
    for l in text.lines().skip(1).take_while(|l| l.starts_with("  0x")) {
        let r = l.trim().split(' ').next().unwrap();
        let (s, e) = r.split_once("..").unwrap();
        let (s, e) = (usize::from_str_radix(&s[2..], 16).unwrap(), usize::from_str_radix(&e[2..], 16).unwrap());
        assert!(ba[s] != bb[s] && ba[e - 1] != bb[e - 1], "{l}");
        covered[s..e].iter_mut().for_each(|c| *c = true);
    }
    assert!(ba.iter().zip(&bb).enumerate().all(|(i, (x, y))| x == y || covered[i]));
    // The hexdump is bounded.
    assert!(text.contains("hexdump stops after 64 changed bytes") || changed <= 64);
    let dumped = text.lines().filter(|l| l.starts_with("+ ")).count();
    assert!((1..=64).contains(&dumped), "{dumped} hexdump lines");
    // Same submit: nothing differs.
    let same = run(&["dump", t, "--alloc", &id, "--diff", "--at-submit", &sa, "--against", &sa]);
    assert!(same.contains(": 0 bytes in 0 ranges"), "{same}");
}

#[test]
fn bad_arguments_fail_cleanly() {
    let trace = workload_trace();
    let t = trace.to_str().unwrap();
    let o = vkdirty()
        .args(["dump", t, "--alloc", "999999", "--diff", "--at-submit", "1", "--against", "2"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no allocation 999999"));
    let o = vkdirty().args(["dump", t, "--alloc", "1", "--diff", "--at-submit", "1"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = vkdirty().args(["export", t, "--format", "xml", "-o", "/dev/null"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = vkdirty().args(["report", "/nonexistent.vkd"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("cannot open") && !err.contains("panicked"), "{err}");
}

#[test]
fn many_allocations_and_submits_are_binned_and_summed() {
    // 300 allocations, 1024 submits (4 per heatmap column), 256 frames: the heatmap merges
    // columns, folds the allocations past the first 39 into one row, and samples frame lines.
    let trace = dir().join("synth.vkd");
    let o = Command::new(env!("CARGO_BIN_EXE_trace-synth"))
        .arg(&trace)
        .args(["--mib", "8", "--allocs", "300", "--pages-per-submit", "2"])
        .output()
        .unwrap();
    ok(o, "trace-synth");
    let (els, j) = check_report(&trace, "synth");
    assert_eq!(u(&j["submits"]), 1024);
    assert_eq!(u(&j["frames"]), 256);
    let svg = els.iter().find(|e| e.attrs.get("id").map(String::as_str) == Some("heatmap-svg")).unwrap();
    assert_eq!(svg.num("data-bin-width"), 4);
    assert_eq!(svg.num("data-bins"), 256);
    let rows: Vec<&El> = els.iter().filter(|e| e.name == "g" && e.class() == "row").collect();
    assert_eq!(rows.len(), 40);
    assert_eq!(rows.last().unwrap().attrs["data-alloc"], "other");
    let frames = els.iter().filter(|e| e.svg.as_deref() == Some("heatmap-svg") && e.class() == "frame").count();
    // Every third of 256 frame ends: at most 120 lines.
    assert_eq!(frames, 256 / 3, "frame lines");
    // Frames in the tables: 4 submits each.
    let v = info(&trace, "frame");
    let f = v["by_frame"].as_array().unwrap();
    assert_eq!(f.len(), 256);
    assert!(f.iter().all(|f| u(&f["submits"]) == 4), "{}", f[0]);
    assert_eq!((u(&f[1]["first_submit"]), u(&f[1]["last_submit"])), (5, 8));
}

#[test]
fn csv_frames_equal_info_by_submit() {
    let trace = dir().join("synth-frames.vkd");
    let o = Command::new(env!("CARGO_BIN_EXE_trace-synth"))
        .arg(&trace)
        .args(["--mib", "1", "--allocs", "10", "--pages-per-submit", "1"])
        .output()
        .unwrap();
    ok(o, "trace-synth");
    let csv = dir().join("synth-frames.csv");
    run(&["export", trace.to_str().unwrap(), "--format", "csv", "-o", csv.to_str().unwrap()]);
    let v = info(&trace, "submit");
    let frame_of: HashMap<u64, u64> =
        v["by_submit"].as_array().unwrap().iter().map(|s| (u(&s["seq"]), u(&s["frame"]))).collect();
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut rows = 0;
    for l in text.lines().skip(1) {
        let f: Vec<u64> = l.split(',').map(|x| x.parse().unwrap()).collect();
        assert_eq!(Some(&f[1]), frame_of.get(&f[0]), "{l}");
        // trace-synth presents after every 4th submit.
        assert_eq!(f[1], (f[0] - 1) / 4 + 1, "{l}");
        rows += 1;
    }
    assert_eq!(rows, 256);
}

#[test]
fn report_of_a_truncated_trace_says_so() {
    let full = std::fs::read(workload_trace()).unwrap();
    let cut = dir().join("cut.vkd");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let html = dir().join("cut.html");
    let o = vkdirty().args(["report", cut.to_str().unwrap(), "-o", html.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("truncated"), "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    let els = parse(&page);
    assert!(page.contains("trace truncated at byte"), "status shown");
    let j = info(&cut, "allocation");
    assert_eq!(j["truncated"], Value::Bool(true));
    let totals = els.iter().find(|e| e.attrs.get("id").map(String::as_str) == Some("totals")).unwrap();
    assert_eq!(totals.num("data-dirty-bytes"), u(&j["dirty_bytes"]));
    assert!(u(&j["dirty_bytes"]) > 0);
}

#[test]
fn damaged_trace_is_salvaged_alike_by_report_and_exports() {
    let t = workload_trace();
    let mut bytes = std::fs::read(t).unwrap();
    // Flip a payload byte of a dirty block in the middle.
    let events = run(&["events", t.to_str().unwrap()]);
    let dirty: Vec<u64> = events
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "dirty")
        .map(|v| u(&v["offset"]))
        .collect();
    let at = dirty[dirty.len() / 2] as usize + 16 + 30;
    bytes[at] ^= 0x5a;
    let bad = dir().join("damaged.vkd");
    std::fs::write(&bad, &bytes).unwrap();
    let b = bad.to_str().unwrap();
    let j = info(&bad, "allocation");
    assert_eq!(j["damage"].as_array().map(Vec::len), Some(1), "{}", j["damage"]);
    assert!(u(&j["dirty_bytes"]) > 0);

    let html = dir().join("damaged.html");
    let o = vkdirty().args(["report", b, "-o", html.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("1 damaged ranges"), "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    let els = parse(&page);
    assert_eq!(els.iter().filter(|e| e.class().contains("damage")).count(), 1);
    let totals = els.iter().find(|e| e.attrs.get("id").map(String::as_str) == Some("totals")).unwrap();
    assert_eq!(totals.num("data-dirty-bytes"), u(&j["dirty_bytes"]));
    let cells: u64 = els.iter().filter(|e| e.class() == "cell").map(|e| e.num("data-bytes")).sum();
    assert_eq!(cells, u(&j["dirty_bytes"]));

    let csv = dir().join("damaged.csv");
    let o = vkdirty().args(["export", b, "--format", "csv", "-o", csv.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stderr).contains("damaged"));
    let sum: u64 = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(sum, u(&j["dirty_bytes"]));

    // dump --diff across the damage still answers, with a warning when the allocation was hit.
    let o =
        vkdirty().args(["dump", b, "--alloc", "9", "--diff", "--at-submit", "1", "--against", "30"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
