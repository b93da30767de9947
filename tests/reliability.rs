//! Fault injection with the real layer and the workload (built by `scripts/test.sh` or
//! `cargo build --workspace --bins --lib`): two processes on one trace name, a symlink or FIFO
//! at the name, a full disk in the middle of a block. The application always exits 0; no
//! trace is shared, no file outside the trace is touched, and what was written is readable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vkdirty::trace::file::numbered;
use vkdirty::trace::{Summary, TraceReader};

#[path = "common/run.rs"]
mod run;
use run::LAYER_NAME;

fn bin_dir() -> PathBuf {
    run::built(&[run::LAYER_FILES[0], run::LAYER_FILES[1], run::WORKLOAD])
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("reliability");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(format!("{}-{name}", std::process::id()))
}

fn workload(trace: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    let dir = bin_dir();
    let mut c = Command::new(dir.join("vkdirty-workload"));
    for (k, _) in std::env::vars() {
        if k.starts_with("VKDIRTY_") {
            c.env_remove(k);
        }
    }
    c.env("VK_ADD_LAYER_PATH", &dir)
        .env("VK_INSTANCE_LAYERS", LAYER_NAME)
        .env("VKDIRTY_TRACE_FILE", trace)
        .envs(env.iter().copied())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits for `child` at most `secs`; kills it and fails the test when it hangs.
fn finish(mut child: Child, secs: u64, what: &str) -> Output {
    let t0 = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let o = child.wait_with_output().expect("output");
            panic!("{what} hung; stderr:\n{}", String::from_utf8_lossy(&o.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(o: &Output) -> String {
    format!("status {:?}\n--- stderr\n{}", o.status, String::from_utf8_lossy(&o.stderr))
}

fn cli(args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(bin_dir().join("vkdirty")).args(args).output().expect("run vkdirty");
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
}

/// The trace this run wrote, from its "capturing to" line.
fn captured_to(o: &Output) -> PathBuf {
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err.lines().find(|l| l.contains("capturing to ")).unwrap_or_else(|| panic!("no trace opened:\n{err}"));
    let rest = &line[line.find("capturing to ").unwrap() + "capturing to ".len()..];
    PathBuf::from(rest.split(" (backend").next().unwrap())
}

fn check_exact(trace: &Path, sidecar: &Path) {
    let (code, out) = cli(&["check-sidecar", trace.to_str().unwrap(), sidecar.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{}: {out}", trace.display());
    assert!(out.starts_with("exact"), "{out}");
}

fn remove(paths: &[&Path]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

/// Two processes given one `VKDIRTY_TRACE_FILE` (as a parent and the children it starts are):
/// each writes its own whole trace, and each trace is exact against its own process's sidecar.
#[test]
fn two_processes_on_one_name_each_get_their_own_trace() {
    let trace = tmp("shared.vkd");
    let sidecars = [tmp("shared-a.jsonl"), tmp("shared-b.jsonl")];
    remove(&[&trace, &numbered(&trace, 2)]);
    let children: Vec<Child> = sidecars
        .iter()
        .enumerate()
        .map(|(i, sc)| {
            let seed = (i + 1).to_string();
            workload(&trace, &[], &["--frames", "6", "--seed", &seed, "--sidecar", sc.to_str().unwrap()])
                .spawn()
                .expect("spawn")
        })
        .collect();
    let outs: Vec<Output> = children.into_iter().map(|c| finish(c, 120, "a workload")).collect();
    let mut used = Vec::new();
    for (o, sc) in outs.iter().zip(&sidecars) {
        assert!(o.status.success(), "{}", text(o));
        let p = captured_to(o);
        check_exact(&p, sc);
        used.push(p);
    }
    used.sort();
    let mut want = vec![trace.clone(), numbered(&trace, 2)];
    want.sort();
    assert_eq!(used, want);
    let notes: usize = outs.iter().map(|o| String::from_utf8_lossy(&o.stderr).matches("exists; writing").count()).sum();
    assert_eq!(notes, 1, "the second process logs its new name once");
    remove(&[&trace, &numbered(&trace, 2), &sidecars[0], &sidecars[1]]);
}

/// A symlink at the trace name is not followed (its target is neither written nor chmod'ed); a
/// FIFO does not hang the application; with `VKDIRTY_TRACE_EXISTS=refuse` capture is off with
/// one logged line.
#[test]
fn symlink_fifo_and_refuse_at_the_trace_name() {
    use std::os::unix::fs::PermissionsExt;
    let victim = tmp("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = tmp("link.vkd");
    remove(&[&link, &numbered(&link, 2)]);
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let o = finish(workload(&link, &[], &["--frames", "2"]).spawn().unwrap(), 120, "workload with a symlink");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(captured_to(&o), numbered(&link, 2));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777, 0o644);
    let (code, out) = cli(&["verify", numbered(&link, 2).to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");

    let fifo = tmp("fifo.vkd");
    remove(&[&fifo, &numbered(&fifo, 2)]);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let o = finish(workload(&fifo, &[], &["--frames", "2"]).spawn().unwrap(), 120, "workload with a FIFO");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(captured_to(&o), numbered(&fifo, 2));

    let taken = tmp("taken.vkd");
    std::fs::write(&taken, b"keep").unwrap();
    let o = finish(
        workload(&taken, &[("VKDIRTY_TRACE_EXISTS", "refuse")], &["--frames", "2"]).spawn().unwrap(),
        120,
        "workload with refuse",
    );
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("cannot create the trace, capture is off").count(), 1, "{err}");
    assert_eq!(std::fs::read(&taken).unwrap(), b"keep");
    assert!(!numbered(&taken, 2).exists());
    remove(&[&victim, &link, &numbered(&link, 2), &fifo, &numbered(&fifo, 2), &taken]);
}

/// A small tmpfs fills in the middle of the trace: the application exits 0, one line says why
/// capture stopped, and the trace reads as truncated, every block before the failure intact.
/// Needs permission to mount (root, or an unprivileged user namespace); says so and passes
/// without it only when neither is available.
#[test]
fn disk_full_mid_block_on_tmpfs() {
    let dir = tmp("tmpfs");
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("full.vkd");
    // The workload's trace is ~70 MB; 3 MiB fills in the middle of the dirty data.
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs"]).arg(&dir).status();
    if !matches!(mounted, Ok(s) if s.success()) {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert!(euid != 0, "running as root but mount -t tmpfs failed: {mounted:?}");
        eprintln!("skipped: not root, cannot mount a tmpfs");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Unmount(&dir);
    let o = finish(
        workload(&trace, &[("VKDIRTY_COMPRESSION", "none")], &["--frames", "6"]).spawn().unwrap(),
        180,
        "workload on a full disk",
    );
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let failures: Vec<&str> = err.lines().filter(|l| l.contains("writing the trace failed")).collect();
    assert_eq!(failures.len(), 1, "{err}");
    assert!(failures[0].contains("No space left on device"), "{}", failures[0]);
    let len = std::fs::metadata(&trace).unwrap().len();
    assert!(len > 1 << 20, "the trace holds what fitted: {len} bytes");
    let mut r = TraceReader::open(&trace).unwrap();
    let mut blocks = 0;
    while r.next_block().expect("no damage, only a cut").is_some() {
        blocks += 1;
    }
    assert!(blocks > 3 && r.truncation().is_some(), "{blocks} blocks, {:?}", r.truncation());
    let s = Summary::from_file(&trace).unwrap();
    assert!(s.truncated && s.dirty_blocks > 0, "{s:?}");
    let (code, out) = cli(&["verify", trace.to_str().unwrap()]);
    assert_eq!(code, Some(1), "a cut trace is not whole: {out}");
}

/// `fork()` in a captured process: a child that reads and writes back every mapped page exits 0
/// on every backend (as it does without the layer), and the parent's trace stays exact.
#[test]
fn forked_child_writes_mapped_memory_on_every_backend() {
    let sidecar = tmp("fork.jsonl");
    let trace = tmp("fork.vkd");
    // Without the layer first: the workload's own check.
    let mut plain = workload(&trace, &[], &["--frames", "2", "--fork"]);
    plain.env_remove("VK_INSTANCE_LAYERS");
    let o = finish(plain.spawn().unwrap(), 120, "workload --fork without the layer");
    assert!(o.status.success(), "{}", text(&o));
    for backend in ["auto", "host-import", "async-wp", "shadow-wp", "shadow", "full", "assisted"] {
        remove(&[&trace, &sidecar]);
        let mut args = vec!["--frames", "3", "--fork", "--sidecar", sidecar.to_str().unwrap()];
        if backend == "assisted" {
            args.push("--flush");
        }
        let o = finish(workload(&trace, &[("VKDIRTY_BACKEND", backend)], &args).spawn().unwrap(), 120, backend);
        assert!(o.status.success(), "{backend}: {}", text(&o));
        check_exact(&trace, &sidecar);
    }
    remove(&[&trace, &sidecar]);
}

/// Host memory the application imports itself (`VkImportMemoryHostPointerInfoEXT`), written
/// through its own pointer and never mapped: tracked from the allocation (async-wp, or full where
/// async-wp refuses), recorded as an import, and exact at every submit on every backend, also
/// `assisted` (which tracks mappings by what the application flushes: unmapped memory cannot be
/// flushed, so the import is tracked by its pages there too; before, it recorded nothing).
#[test]
fn application_imported_host_memory_is_tracked() {
    let sidecar = tmp("import.jsonl");
    let trace = tmp("import.vkd");
    let cases: [(&str, &[(&str, &str)], &str); 9] = [
        ("auto", &[], "async-wp"),
        ("host-import", &[], "async-wp"),
        ("async-wp", &[], "async-wp"),
        ("shadow-wp", &[], "async-wp"),
        ("shadow", &[], "async-wp"),
        ("full", &[], "async-wp"),
        ("auto", &[("VKDIRTY_TEST_REFUSE", "async-wp")], "full"),
        ("assisted", &[], "async-wp"),
        ("assisted", &[("VKDIRTY_TEST_REFUSE", "async-wp")], "full"),
    ];
    for (backend, extra, want) in cases {
        remove(&[&trace, &sidecar]);
        let mut env = vec![("VKDIRTY_BACKEND", backend)];
        env.extend_from_slice(extra);
        let mut args = vec!["--frames", "4", "--scenario", "import,persistent", "--sidecar", sidecar.to_str().unwrap()];
        if backend == "assisted" {
            // Its mappings are recorded by what the application flushes (the import is not).
            args.push("--flush");
        }
        let o = finish(workload(&trace, &env, &args).spawn().unwrap(), 120, backend);
        assert!(o.status.success(), "{backend}: {}", text(&o));
        check_exact(&trace, &sidecar);
        let (code, info) = cli(&["info", trace.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{info}");
        let line = info
            .lines()
            .find(|l| l.contains("application-imported host memory"))
            .unwrap_or_else(|| panic!("{backend}: {info}"));
        assert!(line.trim_start().starts_with(&format!("{want} x1")), "{backend}: {line}");
    }
    remove(&[&trace, &sidecar]);
}

/// The workload's `--rss-churn` figures (KiB): right after the frees, once settled, the peak.
struct Rss {
    after: u64,
    settled: u64,
    peak: u64,
}

fn rss_after(env: &[(&str, &str)], layer: bool, settle_kib: Option<u64>) -> Rss {
    let trace = tmp("rss.vkd");
    remove(&[&trace]);
    let settle = settle_kib.map(|k| k.to_string());
    let mut args = vec!["--rss-churn", "4000", "--rss-rounds", "2"];
    if let Some(k) = &settle {
        args.extend(["--rss-settle-kib", k]);
    }
    let mut c = workload(&trace, env, &args);
    if !layer {
        c.env_remove("VK_INSTANCE_LAYERS");
    }
    let o = finish(c.spawn().unwrap(), 300, "workload --rss-churn");
    assert!(o.status.success(), "{}", text(&o));
    let line = String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|l| l.contains("\"rss\""))
        .map(str::to_string)
        .expect("rss line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    remove(&[&trace]);
    let kib = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {line}"));
    Rss { after: kib("after_kib"), settled: kib("settled_kib"), peak: kib("peak_kib") }
}

/// Memory given back: 4000 allocations of 64 KiB mapped, written, collected and freed (twice),
/// then one more submit: once the trace writer has written what it was given (the workload waits
/// at most 10 s), the layer's resident set is within 8 MiB of the run without the layer on every
/// backend; right after the frees it may still hold what its queue holds (bounded by the queue,
/// 64 MiB; `full` reports every mapped byte again at each free).
#[test]
fn memory_is_given_back_after_the_application_frees_it() {
    let base = rss_after(&[], false, None);
    assert!(
        base.peak > base.settled + (200 << 10),
        "the churn is visible: peak {} KiB, after {} KiB",
        base.peak,
        base.settled
    );
    for backend in ["auto", "host-import", "async-wp", "shadow-wp", "shadow", "full", "assisted"] {
        let env = [("VKDIRTY_BACKEND", backend), ("VKDIRTY_LOG_LEVEL", "warn")];
        let r = rss_after(&env, true, Some(base.settled + (8 << 10)));
        eprintln!(
            "{backend}: {} KiB after, {} KiB settled, {} KiB without the layer",
            r.after, r.settled, base.settled
        );
        assert!(
            r.settled <= base.settled + (8 << 10),
            "{backend}: {} KiB resident after the frees, {} KiB without the layer",
            r.settled,
            base.settled
        );
        assert!(
            r.after <= base.after + (8 << 10) + (64 << 10),
            "{backend}: {} KiB resident right after the frees (more than the writer's queue), {} KiB without the layer",
            r.after,
            base.after
        );
    }
}
