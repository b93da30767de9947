//! Configuring and controlling captures as the Vulkan ecosystem does, with the built layer under
//! the real loader on lavapipe: settings from `vk_layer_settings.txt`, from `VK_EXT_layer_settings`
//! (the workload's `--layer-setting`) and from the environment, each checked in the trace's
//! session record, and their precedence; `VKDIRTY_LOG_FILE`; `vkGetPhysicalDeviceToolProperties`
//! through the loader (also under the validation layer); the trigger file and signal with the
//! workload (exact against its sidecar) and with vkcube under Xvfb (the captured frames are
//! exactly those while the file existed).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vkdirty::trace::{Event, SessionSetting, TraceReader};

#[path = "common/run.rs"]
mod run;

fn bin_dir() -> PathBuf {
    run::built(&[run::LAYER_FILES[0], run::LAYER_FILES[1], run::WORKLOAD])
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vkdirty-controls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A command with the layer enabled and no setting inherited from the test's environment.
fn under_layer(program: &Path, cwd: &Path) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("VKDIRTY_") || k.starts_with("VK_VKDIRTY_CAPTURE_") || k == "VK_LAYER_SETTINGS_PATH" {
            c.env_remove(k);
        }
    }
    c.env_remove("VK_LAYER_PATH")
        .env("VK_ADD_LAYER_PATH", bin_dir())
        .env("VK_INSTANCE_LAYERS", "VK_LAYER_VKDIRTY_capture")
        // No per-user settings file of whoever runs the tests.
        .env("XDG_DATA_HOME", cwd.join("xdg"))
        .current_dir(cwd);
    c
}

fn workload(cwd: &Path) -> Command {
    let mut c = under_layer(&bin_dir().join("vkdirty-workload"), cwd);
    c.args(["--scenario", "persistent", "--frames", "3"]);
    c
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn events(trace: &Path) -> Vec<Event> {
    let (ev, trunc) = TraceReader::open(trace).unwrap().events().unwrap();
    assert!(trunc.is_none(), "{trace:?} truncated: {trunc:?}");
    ev
}

fn session_settings(trace: &Path) -> Vec<SessionSetting> {
    match events(trace).into_iter().next() {
        Some(Event::Session(s)) => s.settings,
        other => panic!("first record is not a session: {other:?}"),
    }
}

/// `(value, from)` of one setting in the session record.
fn setting(list: &[SessionSetting], name: &str) -> (String, String) {
    let s = list.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name} not in the session record"));
    (s.value.clone(), s.from.clone())
}

fn map_backends(trace: &Path) -> Vec<String> {
    events(trace)
        .into_iter()
        .filter_map(|e| match e {
            Event::Map(m) => Some(m.backend.name().to_string()),
            _ => None,
        })
        .collect()
}

fn run_ok(mut c: Command, what: &str) -> Output {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{what}: {}", text(&o));
    o
}

#[test]
fn settings_only_from_vk_layer_settings_txt() {
    let d = scratch("file");
    let trace = d.join("t.vkd");
    let body = format!(
        "# written as vkconfig writes it\nkhronos_validation.enables = VK_VALIDATION_FEATURE_ENABLE_BEST_PRACTICES_EXT\n\
         vkdirty_capture.backend = shadow\nvkdirty_capture.compression = none\nvkdirty_capture.trace_file = {}\n",
        trace.display()
    );
    // The working directory's file.
    std::fs::write(d.join("vk_layer_settings.txt"), &body).unwrap();
    let o = run_ok(workload(&d), "workload");
    let file = d.join("vk_layer_settings.txt");
    let list = session_settings(&trace);
    assert_eq!(setting(&list, "BACKEND"), ("shadow".into(), format!("vkdirty_capture.backend in {}", file.display())));
    assert_eq!(setting(&list, "COMPRESSION").0, "none");
    assert_eq!(setting(&list, "FRAMES"), ("all".into(), "default".into()));
    assert!(map_backends(&trace).iter().all(|b| b == "shadow"), "{:?}", map_backends(&trace));
    // One line names every non-default value and its source.
    let line =
        text(&o).lines().find(|l| l.contains("vkdirty: info: settings: ")).map(str::to_string).expect("settings line");
    assert!(line.contains(&format!("BACKEND=shadow (vkdirty_capture.backend in {})", file.display())), "{line}");

    // VK_LAYER_SETTINGS_PATH (a directory) instead; the working directory's file is then not read.
    let other = d.join("elsewhere");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("vk_layer_settings.txt"), body.replace("= shadow", "= full")).unwrap();
    std::fs::remove_file(&trace).unwrap();
    let mut c = workload(&d);
    c.env("VK_LAYER_SETTINGS_PATH", &other);
    run_ok(c, "workload with VK_LAYER_SETTINGS_PATH");
    let list = session_settings(&trace);
    assert_eq!(
        setting(&list, "BACKEND"),
        ("full".into(), format!("vkdirty_capture.backend in {}", other.join("vk_layer_settings.txt").display()))
    );

    // The per-user file vkconfig writes, when there is no other.
    std::fs::remove_file(d.join("vk_layer_settings.txt")).unwrap();
    std::fs::remove_file(&trace).unwrap();
    let user = d.join("xdg/vulkan/settings.d");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(user.join("vk_layer_settings.txt"), body.replace("= shadow", "= async-wp")).unwrap();
    run_ok(workload(&d), "workload with the per-user file");
    assert_eq!(setting(&session_settings(&trace), "BACKEND").0, "async-wp");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn settings_only_from_vk_ext_layer_settings() {
    let d = scratch("api");
    let trace = d.join("api.vkd");
    let mut c = workload(&d);
    c.arg("--layer-setting").arg(format!("trace_file={}", trace.display()));
    c.args([
        "--layer-setting",
        "backend=shadow-wp",
        "--layer-setting",
        "submits=2-",
        "--layer-setting",
        "flush_every_submit=1",
    ]);
    // (Not under Debian 12's validation layer: its headers, 1.3.239, predate VK_EXT_layer_settings
    // and report the struct as unknown.)
    run_ok(c, "workload with --layer-setting");
    let list = session_settings(&trace);
    assert_eq!(setting(&list, "BACKEND"), ("shadow-wp".into(), "VK_EXT_layer_settings backend".into()));
    assert_eq!(setting(&list, "SUBMITS"), ("2-".into(), "VK_EXT_layer_settings submits".into()));
    assert_eq!(setting(&list, "FLUSH_EVERY_SUBMIT").0, "1");
    assert!(map_backends(&trace).iter().all(|b| b == "shadow-wp"));
    // SUBMITS=2-: capture starts at submit 2.
    let starts: Vec<u64> = events(&trace)
        .iter()
        .filter_map(|e| match e {
            Event::CaptureStart { submit, .. } => Some(*submit),
            _ => None,
        })
        .collect();
    assert_eq!(starts, [2]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn settings_from_the_environment_and_precedence() {
    let d = scratch("env");
    let trace = d.join("env.vkd");
    let log = d.join("layer.log");
    std::fs::write(
        d.join("vk_layer_settings.txt"),
        "vkdirty_capture.backend = shadow\nvkdirty_capture.frames = 2-3\nvkdirty_capture.compression = none\n",
    )
    .unwrap();
    let mut c = workload(&d);
    c.env("VKDIRTY_TRACE_FILE", &trace).env("VKDIRTY_BACKEND", "full").env("VK_VKDIRTY_CAPTURE_BACKEND", "async-wp");
    c.env("VK_VKDIRTY_CAPTURE_SHADOW_REFRESH", "always").env("VKDIRTY_LOG_FILE", &log);
    c.args([
        "--layer-setting",
        "backend=shadow-wp",
        "--layer-setting",
        "frames=1-2",
        "--layer-setting",
        "compression=lz4x",
    ]);
    let o = run_ok(c, "workload");
    let list = session_settings(&trace);
    let file = d.join("vk_layer_settings.txt");
    // VKDIRTY_* beats VK_VKDIRTY_CAPTURE_* beats VK_EXT_layer_settings beats the file.
    assert_eq!(setting(&list, "BACKEND"), ("full".into(), "VKDIRTY_BACKEND".into()));
    assert_eq!(setting(&list, "SHADOW_REFRESH"), ("always".into(), "VK_VKDIRTY_CAPTURE_SHADOW_REFRESH".into()));
    assert_eq!(setting(&list, "FRAMES"), ("1-2".into(), "VK_EXT_layer_settings frames".into()));
    // A bad value is reported and the next source is used.
    assert_eq!(
        setting(&list, "COMPRESSION"),
        ("none".into(), format!("vkdirty_capture.compression in {}", file.display()))
    );
    let out = text(&o);
    assert!(out.contains("VK_EXT_layer_settings compression: bad value \"lz4x\" (accepted: lz4, none); using the value of vkdirty_capture.compression"), "{out}");
    assert!(map_backends(&trace).iter().all(|b| b == "full"));
    // The log file has the layer's lines, as on stderr.
    let logged = std::fs::read_to_string(&log).unwrap();
    let stderr_lines: Vec<&str> = out.lines().filter(|l| l.starts_with("vkdirty: ")).collect();
    let file_lines: Vec<&str> = logged.lines().collect();
    assert!(!file_lines.is_empty());
    assert_eq!(file_lines, stderr_lines);
    // Appended, not replaced.
    std::fs::remove_file(&trace).unwrap();
    let mut c = workload(&d);
    c.env("VKDIRTY_TRACE_FILE", &trace).env("VKDIRTY_LOG_FILE", &log);
    run_ok(c, "second run");
    assert!(std::fs::read_to_string(&log).unwrap().starts_with(&logged));
    assert!(std::fs::read_to_string(&log).unwrap().len() > logged.len());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn tool_properties_through_the_loader_list_vkdirty() {
    let d = scratch("tools");
    for (layers, validation) in
        [("VK_LAYER_VKDIRTY_capture", false), ("VK_LAYER_VKDIRTY_capture:VK_LAYER_KHRONOS_validation", true)]
    {
        let mut c = under_layer(&bin_dir().join("vkdirty-workload"), &d);
        c.env("VK_INSTANCE_LAYERS", layers).env("VKDIRTY_WRITE_TRACE", "0").arg("--list-tools");
        if validation {
            c.arg("--validation");
        }
        let o = run_ok(c, layers);
        let first: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().expect("a tool")).unwrap();
        assert_eq!(first["name"], "vkdirty", "{layers}");
        assert_eq!(first["layer"], "VK_LAYER_VKDIRTY_capture");
        assert_eq!(first["version"], env!("CARGO_PKG_VERSION"));
        assert!(first["purposes"].as_str().unwrap().contains("TRACING"));
        assert!(!text(&o).contains("validation:"), "{}", text(&o));
    }
    // Without the layer, no vkdirty.
    let mut c = under_layer(&bin_dir().join("vkdirty-workload"), &d);
    c.env_remove("VK_INSTANCE_LAYERS").arg("--list-tools");
    let o = run_ok(c, "no layer");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("vkdirty"));
    let _ = std::fs::remove_dir_all(&d);
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Capture windows as `(start, stop)` events in order.
fn windows(ev: &[Event]) -> Vec<(Event, Option<Event>)> {
    let mut out: Vec<(Event, Option<Event>)> = Vec::new();
    for e in ev {
        match e {
            Event::CaptureStart { .. } => out.push((e.clone(), None)),
            Event::CaptureStop { .. } => out.last_mut().expect("a stop after a start").1 = Some(e.clone()),
            _ => {}
        }
    }
    out
}

/// Submits the trace holds so far (the layer flushes every submit in these tests).
fn submits_so_far(t: &Path) -> usize {
    TraceReader::open(t)
        .ok()
        .map_or(0, |r| r.filter_map(Result::ok).filter(|b| matches!(b.event, Some(Event::Submit(_)))).count())
}

fn wait_for_submits(t: &Path, n: usize, child: &mut std::process::Child) {
    let t0 = Instant::now();
    while submits_so_far(t) < n {
        assert!(child.try_wait().unwrap().is_none(), "the application ended before submit {n}");
        assert!(t0.elapsed() < Duration::from_secs(120), "no submit {n} after 2 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The workload with a trigger (file or signal) turned on after 40 submits and off 60 later:
/// one capture window; no dirty data of persistently mapped memory outside it; the trace is exact
/// against the sidecar at every captured submit.
fn workload_window(name: &str, env: &[(&str, &str)], on: &dyn Fn(u32), off: &dyn Fn(u32)) {
    let d = scratch(name);
    let (trace, sidecar) = (d.join("w.vkd"), d.join("w.side"));
    let mut c = under_layer(&bin_dir().join("vkdirty-workload"), &d);
    c.env("VKDIRTY_TRACE_FILE", &trace).env("VKDIRTY_FLUSH_EVERY_SUBMIT", "1").envs(env.iter().copied());
    c.args([
        "--frames",
        "200",
        "--frame-pause-ms",
        "10",
        "--scenario",
        "persistent,offset,gpu-write,mixed,remap",
        "--size",
        "64K",
    ]);
    c.arg("--sidecar").arg(&sidecar).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    wait_for_submits(&trace, 40, &mut child);
    on(child.id());
    let at = submits_so_far(&trace);
    wait_for_submits(&trace, at + 60, &mut child);
    off(child.id());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));

    let ev = events(&trace);
    let w = windows(&ev);
    assert_eq!(w.len(), 1, "one window: {w:?}");
    let (Event::CaptureStart { submit: start, .. }, Some(Event::CaptureStop { submit: stop, .. })) = &w[0] else {
        panic!("{w:?}")
    };
    assert!(*start >= 40 && stop - start >= 60, "window {start}..{stop}");
    let out = text(&o);
    assert!(out.contains(&format!("trigger: capture on at submit {start}")), "{out}");
    assert!(out.contains(&format!("trigger: capture off at submit {stop}")), "{out}");
    // Outside the window only mappings that go away (unmap, free) record their bytes, so that
    // reconstruction inside it stays exact; persistently mapped memory records nothing there.
    let unmapped: std::collections::HashSet<u64> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Unmap { alloc } => Some(*alloc),
            _ => None,
        })
        .collect();
    let last = ev.iter().filter_map(|e| if let Event::Submit(s) = e { Some(s.seq) } else { None }).max().unwrap();
    let mut inside = 0;
    for e in &ev {
        if let Event::Dirty(x) = e {
            if (*start..*stop).contains(&x.submit) {
                inside += 1;
            } else if x.submit <= last {
                assert!(
                    unmapped.contains(&x.alloc),
                    "dirty data of persistent allocation {} at submit {} outside {start}..{stop}",
                    x.alloc,
                    x.submit
                );
            }
        }
    }
    assert!(inside >= (stop - start) as usize, "every captured submit has dirty data: {inside}");
    let o =
        Command::new(env!("CARGO_BIN_EXE_vkdirty")).arg("check-sidecar").arg(&trace).arg(&sidecar).output().unwrap();
    let report = text(&o);
    assert!(o.status.success() && report.contains("workload: ok"), "{report}");
    assert!(report.contains(&format!("exact: {} submits", stop - start)), "{report}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn trigger_file_window_is_exact_for_the_workload() {
    let trig = std::env::temp_dir().join(format!("vkdirty-controls-trigger-{}", std::process::id()));
    let _ = std::fs::remove_file(&trig);
    let t = trig.to_str().unwrap();
    workload_window("trigger-file", &[("VKDIRTY_TRIGGER_FILE", t)], &|_| std::fs::write(&trig, b"").unwrap(), &|_| {
        std::fs::remove_file(&trig).unwrap()
    });
}

#[test]
fn trigger_signal_window_is_exact_for_the_workload() {
    let kill = |pid: u32| {
        let ok = Command::new("kill").args(["-USR1", &pid.to_string()]).status().unwrap().success();
        assert!(ok);
    };
    workload_window("trigger-signal", &[("VKDIRTY_TRIGGER_SIGNAL", "SIGUSR1")], &kill, &kill);
}

/// An X server for vkcube; killed on drop.
struct Xvfb(std::process::Child, String);

impl Xvfb {
    fn start() -> Xvfb {
        let n = 800 + std::process::id() % 90;
        let display = format!(":{n}");
        // A killed Xvfb leaves its lock file and socket behind; with the stale socket present the
        // wait below would return before this server listens, and vkcube would fail to connect.
        let (lock, socket) = (PathBuf::from(format!("/tmp/.X{n}-lock")), PathBuf::from(format!("/tmp/.X11-unix/X{n}")));
        let owner = std::fs::read_to_string(&lock).ok().and_then(|p| p.trim().parse::<u32>().ok());
        if !owner.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_file(&lock);
            let _ = std::fs::remove_file(&socket);
        }
        let child = Command::new("Xvfb")
            .args([display.as_str(), "-screen", "0", "320x240x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (Debian package xvfb) is needed for the vkcube test");
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(socket.exists(), "Xvfb did not start on {display}");
        Xvfb(child, display)
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Frames the trace holds so far.
fn frames_so_far(t: &Path) -> u64 {
    TraceReader::open(t)
        .ok()
        .map_or(0, |r| r.filter_map(Result::ok).filter(|b| matches!(b.event, Some(Event::Frame { .. }))).count() as u64)
}

/// vkcube under Xvfb; the trigger file is created after about 200 frames (some 0.3 s to seconds,
/// depending on load) and removed about 300 frames later. The captured frames are exactly those
/// that began after the file appeared and ended before it went (each checked against the frames'
/// timestamps), every submit of those frames has dirty data (vkcube writes its uniform buffer
/// every frame), and no other submit has any.
#[test]
fn trigger_file_window_is_exact_for_vkcube() {
    let vkcube = PathBuf::from("/usr/bin/vkcube");
    assert!(vkcube.exists(), "vkcube (Debian package vulkan-tools) is needed");
    let x = Xvfb::start();
    let d = scratch("trigger-vkcube");
    let (trace, trig) = (d.join("cube.vkd"), d.join("go"));
    let mut c = under_layer(&vkcube, &d);
    c.env("DISPLAY", &x.1).env("VKDIRTY_TRACE_FILE", &trace).env("VKDIRTY_TRIGGER_FILE", &trig);
    c.env("VKDIRTY_FLUSH_EVERY_SUBMIT", "1").args(["--c", "3000"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let wait_frames = |n: u64, child: &mut std::process::Child| {
        let t0 = Instant::now();
        while frames_so_far(&trace) < n {
            assert!(child.try_wait().unwrap().is_none(), "vkcube ended before frame {n}");
            assert!(t0.elapsed() < Duration::from_secs(120), "no frame {n} after 2 minutes");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_frames(200, &mut child);
    let on_before = now_ns();
    std::fs::write(&trig, b"").unwrap();
    let on_after = now_ns();
    wait_frames(frames_so_far(&trace) + 300, &mut child);
    let off_before = now_ns();
    std::fs::remove_file(&trig).unwrap();
    let off_after = now_ns();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));

    let ev = events(&trace);
    let mut frame_ts = std::collections::BTreeMap::new();
    let mut frame_last = std::collections::BTreeMap::new();
    for e in &ev {
        if let Event::Frame { frame, last_submit, timestamp_ns } = e {
            frame_ts.insert(*frame, *timestamp_ns);
            frame_last.insert(*frame, *last_submit);
        }
    }
    let w = windows(&ev);
    assert_eq!(w.len(), 1, "one window: {w:?}");
    let (Event::CaptureStart { frame: s, submit: s_sub }, Some(Event::CaptureStop { frame: e, submit: e_sub })) = &w[0]
    else {
        panic!("{w:?}")
    };
    let (s, e) = (*s, *e);
    // The check at the end of frame s-1 saw the file, the one at the end of frame s-2 did not.
    assert!(frame_ts[&(s - 2)] < on_after, "frame {} ended after the file appeared", s - 2);
    assert!(frame_ts[&s] > on_before, "frame {s} ended before the file appeared");
    assert!(frame_ts[&(e - 2)] < off_after, "frame {} ended after the file went", e - 2);
    assert!(frame_ts[&e] > off_before, "frame {e} ended before the file went");
    assert!(e - s >= 250, "window of {} frames", e - s);
    // Window submits are those of frames s..e-1.
    assert_eq!(*s_sub, frame_last[&(s - 1)] + 1);
    assert_eq!(*e_sub, frame_last[&(e - 1)] + 1);
    let last = ev.iter().filter_map(|x| if let Event::Submit(t) = x { Some(t.seq) } else { None }).max().unwrap();
    // Outside the window only a mapping that goes away records its bytes (vkcube's texture
    // upload, unmapped before the first submit).
    let unmapped: std::collections::HashSet<u64> =
        ev.iter().filter_map(|x| if let Event::Unmap { alloc } = x { Some(*alloc) } else { None }).collect();
    let mut with_dirty = std::collections::BTreeSet::new();
    for x in &ev {
        if let Event::Dirty(dt) = x {
            if (*s_sub..*e_sub).contains(&dt.submit) {
                with_dirty.insert(dt.submit);
            } else if dt.submit <= last {
                assert!(
                    unmapped.contains(&dt.alloc),
                    "dirty data of allocation {} at submit {} outside {s_sub}..{e_sub}",
                    dt.alloc,
                    dt.submit
                );
            }
        }
    }
    assert_eq!(with_dirty.len() as u64, e_sub - s_sub, "every captured submit has vkcube's uniform buffer write");
    let out = text(&o);
    assert!(
        out.contains(&format!("trigger: capture on from frame {s}"))
            && out.contains(&format!("trigger: capture off from frame {e}")),
        "{out}"
    );
    drop(x);
    let _ = std::fs::remove_dir_all(&d);
}
