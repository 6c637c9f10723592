"""Which run folders a sweep may reuse, and the lock that keeps a second sweep off its folder.

A run folder is skipped (completed) or resumed (interrupted) only if its config.yaml equals the
config the sweep plans now (an evaluation row's: the config its `peftlab eval` would write now);
otherwise, or when its files cannot be read, the sweep stops before running anything or, with
--rerun-changed, runs it again from scratch (as it does, with --rerun-changed, a run another peftlab
version made). A run that runs again starts without its earlier folder (move_aside), which comes back
only if the new run wrote nothing, and then under a failed entry the report does not show.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from peftlab.config.settings import Config, TextLoader, load_config
from peftlab.errors import UserError
from peftlab.runs import layout
from peftlab.runs.rundir import read_result, read_yaml, run_status, saved_config_diff
from peftlab.sweep.plan import eval_overrides

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


def evaluation_config(sweep: Sweep, run: PlannedRun) -> Config:
    """The config.yaml an evaluation row of one of the sweep's runs (`of:`) writes: that run's planned
    config, the model replaced by the export it evaluates (`export:`), the row's own settings over it;
    built as its `peftlab eval` command line (process.command_of) builds it, so a changed `shots:` or
    `export:` tells as a changed training setting does."""
    trained = next(r for r in sweep.runs if r.name == run.of)
    model = [f"model={export_path(sweep, run)}"] if run.export else []
    cfg = load_config(None, model + eval_overrides(run), base=trained.cfg.to_dict())
    if not cfg.data.label_names:  # as inference.session.open_session fills them in (an export's config too)
        result = read_result(sweep.folder / run.of)
        labels = result.get("labels") if isinstance(result, dict) else None
        if labels:
            cfg.data.label_names = list(labels)
    return cfg


def export_path(sweep: Sweep, run: PlannedRun) -> Path:
    """What an `export:` row evaluates: the trained run's merged folder under EXPORTS, or a GGUF file in it
    (as export.merge.ensure_export names them)."""
    merged = sweep.folder / layout.EXPORTS / layout.merged_export(run.of)
    return merged if run.export == "merged" else merged / layout.gguf_file(run.export)


def planned_config(sweep: Sweep, run_dir: Path, run: PlannedRun) -> Config:
    """The config the folder must hold to be reused: the run's own, or an evaluation row's (evaluation_config),
    whose export path may be spelled relative or absolute (the dashboard passes an absolute --output-dir)."""
    if not run.of:
        return run.cfg
    cfg = evaluation_config(sweep, run)
    if run.export:
        saved = read_yaml(run_dir / layout.CONFIG, TextLoader)
        section = saved.get("model") if isinstance(saved, dict) else None
        model = section.get("model") if isinstance(section, dict) else None
        if isinstance(model, str) and Path(model).resolve() == Path(cfg.model.model).resolve():
            cfg.model.model = model
    return cfg


def reuse_problem(sweep: Sweep, run_dir: Path, run: PlannedRun, status: str) -> str | None:
    """Why a run folder that would be skipped or resumed cannot be reused as is, or None."""
    if status == "pending":
        return None
    try:
        if status == "unreadable":
            read_result(run_dir)  # raises, with the file and the reason
        diff = saved_config_diff(run_dir, planned_config(sweep, run_dir, run))
        earlier = earlier_training(sweep, run_dir, run) if run.of and not diff else None
    except UserError as e:
        return str(e)
    return f"its config.yaml differs: {'; '.join(diff)}" if diff else earlier


def earlier_training(sweep: Sweep, run_dir: Path, run: PlannedRun) -> str | None:
    """Why an evaluation row scored another training of its run than the one in the run's folder now (the
    run trained again since: the same config, other weights), or None; an evaluation that does not say
    which training it scored (older peftlab) is taken as it is."""
    mine, trained = read_result(run_dir), read_result(sweep.folder / run.of)
    source = mine.get("source") if isinstance(mine, dict) else None
    scored = source.get("run_finished_at") if isinstance(source, dict) else None
    now = trained.get("finished_at") if isinstance(trained, dict) else None
    if scored and now and scored != now:
        return f"it scored {run.of} as trained until {scored}, and {run.of} was trained again (until {now})"
    return None


def made_by(run_dir: Path) -> str | None:
    """The peftlab version that made a completed folder, when it is not this one ('unknown' when the folder
    does not say): --rerun-changed runs it again, since a fix of scoring between versions changes numbers."""
    import peftlab

    try:
        result = read_result(run_dir) or {}
    except UserError:
        return None  # unreadable: reuse_problem says so
    versions = result.get("versions") if isinstance(result, dict) else None
    had = versions.get("peftlab") if isinstance(versions, dict) else None
    return None if had == peftlab.__version__ else str(had or "unknown")


def held(run: PlannedRun, status: str, why: str) -> dict:
    """The sweep.json entry of a run that runs again, until it starts: its folder still holds the earlier
    run (other settings, a failure, an older peftlab), which the report must not show under this plan."""
    return run.entry(status, error=why)


def plan_todo(sweep: Sweep, old: dict, retry_failed: bool, rerun_changed: bool) -> tuple[dict, list]:
    """(sweep.json entries of the runs kept, [(run, 'resume' | 'retry' | 'rerun' | 'after')]). A folder run
    with other settings (an evaluation row: of another run, another export or shots) is rerun
    (rerun_changed) or stops the sweep before anything runs: a report must not mix settings silently.
    With rerun_changed a folder made by another peftlab version is rerun too; without it, it is kept and
    named (the report notes which code made which run)."""
    import peftlab

    entries: dict[str, dict] = {}
    todo, problems, older = [], [], []
    for run in sweep.runs:
        run_dir = sweep.folder / run.name
        status = run_status(run_dir)
        listed = old.get(run.name, {}).get("status")  # "changed": planned to run again, not run yet
        failed = status == "failed" or listed in ("failed", "changed")
        if run.of and (run.of in {r.name for r, _ in todo} or status != "completed"):
            todo.append((run, "after"))  # an evaluation of a run that runs again is made again after it
            if status == "completed":
                entries[run.name] = held(run, "changed", f"evaluates {run.of}, which runs again")
            continue
        problem = None if failed else reuse_problem(sweep, run_dir, run, status)
        version = made_by(run_dir) if status == "completed" and not failed and not problem else None
        if version and rerun_changed:
            problem = f"made by peftlab {version} (this is {peftlab.__version__})"
        elif version:
            older.append(f"{run.name} ({version})")
        if problem:
            problems.append(f"  - {run.name}: {problem}")
            todo.append((run, "rerun"))
            entries[run.name] = held(run, "changed", f"runs again: {problem}")
        elif listed == "failed" and not retry_failed:
            entries[run.name] = old[run.name]
        elif status == "completed" and not failed:
            entries[run.name] = {
                **old.get(run.name, {}),
                "name": run.name,
                "group": run.group,
                "seed": run.seed,
                "settings": run.settings,
                "status": "completed",
            }
        else:
            todo.append((run, "rerun" if listed == "changed" else "retry" if failed else "resume"))
            if failed:  # until it starts: not the earlier folder's numbers under this plan
                word = listed if listed in ("failed", "changed") else "failed"
                entries[run.name] = held(run, word, old.get(run.name, {}).get("error") or f"its folder says {status}")
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
    if older:
        print(
            f"sweep: kept {len(older)} run(s) made by another peftlab version than this {peftlab.__version__}: "
            f"{', '.join(older)}; the report says which code made which run, and --rerun-changed runs them again",
            flush=True,
        )
    return entries, todo


def move_aside(run_dir: Path) -> Path | None:
    """A run that runs again (rerun, retry, an evaluation made again) starts without its earlier folder,
    which waits at layout.temporary(OLD) until the run ends (settle_aside): a run that fails before it
    writes anything must not leave the earlier run's result.json in its place, saying completed with
    other settings. A sweep killed meanwhile has it put back (or dropped, if the new run had begun) by
    clear_leftovers when it starts again."""
    if not run_dir.exists():
        return None
    aside = layout.temporary(run_dir, layout.OLD)
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(run_dir, aside)
    return aside


def settle_aside(run_dir: Path, aside: Path | None) -> str:
    """After the run: the earlier folder is dropped when the run wrote its own (completed, or failed with
    its reason), and put back when it wrote nothing (its sweep.json entry then says failed, so the
    report shows the failure, not the earlier numbers). Returns what was done, for the entry."""
    if aside is None or not aside.exists():
        return ""
    if run_dir.is_dir() and not any(not p.is_dir() or p.is_symlink() for p in run_dir.rglob("*")):
        shutil.rmtree(run_dir)  # empty folders only: the Trainer's output_dir, made before the run failed
    if run_dir.exists():
        shutil.rmtree(aside, ignore_errors=True)
        return ""
    os.replace(aside, run_dir)
    return "the earlier folder (another run of this name) was put back, unreported"
