"""Which run folders a sweep may reuse, and the lock that keeps a second sweep off its folder.

A run folder is skipped (completed) or resumed (interrupted) only if its config.yaml equals the
config the sweep plans now; otherwise, or when its files cannot be read, the sweep stops before
running anything or, with --rerun-changed, runs it again from scratch.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from peftlab.errors import UserError
from peftlab.runs import layout
from peftlab.runs.rundir import read_result, run_status, saved_config_diff

if TYPE_CHECKING:
    from peftlab.sweep.plan import PlannedRun, Sweep


@contextmanager
def sweep_lock(folder: Path):
    """Hold folder/.lock (flock, with our pid in it) while the sweep runs: two sweeps on one folder
    would run the same runs twice and overwrite each other's files. The kernel drops the lock
    when its process dies, so a stale .lock file never blocks."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / layout.SWEEP_LOCK, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "unknown"
            raise UserError(
                f"{folder}: another `peftlab sweep` (pid {pid}) is running on this folder; wait for it "
                f"to finish (or stop it), then run this command again"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def reuse_problem(run_dir: Path, run: PlannedRun, status: str) -> str | None:
    """Why a run folder that would be skipped or resumed cannot be reused as is, or None."""
    if status == "pending":
        return None
    try:
        if status == "unreadable":
            read_result(run_dir)  # raises, with the file and the reason
        diff = saved_config_diff(run_dir, run.cfg)
    except UserError as e:
        return str(e)
    return f"its config.yaml differs: {'; '.join(diff)}" if diff else None


def plan_todo(sweep: Sweep, old: dict, retry_failed: bool, rerun_changed: bool) -> tuple[dict, list]:
    """(sweep.json entries of the runs kept, [(run, 'resume' | 'retry')]). A folder run with other
    settings is rerun (rerun_changed) or stops the sweep before anything runs: a report must not
    mix settings silently."""
    entries: dict[str, dict] = {}
    todo, problems = [], []
    for run in sweep.runs:
        run_dir = sweep.folder / run.name
        status = run_status(run_dir)
        failed = status == "failed" or old.get(run.name, {}).get("status") == "failed"
        if run.of and (run.of in {r.name for r, _ in todo} or status != "completed"):
            todo.append((run, "after"))  # an evaluation of a run that runs again is made again after it
            continue
        # an evaluation of a run holds that run's config (checked on the run itself), not the sweep's plan
        problem = None if failed or run.of else reuse_problem(run_dir, run, status)
        if problem:
            problems.append(f"  - {run.name}: {problem}")
            todo.append((run, "rerun"))
        elif old.get(run.name, {}).get("status") == "failed" and not retry_failed:
            entries[run.name] = old[run.name]
        elif status == "completed":
            entries[run.name] = {
                **old.get(run.name, {}),
                "name": run.name,
                "group": run.group,
                "seed": run.seed,
                "settings": run.settings,
                "status": "completed",
            }
        else:
            todo.append((run, "retry" if failed else "resume"))
    if problems and not rerun_changed:
        raise UserError(
            f"{sweep.folder}: {len(problems)} run folder(s) cannot be reused with this sweep file:\n"
            + "\n".join(problems)
            + "\nNothing was run. Pass --rerun-changed to run them again from "
            "scratch with the current settings, restore the old settings, or use another "
            "output_dir or sweep name."
        )
    for line in problems:
        print(f"sweep: rerunning from scratch (--rerun-changed):\n{line}", flush=True)
    return entries, todo
