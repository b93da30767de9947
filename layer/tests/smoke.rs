//! The layer under the real Vulkan loader on lavapipe: a small ash program (this test binary,
//! re-run as a child process) is captured through `VK_ADD_LAYER_PATH` + `VK_INSTANCE_LAYERS`, and
//! the trace is checked record by record.
// These tests drive the Vulkan API directly: every unsafe call is a plain Vulkan call on
// objects the test just created, so the blocks carry no individual SAFETY lines.
#![allow(clippy::undocumented_unsafe_blocks)]

#[path = "../../tests/common/run.rs"]
mod run;
#[path = "../../tests/common/trace.rs"]
mod trace_at;

use ash::vk;
use std::collections::BTreeSet;
use std::process::Command;
use trace_at::{dirty_bytes, dirty_pages};
use vkdirty::guard::BackendKind;
use vkdirty::trace::{Event, TraceReader};

const CHILD_ENV: &str = "VKDIRTY_SMOKE_CHILD";

/// What the child did, as it reports it on stdout.
#[derive(Debug, Default)]
struct ChildReport {
    page: u64,
    /// `name -> VkDeviceMemory` handle value.
    handles: Vec<(String, u64)>,
    /// `(query, size, alignment)` of a 100-byte buffer.
    reqs: Vec<(String, u64, u64)>,
    /// What the application read back after each host synchronisation point.
    reads: Vec<String>,
}

/// Runs the child under the layer with `env` and returns its report and the trace's events.
fn capture(name: &str, env: &[(&str, &str)]) -> (ChildReport, Vec<Event>, String) {
    let dir = run::fresh_layer();
    let trace = std::env::temp_dir().join(format!("vkdirty-smoke-{name}-{}.vkd", std::process::id()));
    let _ = std::fs::remove_file(&trace);
    let mut cmd = run::self_under_layers(CHILD_ENV, &dir, run::LAYER_NAME, &trace);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run::output_within(cmd, std::time::Duration::from_secs(90));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "child failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    let mut report = ChildReport::default();
    // The test harness prints "test child ... " before the child's first line.
    for line in stdout.lines().filter_map(|l| l.find("SMOKE ").map(|i| &l[i..])) {
        if let Some(rest) = line.strip_prefix("SMOKE page ") {
            report.page = rest.trim().parse().unwrap();
        } else if let Some(rest) = line.strip_prefix("SMOKE req ") {
            let f: Vec<&str> = rest.split_whitespace().collect();
            report.reqs.push((f[0].to_string(), f[1].parse().unwrap(), f[2].parse().unwrap()));
        } else if let Some(rest) = line.strip_prefix("SMOKE read ") {
            report.reads.push(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("SMOKE handle ") {
            let (n, h) = rest.split_once(' ').unwrap();
            report.handles.push((n.to_string(), h.trim().parse().unwrap()));
        }
    }
    assert!(report.page > 0, "child did not report; stdout:\n{stdout}\nstderr:\n{stderr}");
    let events = trace_at::take_whole(&trace, &stderr);
    (report, events, format!("{stdout}\n{stderr}"))
}

/// Allocation id of the allocation the child named `name`.
fn alloc_id(events: &[Event], r: &ChildReport, name: &str) -> u64 {
    let handle = r.handles.iter().find(|(n, _)| n == name).map(|(_, h)| *h).expect("handle");
    events
        .iter()
        .find_map(|e| match e {
            Event::Allocation(a) if a.handle == handle => Some(a.id),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Allocation record for {name} (handle {handle:#x})"))
}

fn check_trace(backend: BackendKind, r: &ChildReport, events: &[Event], exact: bool) {
    let page = r.page;
    // Session first, with the names the child gave.
    match events.first() {
        Some(Event::Session(s)) => {
            assert_eq!(s.app_name, "vkdirty-smoke");
            assert_eq!(s.engine_name, "smoke-engine");
            assert!(!s.device_name.is_empty());
            assert_ne!(s.api_version, 0);
            assert_eq!(s.pid, s.pid.max(1));
        }
        other => panic!("first record is not a Session: {other:?}"),
    }
    assert!(matches!(events.last(), Some(Event::End(_))), "trace does not end with End");

    let a = alloc_id(events, r, "A");
    let b = alloc_id(events, r, "B");
    let c = alloc_id(events, r, "C");
    for e in events {
        if let Event::Allocation(al) = e {
            if al.id == a {
                assert_eq!(al.size, 16 * page);
                assert_ne!(al.property_flags & vk::MemoryPropertyFlags::HOST_VISIBLE.as_raw(), 0);
            }
        }
    }
    let maps: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Map(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    let map_of = |id: u64| maps.iter().find(|m| m.alloc == id).unwrap_or_else(|| panic!("no Map of {id}"));
    assert_eq!((map_of(a).offset, map_of(a).size), (0, 16 * page));
    // VK_WHOLE_SIZE resolved.
    assert_eq!((map_of(b).offset, map_of(b).size), (2 * page, 6 * page));
    assert_eq!((map_of(c).offset, map_of(c).size), (100, 5000));
    for m in &maps {
        assert_eq!(m.backend, backend, "{m:?}");
    }

    let submits: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Submit(s) => Some(s.seq),
            _ => None,
        })
        .collect();
    assert_eq!(submits, vec![1, 2, 3]);
    let kinds: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            Event::Submit(s) => Some(s.kind),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec![0, 0, 1]);
    // Dirty records come before their submit.
    let pos_submit1 = events.iter().position(|e| matches!(e, Event::Submit(s) if s.seq == 1)).unwrap();
    assert!(events[..pos_submit1].iter().any(|e| matches!(e, Event::Dirty(d) if d.alloc == a && d.submit == 1)));

    // A, submit 1: 100 bytes in page 1 and all of page 5.
    let want1: Vec<u8> = (0..100u64).map(|i| 0xA0 ^ i as u8).collect();
    assert_eq!(dirty_bytes(events, a, 1, page + 10, 100), Some(want1));
    assert_eq!(dirty_bytes(events, a, 1, 5 * page, page), Some(vec![0x55; page as usize]));
    // A, at unmap (after submit 1): page 9.
    assert_eq!(dirty_bytes(events, a, 2, 9 * page, 8), Some(vec![0x99; 8]));
    // B, mapped at 2 pages: mapping offset 0 is allocation offset 2 pages.
    assert_eq!(dirty_bytes(events, b, 2, 2 * page, 16), Some(vec![0xB0; 16]));
    // C, mapped at byte 100: mapping offset 0 is allocation offset 100.
    assert_eq!(dirty_bytes(events, c, 2, 100, 4), Some(vec![0xC0; 4]));
    // B after submit 2: written, flushed (a Flush record and its Dirty before submit 3).
    assert_eq!(dirty_bytes(events, b, 3, 3 * page, 4), Some(vec![0xB1; 4]));
    assert!(events.iter().any(|e| matches!(e, Event::Flush { alloc, .. } if *alloc == b)));
    assert!(events.iter().any(|e| matches!(e, Event::Unmap { alloc } if *alloc == a)));
    assert!(events.iter().any(|e| matches!(e, Event::Free { alloc } if *alloc == b)));

    if exact {
        // Write tracking: exactly the pages written.
        assert_eq!(dirty_pages(events, a, 1, page), BTreeSet::from([1, 5]));
        assert_eq!(dirty_pages(events, a, 2, page), BTreeSet::from([9]));
        assert_eq!(dirty_pages(events, b, 2, page), BTreeSet::from([2]));
    }
}

#[test]
fn capture_auto_backend() {
    let (r, events, stderr) = capture("auto", &[]);
    // auto takes the first backend that works here; exactness is asserted for the async-WP ones.
    let backend = events
        .iter()
        .find_map(|e| match e {
            Event::Map(m) => Some(m.backend),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Map record; stderr:\n{stderr}"));
    check_trace(backend, &r, &events, matches!(backend, BackendKind::AsyncWp | BackendKind::OwnedWp));
}

#[test]
fn capture_async_wp() {
    let (r, events, _) = capture("async-wp", &[("VKDIRTY_BACKEND", "async-wp")]);
    check_trace(BackendKind::AsyncWp, &r, &events, true);
}

#[test]
fn capture_shadow_wp() {
    let (r, events, _) = capture("shadow-wp", &[("VKDIRTY_BACKEND", "shadow-wp")]);
    check_trace(BackendKind::ShadowWp, &r, &events, true);
}

#[test]
fn auto_takes_shadow_wp_where_async_wp_refuses() {
    let (r, events, out) =
        capture("auto-refused", &[("VKDIRTY_TEST_REFUSE", "async-wp"), ("VKDIRTY_HOST_IMPORT", "0")]);
    check_trace(BackendKind::ShadowWp, &r, &events, true);
    let why = "async-wp refused a mapping: refused for testing (VKDIRTY_TEST_REFUSE)";
    for e in &events {
        if let Event::Map(m) = e {
            assert_eq!(m.reason, format!("{why}; using shadow-wp"));
        }
    }
    assert_eq!(out.matches(why).count(), 1, "logged once:\n{out}");
}

/// Applications linked with libvulkan put the loader's `vkGetInstanceProcAddr` & co. in the global
/// scope; the layer must still hand the loader its own functions (else the chain loops back into
/// the loader and deadlocks).
#[test]
fn works_when_libvulkan_is_in_the_global_scope() {
    let (r, events, _) = capture("global", &[("VKDIRTY_SMOKE_GLOBAL", "1"), ("VKDIRTY_BACKEND", "async-wp")]);
    check_trace(BackendKind::AsyncWp, &r, &events, true);
}

#[test]
fn capture_full() {
    let (r, events, _) = capture("full", &[("VKDIRTY_BACKEND", "full"), ("VKDIRTY_COMPRESSION", "none")]);
    check_trace(BackendKind::Full, &r, &events, false);
}

#[test]
fn capture_assisted_records_only_flushed_ranges() {
    let (r, events, _) = capture("assisted", &[("VKDIRTY_BACKEND", "assisted")]);
    let page = r.page;
    let (a, b) = (alloc_id(&events, &r, "A"), alloc_id(&events, &r, "B"));
    assert!(events.iter().all(|e| !matches!(e, Event::Map(m) if m.backend != BackendKind::Assisted)));
    // A was never flushed: nothing of it is recorded.
    assert!(!events.iter().any(|e| matches!(e, Event::Dirty(d) if d.alloc == a)));
    // B's flush covered its whole mapping (VK_WHOLE_SIZE from 2 pages): both writes are in it,
    // recorded for the next submit (3).
    assert_eq!(dirty_bytes(&events, b, 3, 2 * page, 16), Some(vec![0xB0; 16]));
    assert_eq!(dirty_bytes(&events, b, 3, 3 * page, 4), Some(vec![0xB1; 4]));
    assert_eq!(dirty_pages(&events, b, 3, page), (2..8).collect());
    let flush = events.iter().find_map(|e| match e {
        Event::Flush { alloc, ranges } if *alloc == b => Some(ranges.clone()),
        _ => None,
    });
    assert_eq!(flush, Some(vec![(2 * page, 6 * page)]));
}

#[test]
fn capture_shadow() {
    let (r, events, _) = capture("shadow", &[("VKDIRTY_BACKEND", "shadow")]);
    check_trace(BackendKind::Shadow, &r, &events, true);
}

#[test]
fn several_instances_devices_and_threads() {
    let (r, events, stderr) = capture("multi", &[("VKDIRTY_SMOKE_MULTI", "1"), ("VKDIRTY_BACKEND", "async-wp")]);
    let ids: Vec<u64> = (0..2).map(|d| alloc_id(&events, &r, &format!("D{d}"))).collect();
    let devices: BTreeSet<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Allocation(a) => Some(a.device),
            _ => None,
        })
        .collect();
    assert_eq!(devices.len(), 2, "allocations of two devices");
    let submits = events.iter().filter(|e| matches!(e, Event::Submit(_))).count();
    // Two threads with 8 submits each, then one more on device 1 after instance 0 is gone.
    assert_eq!(submits, 17, "stderr:\n{stderr}");
    assert!(matches!(events.last(), Some(Event::End(t)) if t.submits == 17));
    let mut replay = vkdirty::trace::Replay::new();
    for e in &events {
        replay.apply(e, 0).expect("consistent trace");
    }
    for (d, &id) in ids.iter().enumerate() {
        for pg in 0..4u64 {
            let mut got = [0u8; 16];
            replay.read(id, pg * r.page, &mut got).expect("allocation in the trace");
            let want = if d == 1 && pg == 3 { 0xEE } else { 0x10 * (d as u8 + 1) + pg as u8 };
            assert_eq!(got, [want; 16], "device {d} page {pg}");
        }
    }
}

#[test]
fn validation_layer_beside_it_reports_nothing() {
    for layers in
        ["VK_LAYER_VKDIRTY_capture:VK_LAYER_KHRONOS_validation", "VK_LAYER_KHRONOS_validation:VK_LAYER_VKDIRTY_capture"]
    {
        for backend in [BackendKind::AsyncWp, BackendKind::OwnedWp] {
            let (r, events, out) =
                capture("validation", &[("VK_INSTANCE_LAYERS", layers), ("VKDIRTY_BACKEND", backend.name())]);
            assert!(!out.contains("Validation Error") && !out.contains("VUID-"), "{layers} {backend}:\n{out}");
            check_trace(backend, &r, &events, true);
        }
    }
    // The check sees a message when there is one.
    let (_, _, out) = capture(
        "validation-provoked",
        &[
            ("VK_INSTANCE_LAYERS", "VK_LAYER_VKDIRTY_capture:VK_LAYER_KHRONOS_validation"),
            ("VKDIRTY_SMOKE_PROVOKE", "1"),
        ],
    );
    assert!(out.contains("VUID-vkUnmapMemory-memory-00689"), "{out}");
}

#[test]
fn memory_requirements_are_page_aligned_when_a_shadow_may_be_used() {
    // auto may use a shadow: every query reports whole pages.
    let (r, _, _) = capture("align", &[]);
    assert_eq!(r.reqs.len(), 3);
    for (api, size, align) in &r.reqs {
        assert_eq!((*size % r.page, *align % r.page), (0, 0), "{api}: {size} {align}");
        assert!(*size >= 100 && *align >= r.page);
    }
    // async-wp tracks the real memory: the driver's answer is passed through unchanged, and it is
    // not page-sized on lavapipe (so the check above could fail).
    let (r, _, _) = capture("noalign", &[("VKDIRTY_BACKEND", "async-wp")]);
    assert!(r.reqs.iter().all(|(_, size, _)| *size < r.page), "{:?}", r.reqs);
    let (r2, _, _) = capture("align-off", &[("VKDIRTY_ALIGN_REQUIREMENTS", "0")]);
    assert_eq!(r.reqs, r2.reqs);
}

/// An X server for presenting (Xvfb); killed on drop.
struct Xvfb {
    child: std::process::Child,
    display: String,
}

impl Xvfb {
    /// The server picks a free display itself (`-displayfd`): one derived from the process id
    /// can collide with a stale lock or socket another run left in /tmp.
    fn start() -> Xvfb {
        use std::io::BufRead;
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1", "-screen", "0", "320x240x24", "-nolisten", "tcp"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("Xvfb (Debian package xvfb) is needed to test vkQueuePresentKHR");
        let mut line = String::new();
        let read = std::io::BufReader::new(child.stdout.take().expect("Xvfb stdout")).read_line(&mut line);
        let n: u32 = match (read, line.trim().parse()) {
            (Ok(_), Ok(n)) => n,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("Xvfb did not report its display ({line:?})");
            }
        };
        Xvfb { child, display: format!(":{n}") }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn present_ends_frames_and_frame_ranges_select_submits() {
    let x = Xvfb::start();
    let (r, events, out) = capture(
        "present",
        &[
            ("VKDIRTY_SMOKE_PRESENT", "1"),
            ("DISPLAY", x.display.as_str()),
            ("VKDIRTY_BACKEND", "async-wp"),
            ("VKDIRTY_FRAMES", "2-3"),
        ],
    );
    let frames: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Frame { frame, last_submit, .. } => Some((*frame, *last_submit)),
            _ => None,
        })
        .collect();
    assert_eq!(frames, (1..=5).map(|f| (f, f)).collect::<Vec<_>>(), "{out}");
    let marks: Vec<&Event> =
        events.iter().filter(|e| matches!(e, Event::CaptureStart { .. } | Event::CaptureStop { .. })).collect();
    assert_eq!(marks, vec![&Event::CaptureStart { frame: 2, submit: 2 }, &Event::CaptureStop { frame: 4, submit: 4 }]);
    let a = alloc_id(&events, &r, "P");
    // Frame f writes page f-1; frame 1's write is kept for the first captured submit.
    assert_eq!(dirty_pages(&events, a, 1, r.page), BTreeSet::new());
    assert_eq!(dirty_pages(&events, a, 2, r.page), BTreeSet::from([0, 1]));
    assert_eq!(dirty_pages(&events, a, 3, r.page), BTreeSet::from([2]));
    for s in 4..=6 {
        assert_eq!(dirty_pages(&events, a, s, r.page), BTreeSet::new(), "submit {s}");
    }
    assert!(matches!(events.last(), Some(Event::End(t)) if t.frames == 5 && t.submits == 5));
}

/// The application reads what the GPU wrote into memory it has mapped, after each kind of host
/// synchronisation point, and its own writes elsewhere in the mapping survive.
#[test]
fn gpu_writes_are_visible_after_host_synchronisation() {
    let want: Vec<String> = ["fence", "queue-idle", "device-idle", "fence-status"]
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{w} {:#x} {:#x}", 0x11u8, 0xA0 + i as u32))
        .collect();
    for backend in ["async-wp", "shadow-wp", "shadow", "full"] {
        let (r, events, out) =
            capture(&format!("gpu-write-{backend}"), &[("VKDIRTY_SMOKE_GPU_WRITE", "1"), ("VKDIRTY_BACKEND", backend)]);
        assert_eq!(r.reads, want, "{backend}:\n{out}");
        assert!(matches!(events.last(), Some(Event::End(_))));
    }
    // Without the refresh, a shadow shows stale bytes: the check above can fail.
    let (r, _, _) = capture(
        "gpu-write-stale",
        &[("VKDIRTY_SMOKE_GPU_WRITE", "1"), ("VKDIRTY_BACKEND", "shadow-wp"), ("VKDIRTY_SHADOW_REFRESH", "never")],
    );
    assert_ne!(r.reads, want);
    // The shadow backend can instead trap the application's reads.
    let (r, _, out) = capture(
        "gpu-write-reads",
        &[
            ("VKDIRTY_SMOKE_GPU_WRITE", "1"),
            ("VKDIRTY_BACKEND", "shadow"),
            ("VKDIRTY_SHADOW_REFRESH", "never"),
            ("VKDIRTY_SHADOW_READS", "1"),
        ],
    );
    assert_eq!(r.reads, want, "{out}");
}

/// The workload (built beside the layer) maps and unmaps every frame and frees memory while it is
/// mapped; with persistent shadows (kept across unmap and map, released at free) its own
/// read-back check still passes.
#[test]
fn persistent_shadows_under_the_workload() {
    let dir = run::fresh_layer();
    let workload = run::built(&[run::WORKLOAD]).join(run::WORKLOAD);
    for backend in ["shadow", "shadow-wp"] {
        let trace = std::env::temp_dir().join(format!("vkdirty-smoke-persistent-{backend}-{}.vkd", std::process::id()));
        let mut cmd = Command::new(&workload);
        cmd.args(["--scenario", "remap,unaligned,churn,gpu-write", "--frames", "6"])
            .env("VK_ADD_LAYER_PATH", &dir)
            .env("VK_INSTANCE_LAYERS", run::LAYER_NAME)
            .env("VKDIRTY_TRACE_FILE", &trace)
            .env("VKDIRTY_BACKEND", backend)
            .env("VKDIRTY_PERSISTENT_SHADOW", "1")
            .env_remove("VK_LAYER_PATH");
        let out = run::output_within(cmd, std::time::Duration::from_secs(120));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{backend}: {text}");
        let (events, _) = TraceReader::open(&trace).unwrap().events().unwrap();
        let _ = std::fs::remove_file(&trace);
        // Every mapping went through the shadow backend (none fell back), several times each.
        let maps: Vec<&vkdirty::trace::Map> = events
            .iter()
            .filter_map(|e| match e {
                Event::Map(m) => Some(m),
                _ => None,
            })
            .collect();
        assert!(maps.len() > 10 && maps.iter().all(|m| m.backend.name() == backend), "{backend}: {maps:?}");
        assert!(matches!(events.last(), Some(Event::End(_))));

        // Outside a SUBMITS window a shadow's writes must still reach the real memory.
        let mut cmd = Command::new(&workload);
        cmd.args(["--frames", "6"])
            .env("VK_ADD_LAYER_PATH", &dir)
            .env("VK_INSTANCE_LAYERS", run::LAYER_NAME)
            .env("VKDIRTY_TRACE_FILE", &trace)
            .env("VKDIRTY_BACKEND", backend)
            .env("VKDIRTY_SUBMITS", "3-4")
            .env_remove("VK_LAYER_PATH");
        let out = run::output_within(cmd, std::time::Duration::from_secs(120));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{backend} with a submit window: {text}");
        let (events, _) = TraceReader::open(&trace).unwrap().events().unwrap();
        let _ = std::fs::remove_file(&trace);
        assert!(events.iter().any(|e| matches!(e, Event::CaptureStart { submit: 3, .. })));
        assert!(!events.iter().any(|e| matches!(e, Event::Dirty(d) if d.submit > 5)), "{backend}");
    }
}

#[test]
fn trace_is_whole_when_the_app_never_destroys_its_instance() {
    let (_, events, stderr) = capture("leak", &[("VKDIRTY_SMOKE_LEAK", "1"), ("VKDIRTY_BACKEND", "full")]);
    assert!(matches!(events.first(), Some(Event::Session(_))));
    match events.last() {
        Some(Event::End(t)) => assert_eq!(t.submits, 3),
        other => panic!("no End record at the end: {other:?}\nstderr:\n{stderr}"),
    }
    assert!(stderr.contains("trace closed (the process exits)"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// The child: a small Vulkan program.

fn host_coherent_type(props: &vk::PhysicalDeviceMemoryProperties) -> u32 {
    let want = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
    (0..props.memory_type_count)
        .find(|&i| props.memory_types[i as usize].property_flags.contains(want))
        .expect("a host-visible coherent memory type")
}

#[test]
#[ignore = "child process of the smoke tests"]
fn child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // SAFETY: small, valid Vulkan programs; every handle is used as the spec requires.
    unsafe {
        if std::env::var_os("VKDIRTY_SMOKE_MULTI").is_some() {
            run_child_multi()
        } else if std::env::var_os("VKDIRTY_SMOKE_PRESENT").is_some() {
            run_child_present()
        } else if std::env::var_os("VKDIRTY_SMOKE_GPU_WRITE").is_some() {
            run_child_gpu_write()
        } else {
            run_child()
        }
    }
}

unsafe fn run_child() {
    let page = vkdirty::guard::page_size() as u64;
    println!("SMOKE page {page}");
    if std::env::var_os("VKDIRTY_SMOKE_GLOBAL").is_some() {
        // As an application linked with libvulkan: its vk* symbols are in the global scope, where
        // they could interpose on the layer's exported functions of the same names.
        let h = unsafe { libc::dlopen(c"libvulkan.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        assert!(!h.is_null(), "libvulkan.so.1");
    }
    let entry = unsafe { ash::Entry::load() }.expect("load libvulkan");
    let app = vk::ApplicationInfo::default()
        .application_name(c"vkdirty-smoke")
        .engine_name(c"smoke-engine")
        .api_version(vk::API_VERSION_1_3);
    let instance = unsafe { entry.create_instance(&vk::InstanceCreateInfo::default().application_info(&app), None) }
        .expect("vkCreateInstance");
    let pd = unsafe { instance.enumerate_physical_devices() }.expect("devices")[0];
    let mem_props = unsafe { instance.get_physical_device_memory_properties(pd) };
    let ty = host_coherent_type(&mem_props);
    let prio = [1.0f32];
    let qci = [vk::DeviceQueueCreateInfo::default().queue_family_index(0).queue_priorities(&prio)];
    let mut f13 = vk::PhysicalDeviceVulkan13Features::default().synchronization2(true);
    let dci = vk::DeviceCreateInfo::default().queue_create_infos(&qci).push_next(&mut f13);
    let device = unsafe { instance.create_device(pd, &dci, None) }.expect("vkCreateDevice");
    let queue = unsafe { device.get_device_queue(0, 0) };
    let fence = unsafe { device.create_fence(&vk::FenceCreateInfo::default(), None) }.unwrap();
    let submit = |n: u32| unsafe {
        if n == 2 {
            device.queue_submit2(queue, &[vk::SubmitInfo2::default()], fence).unwrap();
        } else {
            device.queue_submit(queue, &[vk::SubmitInfo::default()], fence).unwrap();
        }
        device.wait_for_fences(&[fence], true, u64::MAX).unwrap();
        device.reset_fences(&[fence]).unwrap();
    };
    let alloc = |name: &str, size: u64| unsafe {
        let m = device
            .allocate_memory(&vk::MemoryAllocateInfo::default().allocation_size(size).memory_type_index(ty), None)
            .expect("vkAllocateMemory");
        println!("SMOKE handle {name} {}", vk::Handle::as_raw(m));
        m
    };

    // Memory requirements of a small buffer through each query.
    unsafe {
        let bci = vk::BufferCreateInfo::default().size(100).usage(vk::BufferUsageFlags::TRANSFER_SRC);
        let buf = device.create_buffer(&bci, None).unwrap();
        let r1 = device.get_buffer_memory_requirements(buf);
        let mut r2 = vk::MemoryRequirements2::default();
        device.get_buffer_memory_requirements2(&vk::BufferMemoryRequirementsInfo2::default().buffer(buf), &mut r2);
        let mut r3 = vk::MemoryRequirements2::default();
        device.get_device_buffer_memory_requirements(
            &vk::DeviceBufferMemoryRequirements::default().create_info(&bci),
            &mut r3,
        );
        for (api, r) in [("1", r1), ("2", r2.memory_requirements), ("device", r3.memory_requirements)] {
            println!("SMOKE req {api} {} {}", r.size, r.alignment);
        }
        device.destroy_buffer(buf, None);
    }

    let a = alloc("A", 16 * page);
    let b = alloc("B", 8 * page);
    let c = alloc("C", 4 * page);

    let pa = unsafe { device.map_memory(a, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()) }.unwrap() as *mut u8;
    for i in 0..100u64 {
        unsafe { *pa.add((page + 10 + i) as usize) = 0xA0 ^ i as u8 };
    }
    unsafe { std::ptr::write_bytes(pa.add(5 * page as usize), 0x55, page as usize) };
    submit(0); // 1
    unsafe { std::ptr::write_bytes(pa.add(9 * page as usize), 0x99, 8) };
    unsafe { device.unmap_memory(a) };

    let pb = unsafe { device.map_memory(b, 2 * page, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()) }.unwrap() as *mut u8;
    unsafe { std::ptr::write_bytes(pb, 0xB0, 16) };
    let pc = unsafe { device.map_memory(c, 100, 5000, vk::MemoryMapFlags::empty()) }.unwrap() as *mut u8;
    unsafe { std::ptr::write_bytes(pc, 0xC0, 4) };
    submit(0); // 2
    unsafe { std::ptr::write_bytes(pb.add(page as usize), 0xB1, 4) };
    let range = vk::MappedMemoryRange::default().memory(b).offset(2 * page).size(vk::WHOLE_SIZE);
    unsafe { device.flush_mapped_memory_ranges(&[range]) }.unwrap();
    submit(2); // 3, vkQueueSubmit2

    if std::env::var_os("VKDIRTY_SMOKE_LEAK").is_some() {
        // The application forgets to clean up: the layer closes the trace at exit.
        std::process::exit(0);
    }
    if std::env::var_os("VKDIRTY_SMOKE_PROVOKE").is_some() {
        // Invalid on purpose: A is not mapped any more.
        unsafe { device.unmap_memory(a) };
    }
    unsafe {
        device.unmap_memory(c);
        device.free_memory(a, None);
        // Freed while mapped: an implicit unmap.
        device.free_memory(b, None);
        device.free_memory(c, None);
        device.destroy_fence(fence, None);
        device.destroy_device(None);
        instance.destroy_instance(None);
    }
}

/// Two instances, a device each, written and submitted from one thread per device; the first
/// instance is destroyed while the second keeps capturing.
unsafe fn run_child_multi() {
    let page = vkdirty::guard::page_size();
    println!("SMOKE page {page}");
    let entry = unsafe { ash::Entry::load() }.expect("load libvulkan");
    let app = vk::ApplicationInfo::default()
        .application_name(c"vkdirty-smoke")
        .engine_name(c"smoke-engine")
        .api_version(vk::API_VERSION_1_1);
    struct Dev {
        instance: ash::Instance,
        device: ash::Device,
        queue: vk::Queue,
        fence: vk::Fence,
        mem: vk::DeviceMemory,
        ptr: usize,
    }
    let mut devs = Vec::new();
    for d in 0..2 {
        let instance =
            unsafe { entry.create_instance(&vk::InstanceCreateInfo::default().application_info(&app), None) }
                .expect("vkCreateInstance");
        let pd = unsafe { instance.enumerate_physical_devices() }.expect("devices")[0];
        let ty = host_coherent_type(&unsafe { instance.get_physical_device_memory_properties(pd) });
        let prio = [1.0f32];
        let qci = [vk::DeviceQueueCreateInfo::default().queue_family_index(0).queue_priorities(&prio)];
        let device =
            unsafe { instance.create_device(pd, &vk::DeviceCreateInfo::default().queue_create_infos(&qci), None) }
                .expect("vkCreateDevice");
        let queue = unsafe { device.get_device_queue(0, 0) };
        let fence = unsafe { device.create_fence(&vk::FenceCreateInfo::default(), None) }.unwrap();
        let info = vk::MemoryAllocateInfo::default().allocation_size(4 * page as u64).memory_type_index(ty);
        let mem = unsafe { device.allocate_memory(&info, None) }.expect("vkAllocateMemory");
        println!("SMOKE handle D{d} {}", vk::Handle::as_raw(mem));
        let ptr = unsafe { device.map_memory(mem, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()) }.unwrap() as usize;
        devs.push(Dev { instance, device, queue, fence, mem, ptr });
    }
    std::thread::scope(|s| {
        for (d, dev) in devs.iter().enumerate() {
            s.spawn(move || {
                for i in 0..8usize {
                    let v = 0x10 * (d as u8 + 1) + (i % 4) as u8;
                    // SAFETY: inside this thread's own mapping.
                    unsafe { std::ptr::write_bytes((dev.ptr + (i % 4) * page) as *mut u8, v, 16) };
                    unsafe {
                        dev.device.queue_submit(dev.queue, &[vk::SubmitInfo::default()], dev.fence).unwrap();
                        dev.device.wait_for_fences(&[dev.fence], true, u64::MAX).unwrap();
                        dev.device.reset_fences(&[dev.fence]).unwrap();
                    }
                }
            });
        }
    });
    let last = devs.pop().expect("two devices");
    let first = devs.pop().expect("two devices");
    unsafe {
        first.device.unmap_memory(first.mem);
        first.device.free_memory(first.mem, None);
        first.device.destroy_fence(first.fence, None);
        first.device.destroy_device(None);
        first.instance.destroy_instance(None);
        // The other instance still captures.
        std::ptr::write_bytes((last.ptr + 3 * page) as *mut u8, 0xEE, 16);
        last.device.queue_submit(last.queue, &[vk::SubmitInfo::default()], last.fence).unwrap();
        last.device.wait_for_fences(&[last.fence], true, u64::MAX).unwrap();
        last.device.unmap_memory(last.mem);
        last.device.free_memory(last.mem, None);
        last.device.destroy_fence(last.fence, None);
        last.device.destroy_device(None);
        last.instance.destroy_instance(None);
    }
}

/// Presents five frames to an X11 window (on Xvfb); frame f writes page f-1 and submits once.
unsafe fn run_child_present() {
    type XOpenDisplay = unsafe extern "C" fn(*const std::ffi::c_char) -> *mut c_void;
    type XDefaultRootWindow = unsafe extern "C" fn(*mut c_void) -> std::ffi::c_ulong;
    type XCreateSimpleWindow = unsafe extern "C" fn(
        *mut c_void,
        std::ffi::c_ulong,
        i32,
        i32,
        u32,
        u32,
        u32,
        std::ffi::c_ulong,
        std::ffi::c_ulong,
    ) -> std::ffi::c_ulong;
    type XMapWindow = unsafe extern "C" fn(*mut c_void, std::ffi::c_ulong) -> i32;
    type XFlush = unsafe extern "C" fn(*mut c_void) -> i32;
    use std::ffi::c_void;
    unsafe fn sym<T>(lib: *mut c_void, name: &std::ffi::CStr) -> T {
        let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
        assert!(!p.is_null(), "{name:?}");
        unsafe { std::mem::transmute_copy(&p) }
    }
    let page = vkdirty::guard::page_size();
    println!("SMOKE page {page}");
    let x11 = unsafe { libc::dlopen(c"libX11.so.6".as_ptr(), libc::RTLD_NOW) };
    assert!(!x11.is_null(), "libX11.so.6");
    let (dpy, win) = unsafe {
        let dpy = sym::<XOpenDisplay>(x11, c"XOpenDisplay")(std::ptr::null());
        assert!(!dpy.is_null(), "cannot open the X display");
        let root = sym::<XDefaultRootWindow>(x11, c"XDefaultRootWindow")(dpy);
        let win = sym::<XCreateSimpleWindow>(x11, c"XCreateSimpleWindow")(dpy, root, 0, 0, 64, 64, 0, 0, 0);
        sym::<XMapWindow>(x11, c"XMapWindow")(dpy, win);
        sym::<XFlush>(x11, c"XFlush")(dpy);
        (dpy, win)
    };

    let entry = unsafe { ash::Entry::load() }.expect("load libvulkan");
    let app = vk::ApplicationInfo::default().application_name(c"vkdirty-smoke").api_version(vk::API_VERSION_1_1);
    let exts = [ash::khr::surface::NAME.as_ptr(), ash::khr::xlib_surface::NAME.as_ptr()];
    let ici = vk::InstanceCreateInfo::default().application_info(&app).enabled_extension_names(&exts);
    let instance = unsafe { entry.create_instance(&ici, None) }.expect("vkCreateInstance");
    let xlib = ash::khr::xlib_surface::Instance::new(&entry, &instance);
    let surface_fn = ash::khr::surface::Instance::new(&entry, &instance);
    let surface =
        unsafe { xlib.create_xlib_surface(&vk::XlibSurfaceCreateInfoKHR::default().dpy(dpy.cast()).window(win), None) }
            .expect("vkCreateXlibSurfaceKHR");
    let pd = unsafe { instance.enumerate_physical_devices() }.expect("devices")[0];
    assert!(unsafe { surface_fn.get_physical_device_surface_support(pd, 0, surface) }.unwrap());
    let ty = host_coherent_type(&unsafe { instance.get_physical_device_memory_properties(pd) });
    let prio = [1.0f32];
    let qci = [vk::DeviceQueueCreateInfo::default().queue_family_index(0).queue_priorities(&prio)];
    let dexts = [ash::khr::swapchain::NAME.as_ptr()];
    let dci = vk::DeviceCreateInfo::default().queue_create_infos(&qci).enabled_extension_names(&dexts);
    let device = unsafe { instance.create_device(pd, &dci, None) }.expect("vkCreateDevice");
    let queue = unsafe { device.get_device_queue(0, 0) };
    let caps = unsafe { surface_fn.get_physical_device_surface_capabilities(pd, surface) }.unwrap();
    let format = unsafe { surface_fn.get_physical_device_surface_formats(pd, surface) }.unwrap()[0];
    let swapchain_fn = ash::khr::swapchain::Device::new(&instance, &device);
    let extent = if caps.current_extent.width == u32::MAX {
        vk::Extent2D { width: 64, height: 64 }
    } else {
        caps.current_extent
    };
    let sci = vk::SwapchainCreateInfoKHR::default()
        .surface(surface)
        .min_image_count(caps.min_image_count.max(2).min(if caps.max_image_count == 0 {
            u32::MAX
        } else {
            caps.max_image_count
        }))
        .image_format(format.format)
        .image_color_space(format.color_space)
        .image_extent(extent)
        .image_array_layers(1)
        .image_usage(vk::ImageUsageFlags::COLOR_ATTACHMENT)
        .image_sharing_mode(vk::SharingMode::EXCLUSIVE)
        .pre_transform(caps.current_transform)
        .composite_alpha(vk::CompositeAlphaFlagsKHR::OPAQUE)
        .present_mode(vk::PresentModeKHR::FIFO)
        .clipped(true);
    let swapchain = unsafe { swapchain_fn.create_swapchain(&sci, None) }.expect("vkCreateSwapchainKHR");
    let fence = unsafe { device.create_fence(&vk::FenceCreateInfo::default(), None) }.unwrap();
    let info = vk::MemoryAllocateInfo::default().allocation_size(8 * page as u64).memory_type_index(ty);
    let mem = unsafe { device.allocate_memory(&info, None) }.unwrap();
    println!("SMOKE handle P {}", vk::Handle::as_raw(mem));
    let ptr = unsafe { device.map_memory(mem, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()) }.unwrap() as *mut u8;
    for f in 0..5usize {
        unsafe {
            std::ptr::write_bytes(ptr.add(f * page), f as u8 + 1, 8);
            device.queue_submit(queue, &[vk::SubmitInfo::default()], vk::Fence::null()).unwrap();
            let (index, _) =
                swapchain_fn.acquire_next_image(swapchain, u64::MAX, vk::Semaphore::null(), fence).expect("acquire");
            device.wait_for_fences(&[fence], true, u64::MAX).unwrap();
            device.reset_fences(&[fence]).unwrap();
            let chains = [swapchain];
            let indices = [index];
            let present = vk::PresentInfoKHR::default().swapchains(&chains).image_indices(&indices);
            swapchain_fn.queue_present(queue, &present).expect("vkQueuePresentKHR");
        }
    }
    unsafe {
        device.device_wait_idle().unwrap();
        device.unmap_memory(mem);
        device.free_memory(mem, None);
        device.destroy_fence(fence, None);
        swapchain_fn.destroy_swapchain(swapchain, None);
        device.destroy_device(None);
        surface_fn.destroy_surface(surface, None);
        instance.destroy_instance(None);
    }
}

/// The GPU fills page 2 of a persistently mapped buffer (value 0xA0 + i for the i-th way of
/// waiting); the CPU wrote page 0 (0x11) before. Prints what the CPU reads back.
unsafe fn run_child_gpu_write() {
    let page = vkdirty::guard::page_size() as u64;
    println!("SMOKE page {page}");
    let entry = unsafe { ash::Entry::load() }.expect("load libvulkan");
    let app = vk::ApplicationInfo::default().application_name(c"vkdirty-smoke").api_version(vk::API_VERSION_1_1);
    let instance =
        unsafe { entry.create_instance(&vk::InstanceCreateInfo::default().application_info(&app), None) }.unwrap();
    let pd = unsafe { instance.enumerate_physical_devices() }.unwrap()[0];
    let mem_props = unsafe { instance.get_physical_device_memory_properties(pd) };
    let prio = [1.0f32];
    let qci = [vk::DeviceQueueCreateInfo::default().queue_family_index(0).queue_priorities(&prio)];
    let device =
        unsafe { instance.create_device(pd, &vk::DeviceCreateInfo::default().queue_create_infos(&qci), None) }.unwrap();
    let queue = unsafe { device.get_device_queue(0, 0) };
    unsafe {
        let buf = device
            .create_buffer(
                &vk::BufferCreateInfo::default().size(4 * page).usage(vk::BufferUsageFlags::TRANSFER_DST),
                None,
            )
            .unwrap();
        let req = device.get_buffer_memory_requirements(buf);
        let ty = (0..mem_props.memory_type_count)
            .find(|&i| {
                req.memory_type_bits & (1 << i) != 0
                    && mem_props.memory_types[i as usize]
                        .property_flags
                        .contains(vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT)
            })
            .expect("host-visible coherent type for the buffer");
        let mem = device
            .allocate_memory(&vk::MemoryAllocateInfo::default().allocation_size(req.size).memory_type_index(ty), None)
            .unwrap();
        println!("SMOKE handle G {}", vk::Handle::as_raw(mem));
        device.bind_buffer_memory(buf, mem, 0).unwrap();
        let p = device.map_memory(mem, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()).unwrap() as *mut u8;
        std::ptr::write_bytes(p, 0x11, page as usize);
        let pool =
            device.create_command_pool(&vk::CommandPoolCreateInfo::default().queue_family_index(0), None).unwrap();
        let cb = device
            .allocate_command_buffers(
                &vk::CommandBufferAllocateInfo::default().command_pool(pool).command_buffer_count(1),
            )
            .unwrap()[0];
        let fence = device.create_fence(&vk::FenceCreateInfo::default(), None).unwrap();
        for (i, how) in ["fence", "queue-idle", "device-idle", "fence-status"].iter().enumerate() {
            let v = 0xA0 + i as u32;
            device.reset_command_buffer(cb, vk::CommandBufferResetFlags::empty()).unwrap();
            device.begin_command_buffer(cb, &vk::CommandBufferBeginInfo::default()).unwrap();
            device.cmd_fill_buffer(cb, buf, 2 * page, page, u32::from_le_bytes([v as u8; 4]));
            device.end_command_buffer(cb).unwrap();
            let cbs = [cb];
            device.queue_submit(queue, &[vk::SubmitInfo::default().command_buffers(&cbs)], fence).unwrap();
            match *how {
                "fence" => device.wait_for_fences(&[fence], true, u64::MAX).unwrap(),
                "queue-idle" => device.queue_wait_idle(queue).unwrap(),
                "device-idle" => device.device_wait_idle().unwrap(),
                _ => {
                    while !device.get_fence_status(fence).unwrap() {
                        std::thread::yield_now();
                    }
                }
            }
            // Read right after this way of waiting (no other wait in between).
            println!("SMOKE read {how} {:#x} {:#x}", *p, *p.add(2 * page as usize) as u32);
            device.reset_fences(&[fence]).unwrap();
        }
        device.destroy_fence(fence, None);
        device.destroy_command_pool(pool, None);
        device.unmap_memory(mem);
        device.destroy_buffer(buf, None);
        device.free_memory(mem, None);
        device.destroy_device(None);
        instance.destroy_instance(None);
    }
}
