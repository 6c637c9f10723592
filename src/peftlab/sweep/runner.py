"""Running a sweep's planned runs: one scheduling loop (run_todo) for every backend, driving a launcher
(backends.Launcher): the sequential one here, or a pool or Ray launcher (backends.py) that runs them side
by side. The loop picks the next run (an evaluation of another run only after that run), announces it,
keeps Progress (progress.py: one ETA rule for 1..N slots), writes sweep.json after every run and saves
the runs in progress as interrupted on Ctrl-C. The progress record (done, failed, running, total, eta_s)
is what the console lines print and what sweep.json holds under `progress` for the dashboard.

The sequential sweep is the loop with a launcher of one slot that runs its run in the foreground,
not a pool of one worker thread: its process's output then goes to the console byte for byte
(progress bars redrawn in place, no name prefix), Ctrl-C lands in the wait for that process, which
is given time to save its state and then an interrupt of its own (process.stop_child; a pool thread
would not see the interrupt), and the next planned run's process is started ahead while this one runs
(child.WarmStart). Its submit() returns once the run has ended, with a finished Future, so the loop
is the same code for both.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from datetime import datetime, timezone
from pathlib import Path

from peftlab.runs import layout
from peftlab.runs.rundir import clear_leftovers, read_json, run_status, write_json, write_text
from peftlab.sweep.backends import Launcher, side_by_side
from peftlab.sweep.child import WarmStart, child_env
from peftlab.sweep.plan import PlannedRun, Sweep, describe
from peftlab.sweep.process import (
    child_command,
    completed_entry,
    entry_of,
    interrupted_entry,
    pump,
    stop_child,
)
from peftlab.sweep.progress import Progress, fmt_duration
from peftlab.sweep.reuse import held, move_aside, plan_todo, settle_aside, sweep_lock
from peftlab.sweep.search import settle_stale


def execute(
    sweep: Sweep, run: PlannedRun, progress: Progress, mode: str, warm: WarmStart, next_up: tuple | None = None
) -> dict:
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
            record = progress.record()
            print(
                f"  sweep {tag}: epoch {epoch}/{run.cfg.train.epochs} done, sweep ETA {fmt_duration(record['eta_s'])}",
                flush=True,
            )
            try:
                progress.publish(record)
            except Exception:  # noqa: BLE001 - this thread copies the run's output: it must go on (the
                pass  # sweep's next save of sweep.json, after the run, reports a file system that fails)

    (sweep.folder / layout.LOGS).mkdir(exist_ok=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with open(sweep.folder / layout.LOGS / layout.run_log(run.name), "a", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join(cmd)}   # {started}\n")
        child = warm.take(cmd) or subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        if next_up is not None:
            warm.start(child_command(sweep, *next_up), env)
        tail: list[str] = []
        pumps = [
            threading.Thread(target=pump, args=(child.stdout, sys.stdout, log, [], on_line), daemon=True),
            threading.Thread(target=pump, args=(child.stderr, sys.stderr, log, tail), daemon=True),
        ]
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


class SequentialLauncher(Launcher):
    """One run at a time, in the loop's own thread (see the module docstring). `execute` is looked up
    in this module at each run, so a test can replace it."""

    slots = 1
    foreground = True

    def __init__(self, sweep: Sweep, progress: Progress):
        super().__init__(sweep)
        self.progress, self.warm = progress, WarmStart()

    def submit(self, run: PlannedRun, mode: str, upcoming: tuple | None) -> Future:
        ended: Future = Future()
        ended.set_result(execute(self.sweep, run, self.progress, mode, self.warm, upcoming))
        return ended

    def outcome(self, future: Future, run: PlannedRun, started: str) -> dict:
        return future.result()  # execute made the entry

    def close(self) -> None:
        self.warm.discard()


SAVING = threading.Lock()  # sweep.json is also written by the thread reading a sequential run's output


def save_state(sweep: Sweep, entries: dict, record: dict) -> None:
    """sweep.json: the plan, each run's entry (or its folder's status), and the progress record."""
    with SAVING:
        write_json(
            sweep.folder / layout.SWEEP_STATE,
            {
                "name": sweep.name,
                "source": str(sweep.source),
                "description": sweep.description,
                **({"report_epochs": sweep.report_epochs} if sweep.report_epochs else {}),
                "runs": [entries.get(r.name) or r.entry(run_status(sweep.folder / r.name)) for r in sweep.runs],
                "progress": record,
            },
        )


NOTES = {
    "resume": "",
    "retry": "  (retrying a failed run)",
    "rerun": "  (rerun: its folder had other settings, or another peftlab made it)",
    "after": "  (evaluates the run above)",
}


def run_sweep(sweep: Sweep, retry_failed: bool = True, rerun_changed: bool = False, backend=None) -> dict:
    """Run every planned run not yet completed (one after another, or side by side on `backend`, a
    backends.Backend); returns {run name: sweep.json entry}."""
    with sweep_lock(sweep.folder):
        return run_locked(sweep, retry_failed, rerun_changed, backend)


def run_locked(sweep: Sweep, retry_failed: bool, rerun_changed: bool, backend=None) -> dict:
    for folder in (sweep.folder, sweep.folder / layout.EXPORTS):  # a killed sweep's half-written files
        for line in clear_leftovers(folder) if folder.is_dir() else []:
            print(f"sweep {sweep.name}: {line} (left by a killed process)", flush=True)
    old_state = (
        read_json(
            sweep.folder / layout.SWEEP_STATE,
            {},
            fix="delete it: the run folders are kept, and the next sweep run rebuilds it from them",
        )
        or {}
    )
    old = {e["name"]: e for e in old_state.get("runs", [])}
    entries, todo = plan_todo(sweep, old, retry_failed, rerun_changed)
    (sweep.folder / layout.CONFIGS).mkdir(parents=True, exist_ok=True)
    if sweep.search:
        settle_stale(sweep.search, sweep)
    write_text(sweep.folder / layout.SWEEP_COPY, sweep.source.read_text(encoding="utf-8"))
    skipped = len(sweep.runs) - len(todo)
    print(
        f"sweep {sweep.name}: {len(sweep.runs)} runs, {skipped} already done or kept, {len(todo)} to run "
        f"-> {sweep.folder}",
        flush=True,
    )
    progress = Progress(len(sweep.runs), skipped)
    save_state(sweep, entries, progress.record())
    if not todo:
        return entries  # no backend started (a Ray instance takes seconds) for nothing to run
    if backend is None or backend.kind == "sequential":
        launcher = SequentialLauncher(sweep, progress)
    else:
        launcher = side_by_side(sweep, backend)
    return run_todo(sweep, todo, entries, progress, launcher)


def run_todo(sweep: Sweep, todo: list, entries: dict, progress: Progress, launcher: Launcher) -> dict:
    """Run `todo` ([(PlannedRun, mode)]) `launcher.slots` at a time; each finished run's entry goes into
    `entries` and sweep.json as soon as it ends. On Ctrl-C the runs in progress are saved as interrupted
    (the same command resumes them) and the interrupt goes on up."""
    progress.slots = launcher.slots
    progress.publish = lambda record: save_state(sweep, entries, record)
    pending = list(todo)
    active: dict[str, tuple] = {}  # run name -> (run, started): submitted (a foreground run: being submitted)
    handles: dict[Future, str] = {}
    asides: dict[str, tuple] = {}  # run name -> (run, its earlier folder, moved aside while it runs again)
    last_status = 0.0
    stopped: list[PlannedRun] = []  # the runs in progress at a Ctrl-C
    try:
        while pending or active:
            unfinished = {r.name for r, _ in pending} | set(active)
            for item in list(pending):
                run, mode = item
                if len(active) >= launcher.slots:
                    break
                if run.of in unfinished:
                    continue  # evaluates a run of this sweep that has not finished yet
                pending.remove(item)
                if run.of and entries.get(run.of, {}).get("status") in ("failed", "changed"):
                    # its run failed: the folder may hold an earlier training put back (settle_aside),
                    # whose weights this plan did not make
                    entry = entries[run.name] = held(run, "failed", f"not run: {run.of}, which it evaluates, failed")
                    progress.skipped(run.name)
                    ended(run, entry, launcher.foreground)
                    save_state(sweep, entries, progress.record())
                    continue
                progress.start(run.name, run.cfg.train.epochs)
                announce(run, mode, progress, progress.changed(), launcher.foreground)
                if mode != "resume":  # from scratch: the earlier folder waits aside until the run ends
                    asides[run.name] = (run, move_aside(sweep.folder / run.name))
                    entries.pop(run.name, None)  # its folder tells its state now (running, then done)
                active[run.name] = (run, datetime.now(timezone.utc).isoformat(timespec="seconds"))
                handles[launcher.submit(run, mode, pending[0] if pending else None)] = run.name
            done, _ = wait(list(handles), timeout=15, return_when=FIRST_COMPLETED)
            for future in done:
                run, started = active.pop(handles.pop(future))
                launcher.release(future)
                entry = entries[run.name] = launcher.outcome(future, run, started)
                put_back = settle_aside(sweep.folder / run.name, asides.pop(run.name, (run, None))[1])
                if put_back and entry["status"] != "completed":
                    entry["error"] = f"{entry.get('error', 'failed')}; {put_back}"
                progress.finish(run.name, entry["status"] == "completed")
                ended(run, entry, launcher.foreground)
                save_state(sweep, entries, progress.record())
            if not launcher.foreground and active and (done or time.time() - last_status > 60):
                last_status = time.time()
                print(status_line(sweep, [r for r, _ in active.values()], progress), flush=True)
    except KeyboardInterrupt:
        stopped = [run for run, _ in active.values()]
        for run in stopped:
            entries[run.name] = interrupted_entry(run)
            progress.interrupted(run.name)
        save_state(sweep, entries, progress.record())
        launcher.stop()
        raise
    finally:
        launcher.close()  # the runs have ended: each stopped one left its own folder, or its earlier one returns
        settled = False
        for run, aside in asides.values():
            if settle_aside(sweep.folder / run.name, aside):  # it had written nothing: sweep.json must not say
                entries[run.name] = held(run, "changed", "stopped before it wrote its folder; it runs again")
                settled = True  # interrupted (and resume it), nor leave the earlier run's folder as this one
        for run in stopped:  # a run that wrote its completed result.json just before the Ctrl-C reached it:
            if entries[run.name]["status"] == "interrupted" and run_status(sweep.folder / run.name) == "completed":
                entries[run.name] = completed_entry(run)  # sweep.json says what its folder says
                progress.done += 1
                settled = True
        if settled:
            save_state(sweep, entries, progress.record())
    return entries


def announce(run: PlannedRun, mode: str, progress: Progress, record: dict, foreground: bool) -> None:
    """A run's first line: in the foreground, the sweep's state above the run's own output; side by side,
    where its lines start among the other runs' (the state is in status_line)."""
    if foreground:
        print(
            f"\n== sweep [{progress.index}/{record['total']}] {run.name}: {describe(run.settings)}"
            f"{NOTES[mode]}  "
            f"| done {record['done']}, failed {record['failed']}, ETA {fmt_duration(record['eta_s'])}",
            flush=True,
        )
    else:
        print(f"== sweep [{progress.index}/{progress.total}] start {run.name}: {describe(run.settings)}", flush=True)


def ended(run: PlannedRun, entry: dict, foreground: bool) -> None:
    """A run's last line: in the foreground only a failure (its own output showed the rest)."""
    failed = entry["status"] != "completed"
    if not foreground:
        word = f"FAILED: {entry.get('error', '')}" if failed else "done"
        print(f"== sweep: {run.name} {word}", flush=True)
    elif failed:
        print(f"== sweep: {run.name} FAILED: {entry['error']} (the sweep goes on)", flush=True)


def status_line(sweep: Sweep, running: list, progress: Progress) -> str:
    """Side by side: the runs in progress with their epochs (from their folders, which every backend
    can read, on Ray through the storage every node shares) and the sweep's state, published."""
    states = []
    for run in running:
        done_epochs = epochs_done(sweep.folder / run.name) if run.kind == "train" else 0
        progress.epoch(run.name, done_epochs)
        states.append(
            f"{run.name} (epoch {done_epochs}/{run.cfg.train.epochs})" if run.kind == "train" else f"{run.name} (eval)"
        )
    record = progress.changed()
    return (
        f"== sweep: running {', '.join(states)} | done {record['done']}/{record['total']}, "
        f"failed {record['failed']}, ETA {fmt_duration(record['eta_s'])}"
    )


def epochs_done(run_dir: Path) -> int:
    """The epochs a run has finished, from its folder's metrics.jsonl (epoch 0 is its first line)."""
    try:
        lines = (run_dir / layout.METRICS).read_text().count("\n")
    except OSError:
        lines = 0
    return max(0, lines - 1)
