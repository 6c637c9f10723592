"""Running a sweep's planned runs: one after another here, or side by side on a backend
(sweep/backends.py); sweep.json saved after every run."""
from __future__ import annotations

import re
import subprocess
import sys
import threading
from datetime import datetime, timezone
from peftlab.sweep.child import WarmStart, child_env
from peftlab.runs.rundir import run_status
from peftlab.sweep.reuse import plan_todo, sweep_lock
from peftlab.runs.rundir import read_json, write_json, write_text
from peftlab.sweep.plan import PlannedRun, Sweep, describe
from peftlab.sweep.progress import Progress, fmt_duration
from peftlab.sweep.process import child_command, entry_of, interrupted_entry, pump, stop_child


def execute(sweep: Sweep, run: PlannedRun, progress: Progress, mode: str, warm: WarmStart,
            next_up: tuple | None = None) -> dict:
    """One run in a child process (started ahead by `warm` when it was the one planned next), and
    the next planned run's process started ahead; returns this run's sweep.json entry."""
    cmd = child_command(sweep, run, mode)
    env = child_env()
    tag = f"[{progress.index}/{progress.total}] {run.name}"

    def on_line(line: str) -> None:
        m = re.match(r"epoch (\d+):", line)
        if m and int(m.group(1)) > 0:
            epoch = int(m.group(1))
            progress.epoch(run.name, epoch)
            print(f"  sweep {tag}: epoch {epoch}/{run.cfg.train.epochs} done, "
                  f"sweep ETA {fmt_duration(progress.eta())}", flush=True)

    (sweep.folder / "logs").mkdir(exist_ok=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with open(sweep.folder / "logs" / f"{run.name}.log", "a", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join(cmd)}   # {started}\n")
        child = warm.take(cmd) or subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        if next_up is not None:
            warm.start(child_command(sweep, *next_up), env)
        tail: list[str] = []
        pumps = [threading.Thread(target=pump, args=(child.stdout, sys.stdout, log, [], on_line), daemon=True),
                 threading.Thread(target=pump, args=(child.stderr, sys.stderr, log, tail), daemon=True)]
        for t in pumps:
            t.start()
        try:
            returncode = child.wait()
        except KeyboardInterrupt:
            stop_child(child)
            raise
        finally:
            for t in pumps:
                t.join(timeout=5)
    return entry_of(sweep, run, returncode, tail, started)


def save_state(sweep: Sweep, entries: dict) -> None:
    write_json(sweep.folder / "sweep.json", {
        "name": sweep.name, "source": str(sweep.source), "description": sweep.description,
        **({"report_epochs": sweep.report_epochs} if sweep.report_epochs else {}),
        "runs": [entries.get(r.name) or {"name": r.name, "group": r.group, "seed": r.seed, "settings": r.settings,
                                         "status": run_status(sweep.folder / r.name)} for r in sweep.runs]})


NOTES = {"resume": "", "retry": "  (retrying a failed run)", "rerun": "  (rerun: its folder had other settings)",
         "after": "  (evaluates the run above)"}


def run_sweep(sweep: Sweep, retry_failed: bool = True, rerun_changed: bool = False, backend=None) -> dict:
    """Run every planned run not yet completed (one after another, or side by side on `backend`, a
    backends.Backend); returns {run name: sweep.json entry}."""
    with sweep_lock(sweep.folder):
        return run_locked(sweep, retry_failed, rerun_changed, backend)


def run_locked(sweep: Sweep, retry_failed: bool, rerun_changed: bool, backend=None) -> dict:
    old_state = read_json(sweep.folder / "sweep.json", {}, fix="delete it: the run folders are kept, and the "
                          "next sweep run rebuilds it from them") or {}
    old = {e["name"]: e for e in old_state.get("runs", [])}
    entries, todo = plan_todo(sweep, old, retry_failed, rerun_changed)
    (sweep.folder / "configs").mkdir(parents=True, exist_ok=True)
    write_text(sweep.folder / "sweep.yaml", sweep.source.read_text(encoding="utf-8"))
    skipped = len(sweep.runs) - len(todo)
    print(f"sweep {sweep.name}: {len(sweep.runs)} runs, {skipped} already done or kept, {len(todo)} to run "
          f"-> {sweep.folder}", flush=True)
    save_state(sweep, entries)
    progress = Progress(len(sweep.runs), skipped)
    if backend is not None and backend.kind != "sequential" and todo:
        from peftlab.sweep.backends import run_parallel

        return run_parallel(sweep, todo, entries, progress, backend, lambda e: save_state(sweep, e))
    warm = WarmStart()
    try:
        return run_todo(sweep, todo, entries, progress, warm)
    finally:
        warm.discard()


def run_todo(sweep: Sweep, todo: list, entries: dict, progress: Progress, warm: WarmStart) -> dict:
    for k, (run, mode) in enumerate(todo):
        progress.start(run.name, run.cfg.train.epochs)
        print(f"\n== sweep [{progress.index}/{progress.total}] {run.name}: {describe(run.settings)}"
              f"{NOTES[mode]}  "
              f"| done {progress.done}, failed {progress.failed}, ETA {fmt_duration(progress.eta())}", flush=True)
        try:
            entry = execute(sweep, run, progress, mode, warm, todo[k + 1] if k + 1 < len(todo) else None)
        except KeyboardInterrupt:
            entries[run.name] = interrupted_entry(run)
            save_state(sweep, entries)
            raise
        entries[run.name] = entry
        progress.finish(run.name, entry["status"] == "completed")
        if entry["status"] == "failed":
            print(f"== sweep: {run.name} FAILED: {entry['error']} (the sweep goes on)", flush=True)
        save_state(sweep, entries)
    return entries
