"""The two-queue workload for scripts/bench.py (`--workloads twoqueue`): one and two threads, each
submitting on its own queue (`vkdirty-stream-bench twoqueue`), without a layer and under vkdirty;
and its table, one block per vkdirty commit in the results (so a re-run after a change, appended
with `--append`, shows before and after side by side)."""

import json
import os

THREADS = [1, 2]
# vkdirty's choice (auto) and the backends it picks between on a driver like lavapipe.
BACKENDS = ["auto", "host-import", "async-wp", "shadow-wp"]
TITLE = "Two queues, two threads"


def configs(opts, usable, Config):
    """No layer, and vkdirty with each backend. BENCH_TWOQUEUE_BASELINE=<layer dir>:<label> adds the
    same backends with another build of the layer (e.g. the commit before a change), named
    "vkdirty:<backend> @<label>", run in the same rotation so both face the same machine load."""
    layers = [(opts.layer_dir, "")] if opts.layer_dir else []
    base = os.environ.get("BENCH_TWOQUEUE_BASELINE")
    if base and ":" in base:
        d, label = base.rsplit(":", 1)
        layers.append((os.path.abspath(d), f" @{label}"))
    cfgs = [Config("none", {})]
    for d, suffix in layers:
        for b in BACKENDS:
            if b != "auto" and b not in usable:
                continue
            cfgs.append(Config(f"vkdirty:{b}{suffix}", {
                "VK_ADD_LAYER_PATH": d,
                "VK_INSTANCE_LAYERS": "VK_LAYER_VKDIRTY_capture",
                "VKDIRTY_BACKEND": b,
            }))
    return [c for c in cfgs if not opts.configs or c.name.split(" @")[0] in opts.configs]


def run(opts, usable, Config, base_env, run_child, tail, tmp, reps, emit, log, schema):
    """Runs every (threads, configuration) `reps` times in rotating order; one record per run."""
    cfgs = configs(opts, usable, Config)
    submits = opts.frames or (1000 if opts.quick else 5000)
    total, n = reps * len(THREADS) * len(cfgs), 0
    for rep in range(reps):
        for ti, threads in enumerate(THREADS):
            k = (rep + ti) % len(cfgs)
            for cfg in cfgs[k:] + cfgs[:k]:
                n += 1
                out_json = os.path.join(tmp, "twoqueue.json")
                trace = os.path.join(tmp, "twoqueue.vkd")
                for p in (out_json, trace):
                    if os.path.exists(p):
                        os.unlink(p)
                env = base_env(opts)
                env.update(cfg.env)
                if cfg.name.startswith("vkdirty:"):
                    env["VKDIRTY_TRACE_FILE"] = trace
                cmd = [opts.stream_bench, "twoqueue", "--threads", str(threads), "--submits", str(submits),
                       "--output", out_json]
                logp = os.path.join(tmp, "twoqueue.log")
                rc, wall, _ = run_child(cmd, env, opts.timeout, logp)
                rec = {"type": "run", "schema": schema, "machine": opts.machine, "workload": "twoqueue",
                       "case": f"{threads} thread{'s' if threads > 1 else ''}", "threads": threads,
                       "config": cfg.name, "config_note": cfg.note, "rep": rep, "rc": rc, "process_wall_s": wall}
                if rc != 0 or not os.path.exists(out_json):
                    rec["error"] = f"exit {rc}: {tail(logp)}"
                else:
                    with open(out_json) as f:
                        b = json.load(f)
                    rec.update({"layout": b["layout"], "submits": b["submits_per_thread"],
                                "submit_ms": {"median": b["submit_ms"]["median"], "p99": b["submit_ms"]["p99"]},
                                "submits_per_s": b["submits_per_s"], "loop_s": b["loop_s"]})
                emit(rec)
                status = rec["error"].splitlines()[0] if "error" in rec else f"{rec['submits_per_s']:.0f} submits/s"
                log(f"[twoqueue {n}/{total}] {rec['case']} {cfg.name} rep {rep}: {status}")


def _med(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def section(runs, fmt):
    """The table lines (empty when the results hold no two-queue run)."""
    runs = [r for r in runs if r.get("workload") == "twoqueue"]
    if not runs:
        return []
    by_commit = {}
    for r in runs:
        s = r.get("_session") or {}
        by_commit.setdefault((s.get("date") or "", s.get("vkdirty_commit") or "?"), []).append(r)
    layout = next((r["layout"] for r in runs if r.get("layout") and r["threads"] > 1), "?")
    submits = next((r["submits"] for r in runs if r.get("submits")), "?")
    lines = [f"#### {TITLE}", "",
             f"Each thread submits on its own queue ({layout}): per submit it writes 4 pages spread over its 16 "
             f"persistently mapped 64 KiB allocations, submits a 4 KiB copy and waits on its fence; {submits} timed "
             "submits per thread. submits/s counts every thread's submits over the time from the common start to "
             "the last one's end. \"÷ no layer\": the configuration's submits/s ÷ that without a layer with as "
             "many threads, in the same run; \"2 ÷ 1 thread\": its submits/s with two threads ÷ with one (the "
             "scaling; about 2 where nothing serialises and two cores are free). Medians over repetitions.", "",
             "| vkdirty commit | configuration | threads | submits/s | ms/submit median | p99 | ÷ no layer "
             "| 2 ÷ 1 thread |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (_, commit), rs in sorted(by_commit.items()):
        agg = {}
        for r in rs:
            agg.setdefault((r["config"], r["threads"]), []).append(r)

        def get(cfg, t, key):
            ok = [r for r in agg.get((cfg, t), []) if "error" not in r]
            if key == "submits_per_s":
                return _med(r["submits_per_s"] for r in ok)
            return _med(r["submit_ms"][key] for r in ok)
        names = sorted({c for c, _ in agg}, key=lambda c: (c != "none", c))
        for cfg in names:
            for t in sorted({t for c, t in agg if c == cfg}):
                errs = [r["error"] for r in agg[(cfg, t)] if "error" in r]
                sps = get(cfg, t, "submits_per_s")
                if sps is None:
                    why = errs[0].strip().splitlines()[-1][:80] if errs and errs[0].strip() else "failed"
                    lines.append(f"| {commit} | {cfg} | {t} | failed: {why} |||||")
                    continue
                base = get("none", t, "submits_per_s")
                one = get(cfg, 1, "submits_per_s")
                lines.append(f"| {commit} | {cfg} | {t} | {fmt(sps, '.0f')} | {fmt(get(cfg, t, 'median'))} "
                             f"| {fmt(get(cfg, t, 'p99'))} | {fmt(sps / base if base else None, '.2f')} "
                             f"| {fmt(sps / one if one and t > 1 else None, '.2f')} |")
    return lines + [""]
