#!/usr/bin/env python3
"""Capture-overhead benchmark driver (standard library only). Called by scripts/bench.sh.

`run`    runs every workload under every configuration, alternating the configurations'
         order per repetition, and appends one JSON line per run to a results file.
`render` turns results files into the "Capture overhead" section of docs/benchmarks.md,
         replacing only the text between this script's markers.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import bench_gfxr
import bench_twoqueue

# The vkdirty backends to try, in table order. A new backend is one more name here; backends
# this build lacks are found by a probe run and left out with the reason.
VKDIRTY_BACKENDS = ["async-wp", "shadow-wp", "shadow", "full", "assisted", "host-import"]
# gfxreconstruct 0.9.18 has page_guard, assisted and unassisted (no userfaultfd mode: its
# library holds no such setting); assisted needs flushes, which neither workload makes.
GFXR_MODES = ["page_guard", "unassisted"]

SCHEMA = 1
BEGIN = "<!-- vkdirty-bench:capture-overhead:begin -->"
END = "<!-- vkdirty-bench:capture-overhead:end -->"

# Streaming-upload cases: (size MiB, pattern, percent). Sized so the full run takes 10-20 min
# on a 2-core machine with lavapipe: cases above SINGLE_REP_MIB run in the first repetition
# only (gfxreconstruct page_guard needs about 0.3 s a frame at 256 MiB, 10 % random there), and
# map-every-frame stays at 16 MiB (page_guard took about 0.9 s a frame at 256 MiB, 1 % random).
STREAM_CASES_FULL = [
    (16, "ring", 0.1), (16, "ring", 1), (16, "ring", 10),
    (16, "random", 0.1), (16, "random", 1), (16, "random", 10),
    (16, "full", 100),
    (256, "ring", 1), (256, "random", 1), (256, "random", 10),
]
STREAM_CASES_QUICK = [(16, "random", 1), (16, "ring", 10), (256, "random", 1)]
MAP_CASES_FULL = [(16, "random", 1), (16, "ring", 10)]
MAP_CASES_QUICK = [(16, "random", 1)]
SINGLE_REP_MIB = 16
# Many-mappings cases: N persistently mapped 64 KiB allocations, one page written in 4 of them
# per frame. Configurations: none, each vkdirty backend auto can pick, gfxreconstruct page_guard.
MANYMAPS_FULL = [1, 100, 1000, 4000]
MANYMAPS_QUICK = [1, 100, 4000]
# A manymaps frame costs tens of microseconds and the layer's part at N = 1 a few: many frames,
# so the median is not at the mercy of a few scheduler hiccups (--manymaps-frames).
MANYMAPS_FRAMES_FULL = 3000
MANYMAPS_FRAMES_QUICK = 1000
MANYMAPS_CONFIGS = ["none", "vkdirty:host-import", "vkdirty:async-wp", "vkdirty:shadow-wp", "vkdirty:shadow",
                    "gfxr:page_guard", bench_gfxr.FLOOR, bench_gfxr.NAME, bench_gfxr.NAME + ":shadow-wp"]


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def case_name(size, pattern, pct):
    if pattern == "many":
        return f"{pct} mapped allocations"
    return f"{size} MiB {pattern}" if pattern == "full" else f"{size} MiB {pattern} {pct:g}%"


class Config:
    def __init__(self, name, env, args=(), note=""):
        self.name, self.env, self.args, self.note = name, env, list(args), note


def base_env(opts):
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("VK_INSTANCE_LAYERS") or k.startswith("VK_LOADER_LAYERS")
                   or k.startswith("VKDIRTY_") or k.startswith("GFXRECON_"))}
    if opts.lib_dir:
        env["LD_LIBRARY_PATH"] = opts.lib_dir + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return env


def layer_paths(*dirs):
    return ":".join(d for d in dirs if d)


def make_configs(opts, backends):
    cfgs = [Config("none", {})]
    for b in backends:
        env = {
            "VK_ADD_LAYER_PATH": layer_paths(opts.layer_dir),
            "VK_INSTANCE_LAYERS": "VK_LAYER_VKDIRTY_capture",
            "VKDIRTY_BACKEND": b,
        }
        # Assisted capture records flushed ranges only: the app flushes what it wrote.
        args = ["--flush"] if b == "assisted" else []
        note = "app flushes its writes" if b == "assisted" else ""
        cfgs.append(Config(f"vkdirty:{b}", env, args, note))
        # Write prediction (VKDIRTY_PREDICT) forced on and off, beside the plain row (the default):
        # "+predict" runs by default, "+nopredict" only when named in --configs.
        if b in ("async-wp", "host-import", "shadow-wp"):
            cfgs.append(Config(f"vkdirty:{b}+predict", dict(env, VKDIRTY_PREDICT="1"), args, "write prediction on"))
            cfgs.append(Config(f"vkdirty:{b}+nopredict", dict(env, VKDIRTY_PREDICT="0"), args, "write prediction off"))
    if opts.gfxr:
        for m in GFXR_MODES:
            env = {
                "VK_INSTANCE_LAYERS": "VK_LAYER_LUNARG_gfxreconstruct",
                "GFXRECON_MEMORY_TRACKING_MODE": m,
                "GFXRECON_CAPTURE_FILE_TIMESTAMP": "false",
                "GFXRECON_LOG_LEVEL": "warning",
            }
            if opts.gfxr_layer_dir:
                env["VK_ADD_LAYER_PATH"] = opts.gfxr_layer_dir
            cfgs.append(Config(f"gfxr:{m}", env))
        cfgs += bench_gfxr.extra_configs(opts, Config)
    if not opts.configs:
        cfgs = [c for c in cfgs if c.name not in bench_gfxr.ON_REQUEST and not c.name.endswith("+nopredict")]
    else:
        # In the order given: an A/B can be run both ways round (an order effect shows as a
        # difference that follows the position rather than the configuration).
        cfgs = sorted((c for c in cfgs if c.name in opts.configs), key=lambda c: opts.configs.index(c.name))
    return bench_gfxr.with_baseline(cfgs, opts, Config)


def run_child(cmd, env, timeout, log_path):
    """Runs cmd; returns (rc, wall seconds, child peak RSS KiB)."""
    with open(log_path, "wb") as lf:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                wall = time.monotonic() - t0
                p.returncode = os.waitstatus_to_exitcode(status)
                return p.returncode, wall, ru.ru_maxrss
            if time.monotonic() > deadline:
                os.killpg(p.pid, signal.SIGKILL)
                _, status, ru = os.wait4(p.pid, 0)
                with open(log_path, "ab") as lf2:
                    lf2.write(f"\ntimed out after {timeout:.0f} s (killed)\n".encode())
                return 124, time.monotonic() - t0, ru.ru_maxrss
            time.sleep(0.005)


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def vkdirty_info(opts, trace):
    try:
        out = subprocess.run([opts.vkdirty, "info", "--json", trace], capture_output=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"vkdirty info: {e}"
    if out.returncode != 0:
        return None, f"vkdirty info: {out.stderr.decode(errors='replace').strip()}"
    try:
        return json.loads(out.stdout), None
    except ValueError as e:
        return None, f"vkdirty info: bad JSON: {e}"


def gfxr_info(opts, trace):
    out = subprocess.run([opts.stream_bench, "gfxr-stats", trace], capture_output=True, timeout=600)
    if out.returncode != 0:
        return None, out.stderr.decode(errors="replace").strip()
    return json.loads(out.stdout), None


def trace_stats(opts, cfg, trace):
    """(trace bytes, captured memory bytes, detail) for the run's trace file."""
    if cfg.name == "none":
        return None, None, None
    if not os.path.exists(trace):
        return None, None, {"error": "no trace file written"}
    size = os.path.getsize(trace)
    if cfg.name.startswith("vkdirty:"):
        info, err = vkdirty_info(opts, trace)
        if info is None:
            return size, None, {"error": err}
        detail = {k: info.get(k) for k in ("dirty_bytes", "dirty_pages", "dirty_blocks", "backends",
                                           "backend_reasons", "compression_ratio", "writer_stalls", "truncated")}
        return size, info.get("dirty_bytes"), detail
    info, err = gfxr_info(opts, trace)
    if info is None:
        return size, None, {"error": err}
    return size, info["fill_memory_bytes"], info


def trace_env(cfg, trace):
    if cfg.name.startswith("vkdirty:"):
        return {"VKDIRTY_TRACE_FILE": trace}
    if cfg.name.startswith("gfxr:"):
        env = {"GFXRECON_CAPTURE_FILE": trace}
        if cfg.env.get("VKDIRTY_WRITE_TRACE") == "1":
            # vkdirty's own trace beside gfxreconstruct's capture (removed after the run).
            env["VKDIRTY_TRACE_FILE"] = trace + ".vkdirty"
        return env
    return {}


def run_stream(opts, cfg, case, frames, tmp):
    size, pattern, pct, mode = case
    trace = os.path.join(tmp, "trace.bin")
    out_json = os.path.join(tmp, "out.json")
    for p in (trace, out_json):
        if os.path.exists(p):
            os.unlink(p)
    env = base_env(opts)
    env.update(cfg.env)
    env.update(trace_env(cfg, trace))
    if pattern == "many":
        cmd = [opts.stream_bench, "run", "--size-mib", "1", "--allocations", str(pct), "--alloc-kib", "64",
               "--writes-per-frame", "4", "--frames", str(frames), "--output", out_json] + cfg.args
    else:
        cmd = [opts.stream_bench, "run", "--size-mib", str(size), "--pattern", pattern, "--fraction", str(pct),
               "--mode", mode, "--frames", str(frames), "--output", out_json] + cfg.args
    logp = os.path.join(tmp, "run.log")
    rc, wall, rss = run_child(cmd, env, opts.timeout, logp)
    rec = {"rc": rc, "process_wall_s": wall}
    if rc != 0 or not os.path.exists(out_json):
        rec["error"] = f"exit {rc}: {tail(logp)}"
        return rec
    if cfg.name.startswith("gfxr:"):
        bench_gfxr.check_run(opts, cfg, trace, base_env(opts), logp, rec, tail)
    with open(out_json) as f:
        b = json.load(f)
    fl = b.get("floors") or {}
    rec.update({
        "frame_ms": {"median": b["frame_ms"]["median"], "p99": b["frame_ms"]["p99"]},
        # CPU time of the submitting thread per frame, and of the whole process over the loop
        # (stream-bench builds from before these were reported lack them).
        "frame_cpu_ms": (b.get("frame_cpu_ms") or {}).get("median"),
        "loop_cpu_ms_per_frame": b.get("loop_cpu_ms_per_frame"),
        "wall_s": b["wall_s"],
        "peak_rss_kib": b["peak_rss_kib"],
        "written_bytes": b["written"]["total_bytes"],
        "bytes_per_frame": b["written"]["bytes_per_frame"],
        "device": b["device"],
        "floors": {
            "copy_ms": fl.get("copy_ms", {}).get("median"),
            "trap_ms": (fl.get("trap_ms") or {}).get("median"),
            "fault_us_per_page": fl.get("fault_us_per_page"),
            "scan_us": (fl.get("scan_us") or {}).get("median"),
            "trap_note": fl.get("trap_note"),
        },
    })
    tb, cap, detail = trace_stats(opts, cfg, trace)
    rec.update({"trace_bytes": tb, "captured_bytes": cap, "capture": detail})
    for p in (trace, trace + ".vkdirty"):
        if os.path.exists(p):
            os.unlink(p)
    return rec


def run_vkcube(opts, cfg, frames, tmp, timeout=None):
    trace = os.path.join(tmp, "trace.bin")
    if os.path.exists(trace):
        os.unlink(trace)
    env = base_env(opts)
    env.update(cfg.env)
    env.update(trace_env(cfg, trace))
    logp = os.path.join(tmp, "run.log")
    # A healthy run takes seconds; a hang (a broken layer chain) must not eat the whole budget.
    limit = timeout or min(opts.timeout, 120 + frames * 0.1)
    # The frame rate is that of the frames between a short and a long run, so start-up (instance
    # and device creation, shader compilation) and tear-down cancel out.
    short = max(1, frames // 5)
    rc, short_wall, _ = run_child([opts.vkcube, "--c", str(short)], env, limit, logp)
    if rc == 0:
        if os.path.exists(trace):
            os.unlink(trace)
        rc, wall, rss = run_child([opts.vkcube, "--c", str(frames)], env, limit, logp)
    else:
        wall, rss = short_wall, None
    rec = {"rc": rc, "wall_s": wall, "peak_rss_kib": rss, "frames": frames}
    if rc != 0:
        rec["error"] = f"exit {rc}: {tail(logp)}"
        return rec
    if cfg.name.startswith("gfxr:"):
        bench_gfxr.check_run(opts, cfg, trace, base_env(opts), logp, rec, tail)
    rec["fps"] = (frames - short) / max(wall - short_wall, 1e-6)
    rec["startup_s"] = max(0.0, short_wall - short / rec["fps"])
    tb, cap, detail = trace_stats(opts, cfg, trace)
    rec.update({"trace_bytes": tb, "captured_bytes": cap, "capture": detail})
    if os.path.exists(trace):
        os.unlink(trace)
    return rec


def probe_backends(opts, tmp):
    """The vkdirty backends this build and machine run: each must be the one that tracked the
    probe's mapping (a backend that refused and fell back is left out, with its reason)."""
    usable, skipped = [], {}
    if not opts.layer_dir:
        return usable, {"*": "no vkdirty layer given"}
    for b in VKDIRTY_BACKENDS:
        if opts.backends and b not in opts.backends:
            continue
        cfg = Config(f"vkdirty:{b}", {
            "VK_ADD_LAYER_PATH": opts.layer_dir,
            "VK_INSTANCE_LAYERS": "VK_LAYER_VKDIRTY_capture",
            "VKDIRTY_BACKEND": b,
        })
        rec = run_stream(opts, cfg, (1, "random", 10, "persistent"), 3, tmp)
        if "error" in rec:
            skipped[b] = rec["error"].strip().splitlines()[-1] if rec["error"].strip() else "failed"
            continue
        cap = rec.get("capture") or {}
        used = cap.get("backends") or {}
        if "error" in cap:
            skipped[b] = cap["error"]
        elif list(used) == [b]:
            usable.append(b)
        else:
            reasons = "; ".join(f"{r.get('backend')}: {r.get('reason')}" for r in cap.get("backend_reasons") or [])
            skipped[b] = f"mapping tracked by {sorted(used) or 'nothing'}" + (f" ({reasons})" if reasons else "")
    return usable, skipped


def machine_info(opts):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gfxr_version = None
    if opts.gfxr:
        manifest = None
        for d in filter(None, [opts.gfxr_layer_dir, "/usr/share/vulkan/explicit_layer.d"]):
            p = os.path.join(d, "VkLayer_gfxreconstruct.json")
            if os.path.exists(p):
                manifest = p
                break
        if manifest:
            try:
                with open(manifest) as f:
                    gfxr_version = json.load(f)["layer"]["description"].split("Version")[-1].strip()
            except (OSError, ValueError, KeyError):
                pass
    # A prebuilt pack says which commit its binaries came from (bench.sh --prebuilt).
    commit = os.environ.get("VKDIRTY_BENCH_COMMIT") or None
    try:
        commit = commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
    except OSError:
        pass
    return {
        "type": "machine", "schema": SCHEMA, "machine": opts.machine,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} CPUs", "kernel": platform.release(),
        "gfxr_version": gfxr_version, "vkdirty_commit": commit, "quick": opts.quick,
    }


def cmd_run(opts):
    opts.gfxr = not opts.no_gfxr
    tmp = tempfile.mkdtemp(prefix="vkdirty-bench-")
    try:
        return _run(opts, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(opts, tmp):  # noqa: C901 (one straight sequence)
    workloads = opts.workloads.split(",")
    frames = opts.frames or (100 if opts.quick else 300)
    many_frames = opts.manymaps_frames or (MANYMAPS_FRAMES_QUICK if opts.quick else MANYMAPS_FRAMES_FULL)
    reps = opts.reps or (1 if opts.quick else 2)
    results = open(opts.results, "a")

    def emit(rec):
        results.write(json.dumps(rec) + "\n")
        results.flush()

    mi = machine_info(opts)
    backends, skipped = probe_backends(opts, tmp)
    for b, why in skipped.items():
        log(f"vkdirty backend {b} left out: {why}")
    mi["vkdirty_backends"] = backends
    mi["vkdirty_skipped"] = skipped
    configs = make_configs(opts, backends)
    log("configurations: " + ", ".join(c.name for c in configs))

    stream_cases = []
    if "stream" in workloads:
        for s, p, f in (STREAM_CASES_QUICK if opts.quick else STREAM_CASES_FULL):
            stream_cases.append(("stream", (s, p, f, "persistent")))
    if "map" in workloads:
        for s, p, f in (MAP_CASES_QUICK if opts.quick else MAP_CASES_FULL):
            stream_cases.append(("map", (s, p, f, "map-every-frame")))
    if "manymaps" in workloads:
        for n in (MANYMAPS_QUICK if opts.quick else MANYMAPS_FULL):
            stream_cases.append(("manymaps", (1, "many", n, "persistent")))
    if opts.max_size_mib:
        stream_cases = [c for c in stream_cases if c[1][0] <= opts.max_size_mib]
    if opts.cases:
        stream_cases = [c for c in stream_cases if case_name(*c[1][:3]) in opts.cases]
    vkcube = "vkcube" in workloads
    if vkcube and not (opts.vkcube and os.environ.get("DISPLAY")):
        log("vkcube left out: " + ("no vkcube binary" if not opts.vkcube else "no X display (run under xvfb-run)"))
        vkcube = False
    vkcube_frames = opts.vkcube_frames or (1000 if opts.quick else 5000)
    vkcube_configs = configs
    if vkcube:
        # One short run per layer first: a configuration whose vkcube fails or hangs is left out of
        # the vkcube table (with the reason) instead of timing out once per repetition.
        mi["vkcube_skipped"] = {}
        for cfg in configs:
            if cfg.name == "none" or (cfg.name.startswith("vkdirty:") and
                                      any(c.startswith("vkdirty:") for c in mi["vkcube_skipped"])):
                continue
            rec = run_vkcube(opts, cfg, 5, tmp, timeout=30)
            if "error" in rec:
                why = rec["error"].strip().splitlines()[-1] if rec["error"].strip() else "failed"
                mi["vkcube_skipped"][cfg.name] = f"vkcube --c 5 failed: {why}"
                log(f"vkcube under {cfg.name} left out: {why}")
        bad = mi["vkcube_skipped"]
        layer_bad = any(c.startswith("vkdirty:") for c in bad)
        vkcube_configs = [c for c in configs if c.name not in bad and not (layer_bad and c.name.startswith("vkdirty:"))]

    # The device line comes from the first stream run; vkcube-only runs leave it empty.
    if stream_cases:
        first = run_stream(opts, configs[0], (16, "random", 1, "persistent"), 20, tmp)  # warm-up, not kept
        if "error" in first:
            log("warm-up run failed: " + first["error"])
            return 1
        mi["device"] = first["device"]
    emit(mi)

    big = 0 if opts.all_reps else sum(1 for _, c in stream_cases if c[0] > SINGLE_REP_MIB)
    many = sum(1 for w, _ in stream_cases if w == "manymaps")
    many_cfgs = len([c for c in configs if c.name.split("@")[0] in MANYMAPS_CONFIGS])
    total = ((len(stream_cases) - many) * reps - big * (reps - 1)) * len(configs) + many * reps * many_cfgs \
        + (len(vkcube_configs) * reps if vkcube else 0)
    n = 0
    started = time.monotonic()
    for rep in range(reps):
        opts.rep = rep
        for ci, (workload, case) in enumerate(stream_cases + ([("vkcube", None)] if vkcube else [])):
            if rep > 0 and case is not None and case[0] > SINGLE_REP_MIB and not opts.all_reps:
                continue
            # Rotate the order per repetition and case, so drift spreads over all configurations.
            cl = vkcube_configs if workload == "vkcube" else configs
            if workload == "manymaps":
                cl = [c for c in configs if c.name.split("@")[0] in MANYMAPS_CONFIGS]
            k = (rep + ci) % len(cl)
            order = cl[k:] + cl[:k]
            for cfg in order:
                n += 1
                if workload == "vkcube":
                    rec = run_vkcube(opts, cfg, vkcube_frames, tmp)
                    name = f"vkcube {vkcube_frames} frames"
                else:
                    run_frames = many_frames if workload == "manymaps" else frames
                    rec = run_stream(opts, cfg, case, run_frames, tmp)
                    name = case_name(*case[:3])
                rec.pop("device", None)
                rec.update({"type": "run", "schema": SCHEMA, "machine": opts.machine, "workload": workload,
                            "case": name, "config": cfg.name, "config_note": cfg.note, "rep": rep})
                if workload != "vkcube":
                    rec["frames"] = run_frames
                emit(rec)
                el = time.monotonic() - started
                status = rec.get("error", "").splitlines()[0] if "error" in rec else (
                    f"{rec['fps']:.1f} fps" if "fps" in rec else f"{rec['frame_ms']['median']:.3f} ms/frame")
                log(f"[{n}/{total} {el:.0f}s] {workload} {name} {cfg.name} rep {rep}: {status}")
    if "twoqueue" in workloads:
        bench_twoqueue.run(opts, backends, Config, base_env, run_child, tail, tmp, reps, emit, log, SCHEMA)
    results.close()
    return 0


# ---------------------------------------------------------------- rendering

def load(paths):
    machines, runs = {}, []
    for p in paths:
        session = None
        with open(p) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                r = json.loads(line)
                if r.get("type") == "machine":
                    # The first session's line describes the machine; later ones (--append, or
                    # cases re-run and merged in) are listed with the cases they produced.
                    first = machines.setdefault(r["machine"], r)
                    if first is not r:
                        first.setdefault("later", []).append(r)
                    session = r
                elif r.get("type") == "run":
                    r["_session"] = session
                    runs.append(r)
    return machines, runs


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec=".3f", none="–"):
    return none if x is None else format(x, spec)


def ratio(a, b, spec=".2f"):
    if a is None or b is None or b <= 0:
        return "–"
    return format(a / b, spec) + "×"


def mib(x):
    return None if x is None else x / (1 << 20)


def config_order(name):
    if name == "none":
        return (0, 0)
    if name.startswith("vkdirty:"):
        b = name.split(":", 1)[1]
        plain, predict = b.split("+", 1)[0], "+" in b
        return (1, (VKDIRTY_BACKENDS.index(plain) if plain in VKDIRTY_BACKENDS else 99) * 2 + predict)
    mode = name.split(":", 1)[1]
    return (2, GFXR_MODES.index(mode) if mode in GFXR_MODES else 99, name)


def aggregate(runs):
    """{(workload, case): {config: summary}} over repetitions (medians)."""
    groups = {}
    for r in runs:
        groups.setdefault((r["workload"], r["case"]), {}).setdefault(r["config"], []).append(r)
    out = {}
    for key, by_cfg in groups.items():
        case_floors = [r.get("floors") or {} for rs in by_cfg.values() for r in rs if "error" not in r]
        floors = {
            "copy_ms": med(f.get("copy_ms") for f in case_floors),
            "trap_ms": med(f.get("trap_ms") for f in case_floors),
            "fault_us_per_page": med(f.get("fault_us_per_page") for f in case_floors),
            "scan_us": med(f.get("scan_us") for f in case_floors),
            "trap_note": next((f.get("trap_note") for f in case_floors if f.get("trap_note")), None),
        }
        cfgs = {}
        for cfg, rs in by_cfg.items():
            ok = [r for r in rs if "error" not in r]
            s = {"runs": len(rs), "ok": len(ok), "errors": [r["error"] for r in rs if "error" in r],
                 "reps": [r["rep"] for r in rs],
                 "note": rs[0].get("config_note", "")}
            if ok:
                s.update({
                    "median": med(r.get("frame_ms", {}).get("median") for r in ok),
                    "p99": med(r.get("frame_ms", {}).get("p99") for r in ok),
                    "wall_s": med(r.get("wall_s") for r in ok),
                    "rss_kib": med(r.get("peak_rss_kib") for r in ok),
                    "trace_bytes": med(r.get("trace_bytes") for r in ok),
                    "captured": med(r.get("captured_bytes") for r in ok),
                    "written": med(r.get("written_bytes") for r in ok),
                    "fps": med(r.get("fps") for r in ok),
                    "frames": ok[0].get("frames"),
                    "cpu": med(r.get("frame_cpu_ms") for r in ok),
                    # Per repetition (of its session), for ratios taken within one repetition.
                    "by_rep": {(id(r.get("_session")), r["rep"]): (r.get("frame_ms", {}).get("median"),
                                                                    r.get("frame_cpu_ms")) for r in ok},
                })
            cfgs[cfg] = s
        out[key] = {"floors": floors, "configs": cfgs}
    return out


def stream_table(cases):
    lines = [
        "| case | configuration | ms/frame median | p99 | × no layer | overhead ms | overhead ÷ trap floor "
        "| overhead ÷ copy floor | wall s | peak RSS MiB | trace MiB | captured MiB | captured ÷ written |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    floor_lines = []
    for case, agg in cases:
        cfgs, fl = agg["configs"], agg["floors"]
        base = cfgs.get("none", {}).get("median")
        floor_lines.append(
            f"| {case} | {fmt(fl['copy_ms'])} | {fmt(fl['trap_ms'])} | {fmt(fl['fault_us_per_page'], '.2f')} "
            f"| {fmt(fl['scan_us'], '.0f')} |")
        for name in sorted(cfgs, key=config_order):
            s = cfgs[name]
            label = name + (f" ({s['note']})" if s.get("note") else "")
            if not s["ok"]:
                err = s["errors"][0].strip().splitlines()[-1] if s["errors"] and s["errors"][0].strip() else "failed"
                lines.append(f"| {case} | {label} | failed: {err[:80]} |||||||||||")
                continue
            over = None if base is None or name == "none" else s["median"] - base
            lines.append(
                f"| {case} | {label} | {fmt(s['median'])} | {fmt(s['p99'])} | {ratio(s['median'], base)} "
                f"| {fmt(over) if name != 'none' else '–'} | {ratio(over, fl['trap_ms'], '.1f') if over is not None else '–'} "
                f"| {ratio(over, fl['copy_ms'], '.1f') if over is not None else '–'} | {fmt(s['wall_s'], '.2f')} "
                f"| {fmt(mib(s['rss_kib'] * 1024 if s['rss_kib'] else None), '.0f')} "
                f"| {fmt(mib(s['trace_bytes']), '.2f')} | {fmt(mib(s['captured']), '.1f')} "
                f"| {ratio(s['captured'], s['written'], '.3f') if s['captured'] is not None else '–'} |")
    floors = ["| case | copy floor ms/frame | trap floor ms/frame | fault µs/page | scan µs |",
              "|---|---:|---:|---:|---:|"] + floor_lines
    return lines, floors


def rep_ratios(a, a1, name, which):
    """Per repetition: (configuration − none) at this N ÷ the same at N = 1, both from that
    repetition (`which`: 0 wall-clock median, 1 thread CPU median)."""
    def over(agg, k):
        s, base = agg["configs"].get(name, {}), agg["configs"].get("none", {})
        v, b = s.get("by_rep", {}).get(k), base.get("by_rep", {}).get(k)
        if v is None or b is None or v[which] is None or b[which] is None:
            return None
        return v[which] - b[which]
    out = []
    for k in a["configs"].get(name, {}).get("by_rep", {}):
        o, o1 = over(a, k), over(a1, k)
        if o is not None and o1 is not None and o1 > 0:
            out.append(o / o1)
    return out


def spread(xs):
    """"median [min–max] (n)" of ratios, "–" without any."""
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.2f}× (1)"
    return f"{statistics.median(xs):.2f}× [{min(xs):.2f}–{max(xs):.2f}] ({len(xs)})"


def manymaps_table(cases):
    names = sorted({n for _, a in cases for n in a["configs"]}, key=config_order)
    lines = ["| mapped allocations | configuration | ms/frame median | p99 | overhead ms | × at 1 | ÷ page_guard "
             "| thread CPU ms | CPU overhead ms | N ÷ 1 per rep (wall) | N ÷ 1 per rep (CPU) "
             "| peak RSS MiB | captured MiB | captured ÷ written |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|"]

    def over(a, name, key="median"):
        base = a["configs"].get("none", {}).get(key)
        s = a["configs"].get(name, {})
        return None if base is None or not s.get("ok") or s.get(key) is None else s[key] - base
    first = cases[0][1] if cases else None
    for case, a in cases:
        n = case.split()[0]
        pg = over(a, "gfxr:page_guard")
        for name in names:
            s = a["configs"].get(name)
            if s is None:
                continue
            if not s["ok"]:
                err = s["errors"][0].strip().splitlines()[-1] if s["errors"] and s["errors"][0].strip() else "failed"
                lines.append(f"| {n} | {name} | failed: {err[:80]} ||||||||||||")
                continue
            o = over(a, name) if name != "none" else None
            o1 = over(first, name) if first is not None and name != "none" else None
            oc = over(a, name, "cpu") if name != "none" else None
            per = name != "none" and first is not None
            lines.append(
                f"| {n} | {name} | {fmt(s['median'])} | {fmt(s['p99'])} | {fmt(o) if o is not None else '–'} "
                f"| {ratio(o, o1) if o is not None and o1 else '–'} "
                f"| {ratio(o, pg) if o is not None and pg and name != 'gfxr:page_guard' else '–'} "
                f"| {fmt(s.get('cpu'), '.4f')} | {fmt(oc, '.4f') if oc is not None else '–'} "
                f"| {spread(rep_ratios(a, first, name, 0)) if per else '–'} "
                f"| {spread(rep_ratios(a, first, name, 1)) if per else '–'} "
                f"| {fmt(mib(s['rss_kib'] * 1024 if s['rss_kib'] else None), '.0f')} "
                f"| {fmt(mib(s['captured']), '.2f')} "
                f"| {ratio(s['captured'], s['written'], '.3f') if s['captured'] is not None else '–'} |")
    return lines


def vkcube_table(cases):
    lines = ["| configuration | frames | wall s | frames/s | % of no layer | peak RSS MiB | trace MiB | captured MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for case, agg in cases:
        cfgs = agg["configs"]
        base = cfgs.get("none", {}).get("fps")
        for name in sorted(cfgs, key=config_order):
            s = cfgs[name]
            if not s["ok"]:
                err = s["errors"][0].strip().splitlines()[-1] if s["errors"] and s["errors"][0].strip() else "failed"
                lines.append(f"| {name} | failed: {err[:80]} |||||||")
                continue
            pct = "–" if not base else f"{100 * s['fps'] / base:.1f} %"
            lines.append(f"| {name} | {s['frames']} | {fmt(s['wall_s'], '.2f')} | {fmt(s['fps'], '.1f')} | {pct} "
                         f"| {fmt(mib(s['rss_kib'] * 1024 if s['rss_kib'] else None), '.0f')} "
                         f"| {fmt(mib(s['trace_bytes']), '.2f')} | {fmt(mib(s['captured']), '.2f')} |")
    return lines


def targets(agg):
    """The issue's targets, checked on these results."""
    out = []
    # Where the driver's mappings refuse async-wp (NVIDIA), host-import is its zero-copy stand-in.
    present = {cfg for a in agg.values() for cfg in a["configs"]}
    wp = "vkdirty:async-wp" if "vkdirty:async-wp" in present else "vkdirty:host-import"
    name = wp.split(":", 1)[1]
    rows = []
    for (workload, case), a in sorted(agg.items()):
        if workload != "stream":
            continue
        c = a["configs"]
        pct = case.rsplit(" ", 1)[-1]
        if not (pct.endswith("%") and 1 <= float(pct[:-1]) <= 10):
            continue
        base = c.get("none", {}).get("median")
        w, g = c.get(wp, {}), c.get("gfxr:page_guard", {})
        if base is None or w.get("median") is None:
            continue
        ow = w["median"] - base
        og = g["median"] - base if g.get("median") is not None else None
        trap = a["floors"]["trap_ms"]
        rows.append(f"| {case} | {fmt(ow)} | {fmt(og)} | {ratio(og, ow, '.1f') if og is not None and ow > 0 else '–'} "
                    f"| {ratio(ow, trap, '.2f')} |")
    if rows:
        out += [f"| case (1–10 % dirty) | {name} overhead ms | gfxr page_guard overhead ms "
                f"| gfxr ÷ {name} (target ≥ 5×) | {name} ÷ trap floor (target ≤ 1.5×) |",
                "|---|---:|---:|---:|---:|"] + rows
    size_rows = []
    for (workload, case), a in sorted(agg.items()):
        c = a["configs"]
        w, g = c.get(wp, {}), c.get("gfxr:page_guard", {})
        if w.get("captured") is None:
            continue
        size_rows.append(f"| {workload} | {case} | {ratio(w['captured'], w.get('written'), '.3f') if w.get('written') else '–'} "
                         f"| {fmt(mib(w['captured']), '.1f')} | {fmt(mib(g.get('captured')), '.1f')} "
                         f"| {'yes' if g.get('captured') is not None and w['captured'] <= g['captured'] else ('–' if g.get('captured') is None else 'no')} |")
    if size_rows:
        out += ["", f"| workload | case | {name} captured ÷ written (target ≤ 1.05×) | {name} captured MiB "
                "| gfxr page_guard memory data MiB | not larger than gfxr |",
                "|---|---|---:|---:|---:|---|"] + size_rows
    return out + bench_gfxr.target_rows(agg, fmt, ratio)


def render_machine(m, runs):
    agg = aggregate(runs)
    dev = m.get("device") or {}
    lines = [f"### {m['machine']}", ""]
    lines.append(f"Machine: {m.get('cpu')}; kernel {m.get('kernel')}; device {dev.get('name', '?')} "
                 f"({dev.get('device_type', '?')}), driver {dev.get('driver_name') or dev.get('driver_version', '?')}, "
                 f"Vulkan {dev.get('api_version', '?')}; buffer memory type {dev.get('memory_type', '?')} "
                 f"({dev.get('memory_flags', '?')}). gfxreconstruct {m.get('gfxr_version') or 'not run'}. "
                 f"vkdirty {m.get('vkdirty_commit') or '?'}. Date {m.get('date')}{' (quick run)' if m.get('quick') else ''}.")
    lines.append("")
    for later in m.get("later", []):
        cases = sorted({r["case"] for r in runs if r.get("_session") is later}, key=_case_key)
        if cases:
            lines.append(f"Re-run on {later.get('date')} with vkdirty {later.get('vkdirty_commit') or '?'}"
                         f"{' (' + later['note'] + ')' if later.get('note') else ''}: {', '.join(cases)}; "
                         "every configuration of those cases comes from that run.")
            lines.append("")
    skipped = m.get("vkdirty_skipped") or {}
    if skipped:
        lines.append("vkdirty backends left out: " + "; ".join(f"{b}: {why}" for b, why in skipped.items()) + ".")
        lines.append("")
    lines.append("Each cell is the median over the case's repetitions; in each repetition the "
                 "configurations ran in rotating order.")
    lines.append("")
    for workload, title in (("stream", "Streaming upload (persistently mapped)"),
                            ("map", "Map every frame"), ("manymaps", "Many mapped allocations"),
                            ("vkcube", "vkcube under Xvfb")):
        cases = [(case, a) for (w, case), a in agg.items() if w == workload]
        if not cases:
            continue
        cases.sort(key=lambda x: _case_key(x[0]))
        lines += [f"#### {title}", ""]
        if workload == "manymaps":
            cases.sort(key=lambda x: int(x[0].split()[0]))
            frames = next((s.get("frames") for _, a in cases for s in a["configs"].values() if s.get("frames")), "?")
            lines += [f"N persistently mapped 64 KiB allocations of the buffer's memory type, each with a buffer; "
                      f"a frame writes one page in 4 of them, submits a 64 KiB copy and waits. {frames} timed "
                      "frames per run. Overhead = configuration − no layer; \"× at 1\": overhead ÷ the same "
                      "configuration's overhead with 1 allocation (goal at 100: ≤ 1.2); \"÷ page_guard\": overhead ÷ "
                      "gfxreconstruct page_guard's overhead in the same case (goal at 4,000: ≤ 1). Thread CPU: the "
                      "submitting thread's CPU time per frame (median; a blocking wait costs none), less exposed "
                      "to other processes than the wall clock. \"N ÷ 1 per rep\": in each repetition, the "
                      "overhead at N ÷ the overhead at 1 allocation of that repetition; median [min–max] "
                      "(repetitions).", ""]
            lines += manymaps_table(cases)
            lines.append("")
            continue
        if workload == "vkcube":
            lines += ["`xvfb-run -a vkcube --c N`, run twice per configuration (N/5 and N frames): frames/s is "
                      "that of the frames between the two runs, so start-up and tear-down cancel out; wall s is "
                      "the long run's.", ""]
            lines += vkcube_table(cases)
            for c, why in (m.get("vkcube_skipped") or {}).items():
                who = f"vkdirty (every backend; probed with {c})" if c.startswith("vkdirty:") else c
                lines += ["", f"{who} left out of this table: {why}."]
        else:
            frames = next((s.get("frames") for _, a in cases for s in a["configs"].values() if s.get("frames")), "?")
            reps = {}
            for case, a in cases:
                n = max(len(set(r for r in s.get("reps", []))) for s in a["configs"].values())
                reps.setdefault(n, []).append(case)
            rep_text = "; ".join(f"{n} repetition{'s' if n > 1 else ''}: " + ", ".join(cs)
                                 for n, cs in sorted(reps.items(), reverse=True)) if len(reps) > 1 else \
                f"{next(iter(reps))} repetition(s) per case"
            lines += [f"{frames} timed frames per run; a frame is CPU write + submit of a 64 KiB copy + fence "
                      f"wait. {rep_text}.", ""]
            t, floors = stream_table(cases)
            lines += t + ["", "Floors, measured in the same processes on anonymous memory (median over runs):", ""] + floors
            note = next((a["floors"]["trap_note"] for _, a in cases if a["floors"].get("trap_note")), None)
            if note and note != "measured":
                lines += ["", f"Trap floor: {note}."]
        lines.append("")
    lines += bench_twoqueue.section(runs, fmt)
    t = targets(agg)
    if t:
        lines += ["#### Targets", ""] + t + [""]
    return lines


def _case_key(case):
    parts = case.split()
    try:
        size = int(parts[0])
    except (ValueError, IndexError):
        return (0, case, 0.0)
    pct = float(parts[-1][:-1]) if parts[-1].endswith("%") else 100.0
    return (size, parts[2] if len(parts) > 2 else "", pct)


def cmd_render(opts):
    machines, runs = load(opts.results)
    body = [BEGIN, "## Capture overhead", "",
            "Generated by `scripts/bench.sh` from the results files in docs/bench-results/ (one per machine). "
            "Frame time is the application thread's CPU frame time: the wall clock from the start of a frame's writes "
            "to the end of its fence wait (the layer's work at submit included; its background writer thread "
            "runs beside it). Overhead is a configuration's median frame time minus that of the same workload "
            "without any layer. "
            "The copy floor is a memcpy of exactly the dirty bytes of each frame; the trap floor adds one bare "
            "async-WP write fault per dirty page and one `PAGEMAP_SCAN` of the span per frame (the least any "
            "page-granular tracker pays). \"captured\" is vkdirty's dirty bytes (`vkdirty info --json`) or "
            "gfxreconstruct's fill-memory bytes (uncompressed); \"written\" is every page the workload wrote "
            "(initial upload of the whole buffer included), counted per frame. gfxreconstruct records every API "
            "call as well, vkdirty memory only: compare trace sizes with that in mind.", ""]
    for name in sorted(machines):
        mruns = [r for r in runs if r["machine"] == name]
        if mruns:
            body += render_machine(machines[name], mruns)
    body.append(END)
    text = "\n".join(body) + "\n"
    doc = opts.doc
    old = open(doc).read() if os.path.exists(doc) else "# Benchmarks\n"
    if BEGIN in old and END in old:
        a, b = old.index(BEGIN), old.index(END) + len(END)
        new = old[:a] + text.rstrip("\n") + old[b:]
        if not new.endswith("\n"):
            new += "\n"
    else:
        new = old.rstrip("\n") + "\n\n" + text
    os.makedirs(os.path.dirname(os.path.abspath(doc)), exist_ok=True)
    with open(doc, "w") as f:
        f.write(new)
    log(f"wrote {doc}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--stream-bench", required=True)
    r.add_argument("--vkdirty", help="the vkdirty CLI (for `info --json`)")
    r.add_argument("--layer-dir", help="directory holding VkLayer_vkdirty.json and the layer library")
    r.add_argument("--gfxr-layer-dir", help="directory holding gfxreconstruct's manifest (default: system)")
    r.add_argument("--no-gfxr", action="store_true")
    r.add_argument("--gfxr-replay", default=shutil.which("gfxrecon-replay"),
                   help="gfxrecon-replay, to check that each gfxreconstruct capture replays (first repetition)")
    r.add_argument("--lib-dir", help="prepended to LD_LIBRARY_PATH (carried libraries)")
    r.add_argument("--vkcube")
    r.add_argument("--results", required=True)
    r.add_argument("--machine", required=True)
    r.add_argument("--workloads", default="stream,map,manymaps,vkcube", help="also: twoqueue")
    r.add_argument("--configs", type=lambda s: s.split(","), help="only these configurations")
    r.add_argument("--backends", type=lambda s: s.split(","), help="only these vkdirty backends")
    r.add_argument("--quick", action="store_true")
    r.add_argument("--frames", type=int)
    r.add_argument("--manymaps-frames", type=int, help="timed frames of a manymaps run (default 3000, quick 1000)")
    r.add_argument("--reps", type=int)
    r.add_argument("--vkcube-frames", type=int)
    r.add_argument("--max-size-mib", type=int)
    r.add_argument("--cases", type=lambda s: s.split(","), help='only these cases, by name ("256 MiB random 10%%")')
    r.add_argument("--all-reps", action="store_true", help="repeat the large cases too")
    r.add_argument("--timeout", type=float, default=600)
    d = sub.add_parser("render")
    d.add_argument("--doc", required=True)
    d.add_argument("results", nargs="+")
    opts = ap.parse_args()
    if opts.cmd == "run":
        if not opts.vkdirty:
            opts.layer_dir = None
        return cmd_run(opts)
    return cmd_render(opts)


if __name__ == "__main__":
    sys.exit(main())
