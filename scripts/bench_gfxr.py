"""gfxreconstruct with vkdirty as its memory tracker, for scripts/bench.py: the configuration, the
check that each capture replays, and the target rows (assisted + vkdirty against page_guard)."""

import os
import subprocess

NAME = "gfxr:assisted+vkdirty"
NOTE = "vkdirty auto flushes the dirty pages"
NOT_BELOW = "gfxreconstruct is not below vkdirty"


def config_env(opts):
    """gfxreconstruct in assisted mode below vkdirty (auto), vkdirty's own trace off."""
    return {
        "VK_ADD_LAYER_PATH": ":".join(d for d in (opts.layer_dir, opts.gfxr_layer_dir) if d),
        "VK_INSTANCE_LAYERS": "VK_LAYER_VKDIRTY_capture:VK_LAYER_LUNARG_gfxreconstruct",
        "GFXRECON_MEMORY_TRACKING_MODE": "assisted",
        "GFXRECON_CAPTURE_FILE_TIMESTAMP": "false",
        "GFXRECON_LOG_LEVEL": "warning",
        "VKDIRTY_GFXR_FLUSH": "1",
        "VKDIRTY_WRITE_TRACE": "0",
    }


# Named in --configs only: the floor (gfxreconstruct assisted, the application flushing exactly
# what it wrote: gfxreconstruct's own cost of writing the fill-memory blocks, which no tracker
# handing it the same ranges can undercut), and the combination with prediction on, with
# vkdirty's own trace written as well, or with shadow-wp forced.
FLOOR = "gfxr:assisted"
ON_REQUEST = (FLOOR, NAME + "+predict", NAME + "+nopredict", NAME + "+trace", NAME + ":shadow-wp", NAME + ":shadow-wp+predict")


def extra_configs(opts, Config):
    """The gfxreconstruct configurations beside page_guard and unassisted."""
    env = {
        "VK_INSTANCE_LAYERS": "VK_LAYER_LUNARG_gfxreconstruct",
        "GFXRECON_MEMORY_TRACKING_MODE": "assisted",
        "GFXRECON_CAPTURE_FILE_TIMESTAMP": "false",
        "GFXRECON_LOG_LEVEL": "warning",
    }
    if opts.gfxr_layer_dir:
        env["VK_ADD_LAYER_PATH"] = opts.gfxr_layer_dir
    cfgs = [Config(FLOOR, env, ["--flush"], "no vkdirty; the app flushes exactly its writes")]
    if opts.layer_dir:
        v = config_env(opts)
        cfgs += [Config(NAME, v, note=NOTE),
                 Config(NAME + "+predict", dict(v, VKDIRTY_PREDICT="1"), note=NOTE + ", write prediction on"),
                 Config(NAME + "+nopredict", dict(v, VKDIRTY_PREDICT="0"), note=NOTE + ", write prediction off"),
                 Config(NAME + "+trace", dict(v, VKDIRTY_WRITE_TRACE="1"), note=NOTE + ", vkdirty's own trace written too")]
        # The backend NVIDIA's memory gets (async-wp refuses its mappings), on any driver.
        s = dict(v, VKDIRTY_BACKEND="shadow-wp")
        cfgs += [Config(NAME + ":shadow-wp", s, note="vkdirty shadow-wp flushes the dirty pages"),
                 Config(NAME + ":shadow-wp+predict", dict(s, VKDIRTY_PREDICT="1"),
                        note="vkdirty shadow-wp flushes the dirty pages, write prediction on")]
    return cfgs


def with_baseline(cfgs, opts, Config):
    """BENCH_GFXR_BASELINE=<layer dir>:<label>: each chosen gfxreconstruct + vkdirty configuration
    again with that build of the layer ("<name>@<label>"), in the same run."""
    base = os.environ.get("BENCH_GFXR_BASELINE")
    if not base:
        return cfgs
    d, _, label = base.rpartition(":")
    out = list(cfgs)
    for c in cfgs:
        if c.name.startswith(NAME):
            env = dict(c.env, VK_ADD_LAYER_PATH=":".join(x for x in (d, opts.gfxr_layer_dir) if x))
            out.append(Config(f"{c.name}@{label}", env, c.args, f"{c.note}; build {label}"))
    return out


def check_run(opts, cfg, trace, env, log_path, rec, tail):
    """After a gfxreconstruct run: the layer order held (vkdirty warns otherwise), and, in the first
    repetition, the capture replays (`gfxrecon-replay`, its exit status and ERROR lines)."""
    if cfg.name.startswith(NAME):
        try:
            with open(log_path, errors="replace") as f:
                if NOT_BELOW in f.read():
                    rec["error"] = f"{NOT_BELOW} (the loader put it above; see VK_LOADER_DEBUG=layer)"
                    return
        except OSError:
            pass
    if not opts.gfxr_replay or getattr(opts, "rep", 0) > 0 or not os.path.exists(trace):
        return
    log = log_path + ".replay"
    try:
        with open(log, "wb") as lf:
            p = subprocess.run([opts.gfxr_replay, trace], env=env, stdout=lf, stderr=subprocess.STDOUT,
                               timeout=opts.timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        rc = 124
    except OSError as e:
        rec["replay"] = {"rc": None, "error": str(e)}
        return
    with open(log, errors="replace") as f:
        errors = [line.strip() for line in f if "ERROR" in line or "FATAL" in line]
    rec["replay"] = {"rc": rc, "errors": errors[:5]}
    if rc != 0 or errors:
        rec["error"] = f"replay of the capture failed (exit {rc}): {tail(log)}"


def target_rows(agg, fmt, ratio):
    """| case | page_guard overhead | assisted + vkdirty overhead | ratio | replays | rows, 1–10 % dirty."""
    rows = []
    for (workload, case), a in sorted(agg.items()):
        if workload != "stream":
            continue
        pct = case.rsplit(" ", 1)[-1]
        if not (pct.endswith("%") and 1 <= float(pct[:-1]) <= 10):
            continue
        c = a["configs"]
        base = c.get("none", {}).get("median")
        g, v = c.get("gfxr:page_guard", {}), c.get(NAME, {})
        if base is None or v.get("median") is None:
            continue
        og = g["median"] - base if g.get("median") is not None else None
        ov = v["median"] - base
        replayed = "yes" if v.get("ok") and v.get("ok") == v.get("runs") else "no"
        rows.append(f"| {case} | {fmt(og)} | {fmt(ov)} | {ratio(og, ov, '.1f') if og is not None and ov > 0 else '–'} "
                    f"| {replayed} |")
    if not rows:
        return []
    return ["", "| case (1–10 % dirty) | gfxr page_guard overhead ms | gfxr assisted + vkdirty overhead ms "
            "| page_guard ÷ assisted + vkdirty (target ≥ 5×) | every run ok, replay checked |",
            "|---|---:|---:|---:|---|"] + rows
