"""`peftlab sweep FILE --estimate`: each planned run's time per epoch, total time and peak memory, predicted
before anything real runs, printed and written to the sweep folder's estimate.json (the report then sets them
beside what the runs measured: report/cost.py).

A probe (probe.py) trains a run's own config through `peftlab train`'s code on a few batches, in a process of
its own, one probe at a time, in a temporary folder deleted afterwards: no run folder is touched. Its measured
seconds per padded token of a training step and of an evaluation are scaled to the run's full data by the
token lengths of that data (padding per batch: training/cost.py), and its seconds that do not grow with the
data (loading, saving) are added once per run.

Runs whose configs differ only in what does not change the cost of a step share one probe: seed, learning rate
and schedule, epochs (the prediction multiplies by them) and the LoRA rank and alpha. Rank: the demo's LoRA
runs took 36.6 s (r=8) and 36.8 s (r=16) per epoch (scaffold.py's measures), r=4 to r=16 adapters are under
1% of MiniLM's weights; the shared probe uses the largest rank of the runs it stands for, so memory is not
under-predicted.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from peftlab.runs import layout
from peftlab.runs.rundir import run_status, write_json, write_yaml
from peftlab.sweep.child import child_env
from peftlab.sweep.plan import PlannedRun, Sweep
from peftlab.sweep.probe import PROBE_EPOCHS, PROBE_FILE
from peftlab.sweep.progress import fmt_duration
from peftlab.training.cost import (
    Rates,
    eval_tokens,
    fixed_seconds,
    padded_tokens,
    predict_run,
    shuffled_padded_tokens,
)

# config keys that leave a step's cost as it is (see the module docstring for the rank)
SHARED = {
    "train": (
        *("seed", "lr", "epochs", "output_dir", "run_name", "warmup_ratio", "lr_scheduler", "weight_decay"),
        *("max_grad_norm", "logging_steps", "save_steps", "keep_checkpoints"),
    ),
    "eval": ("metric_for_best", "early_stopping_patience"),
    "method": ("lora_rank", "lora_alpha"),
}


PROBE_TIMES = ("wall_s", "imports_s", "data_s", "epoch_train_s", "eval_s")


def probe_key(run: PlannedRun) -> str:
    """The run's config without the keys that do not change its cost: runs with one key share a probe."""
    data = run.cfg.to_dict()
    for section, keys in SHARED.items():
        for key in keys:
            data[section].pop(key, None)
    return json.dumps(data, sort_keys=True, default=str)


def probe_groups(runs: list[PlannedRun]) -> dict[str, list[PlannedRun]]:
    groups: dict[str, list[PlannedRun]] = {}
    for run in runs:
        groups.setdefault(probe_key(run), []).append(run)
    return groups


def representative(runs: list[PlannedRun]):
    """The config a shared probe trains: that of the run with the largest rank among them (the first of those)."""
    return max(runs, key=lambda r: r.cfg.method.lora_rank).cfg


def run_probe(cfg, label: str) -> dict:
    """One probe in its own process; its output goes to a log in the temporary folder, shown if it fails."""
    folder = Path(tempfile.mkdtemp(prefix="peftlab-probe-"))
    try:
        config = folder / layout.CONFIG
        write_yaml(config, cfg.to_dict())
        log = folder / "probe.log"
        with open(log, "w", encoding="utf-8") as out:
            code = subprocess.call(
                [sys.executable, "-m", "peftlab.sweep.probe", str(config), str(folder)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=child_env(),
            )
        if code != 0 or not (folder / PROBE_FILE).is_file():
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or ["no output"]
            return {"error": f"probe of {label} failed (exit {code}): {tail[0][:300]}"}
        return json.loads((folder / PROBE_FILE).read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def rates_of(measured: dict, cfg) -> Rates:
    """Seconds per padded token (training: the last, warm epoch; evaluation: the evaluations after epoch 0)
    and the fixed seconds of a probe run."""
    t, e, lengths = cfg.train, cfg.eval, measured["probe_lengths"]
    grouped = measured.get("group_by_length", False)
    epoch_tokens = shuffled_padded_tokens(lengths["train"], t.batch_size, grouped=grouped)
    train_s = measured["epoch_train_s"][-1] / max(1.0, epoch_tokens)
    # the fastest evaluation after epoch 0 (the first forward passes of a process are slow): on 3 batches one
    # pass slowed by the machine (a memory allocation, another process) would be multiplied by every pass
    warm = [s for epoch, s in measured["eval_s"].items() if int(epoch) > 0] or list(measured["eval_s"].values())
    eval_s = min(warm) / max(1, padded_tokens(lengths["validation"], e.eval_batch_size))
    evaluated = eval_s * eval_tokens(lengths, e.eval_batch_size, PROBE_EPOCHS, e.eval_at_start)
    fixed = fixed_seconds(measured["wall_s"], measured["imports_s"], sum(measured["epoch_train_s"]), evaluated)
    return Rates(train_s, eval_s, fixed + measured["data_s"], measured["imports_s"])


def estimate_sweep(sweep: Sweep, say=print) -> dict:
    """Probe each distinct cost of the runs still to train, predict every run, print and write estimate.json."""
    todo = [r for r in sweep.runs if r.kind == "train" and run_status(sweep.folder / r.name) != "completed"]
    groups = probe_groups(todo)
    say(f"sweep {sweep.name}: estimating {len(todo)} runs with {len(groups)} probes (a few batches each)")
    runs = {}
    for i, group in enumerate(groups.values(), 1):
        cfg = representative(group)
        say(f"  probe {i}/{len(groups)}: {', '.join(r.name for r in group)}")
        measured = run_probe(cfg, group[0].name)
        for run in group:
            runs[run.name] = predicted_run(measured, cfg, run, first=run is todo[0])
    estimate = summarize(sweep, runs)
    sweep.folder.mkdir(parents=True, exist_ok=True)
    write_json(sweep.folder / layout.ESTIMATE, estimate)
    for line in estimate_lines(estimate):
        say(line)
    say(f"estimate written to {sweep.folder / layout.ESTIMATE}")
    return estimate


def predicted_run(measured: dict, cfg, run: PlannedRun, first: bool) -> dict:
    """One run's estimate.json entry from its probe (`cfg`: the config the probe trained). first: the sweep's
    first run, which imports at its turn; the others were started ahead (child.WarmStart)."""
    if "error" in measured:
        return {"error": measured["error"]}
    rates = rates_of(measured, cfg)
    grouped = measured.get("group_by_length", False)
    predicted = predict_run(rates, measured["lengths"], run.cfg.train, run.cfg.eval, imports=first, grouped=grouped)
    return {
        **predicted,
        "rates": {k: round(v, 9) for k, v in dataclasses.asdict(rates).items()},
        "probe_measured": {k: measured[k] for k in PROBE_TIMES},  # seconds, as the probe's process measured them
        "epochs": run.cfg.train.epochs,
        "peak_memory_mb": measured["peak_memory_mb"],
        "peak_memory_kind": measured["peak_memory_kind"],
        "probe": cfg.train.run_name,  # the run whose config was probed (largest rank) for this one
    }


def summarize(sweep: Sweep, runs: dict) -> dict:
    """estimate.json: per run and in total (the total is the sweep's time, one run after another)."""
    ok = [r for r in runs.values() if "run_s" in r]
    return {
        "sweep": sweep.name,
        "runs": runs,
        "total": {
            "run_s": round(sum(r["run_s"] for r in ok), 1),
            "peak_memory_mb": max((r["peak_memory_mb"] for r in ok), default=None),
            "runs": len(ok),
            "not_estimated": len(runs) - len(ok),
        },
        "note": NOTE,
    }


NOTE = (
    "Predicted by probes of a few batches of each run's own config on this machine, one run at a time; runs "
    "side by side (--workers) share the machine and take longer each. Early stopping ends runs sooner."
)


def estimate_lines(estimate: dict) -> list[str]:
    """The console's table: per run, time per epoch, the run's time and peak memory; then the total."""
    runs = estimate["runs"]
    width = max([len(n) for n in runs] + [5])
    lines = [f"  {'run':<{width}}  {'time/epoch':>10}  {'run time':>12}  {'peak memory':>12}"]
    for name, r in runs.items():
        if "error" in r:
            lines.append(f"  {name:<{width}}  not estimated: {r['error']}")
            continue
        lines.append(
            f"  {name:<{width}}  {fmt_duration(r['time_per_epoch_s']):>10}  {fmt_duration(r['run_s']):>12}  "
            f"{r['peak_memory_mb']:>8,.0f} MiB"
        )
    total = estimate["total"]
    peak = f"{total['peak_memory_mb']:,.0f} MiB" if total["peak_memory_mb"] is not None else "?"
    lines.append(f"  {'total':<{width}}  {'':>10}  {fmt_duration(total['run_s']):>12}  {peak:>12} (the largest)")
    return lines
