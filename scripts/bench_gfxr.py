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


def check_run(opts, cfg, trace, env, log_path, rec, tail):
    """After a gfxreconstruct run: the layer order held (vkdirty warns otherwise), and, in the first
    repetition, the capture replays (`gfxrecon-replay`, its exit status and ERROR lines)."""
    if cfg.name == NAME:
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
