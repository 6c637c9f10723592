"""A sweep's progress: one record (runs done, failed, running, total, ETA) and one ETA rule, for every
backend. The console lines print the record, sweep.json holds it under `progress` (rewritten when a
run starts or ends, and as epochs end: at a sequential run's epoch line, with each side-by-side status
line), and the dashboard reads it there, rather than each of the three estimating on its own.

The ETA rule, for `slots` runs at once (1: the sequential sweep): a running run that has finished an
epoch goes on at its own pace (elapsed / epochs done x its epochs); one that has not, and each run still
to come, takes the finished runs' mean duration (before any run finished: the running runs' own pace).
The work left is shared by the slots. With one slot these are the sequential sweep's numbers as they
were before the backends shared this code; with several and no epoch known yet, the parallel sweep's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


@dataclass
class Running:
    started: float
    epochs: int
    epochs_done: int = 0


class Progress:
    """Runs done and failed (`done` starts at the runs kept from earlier), the runs running, and the ETA.
    `index` counts the runs started (kept ones included): the [i/total] of the console lines.
    `publish(record)` is set by the loop that runs the runs: it writes the record to sweep.json. It may
    be called from a thread that reads a run's output (an epoch's end), so it must be thread-safe."""

    def __init__(self, total: int, done: int, slots: int = 1, clock=time.time):
        self.total, self.done, self.failed, self.durations = total, done, 0, []
        self.index, self.slots, self.clock = done, max(1, slots), clock
        self.running: dict[str, Running] = {}
        self.publish = lambda record: None

    def start(self, name: str, epochs: int) -> int:
        self.index += 1
        self.running[name] = Running(self.clock(), max(1, epochs))
        return self.index

    def epoch(self, name: str, epochs_done: int) -> None:
        if name in self.running:
            self.running[name].epochs_done = epochs_done

    def finish(self, name: str, ok: bool) -> None:
        started = self.running.pop(name).started
        self.durations.append(self.clock() - started)
        self.done += ok
        self.failed += not ok

    def skipped(self, name: str) -> None:
        """A run not started because the run it evaluates failed: counted as failed, with no duration."""
        self.index += 1
        self.failed += 1

    def interrupted(self, name: str) -> None:
        """A run stopped by Ctrl-C: no longer running, and no duration (it did not finish)."""
        self.running.pop(name, None)

    def eta(self) -> float | None:
        now = self.clock()
        mean = sum(self.durations) / len(self.durations) if self.durations else None
        paced = [(now - r.started) / r.epochs_done * r.epochs for r in self.running.values() if r.epochs_done > 0]
        per_run = mean if mean is not None else (sum(paced) / len(paced) if paced else None)
        waiting = self.total - self.index
        left = 0.0
        for r in self.running.values():
            elapsed = now - r.started
            run_total = elapsed / r.epochs_done * r.epochs if r.epochs_done > 0 else per_run
            if run_total is None:
                return None
            left += max(0.0, run_total - elapsed)
        if waiting and per_run is None:
            return None
        return (left + waiting * (per_run or 0.0)) / self.slots

    def record(self) -> dict:
        """The progress record. eta_s is cut (not rounded) to tenths, so a console line that prints its
        whole seconds shows what the unrounded ETA showed."""
        eta = self.eta()
        return {
            "done": self.done,
            "failed": self.failed,
            "running": list(self.running),
            "total": self.total,
            "eta_s": None if eta is None else int(eta * 10) / 10,
            "at": round(self.clock(), 3),
        }

    def changed(self) -> dict:
        """The record now, published (sweep.json) and returned for the console line."""
        record = self.record()
        self.publish(record)
        return record


def eta_now(record: dict | None, now: float | None = None) -> float | None:
    """A published record's ETA as of `now`: counted down since it was written (the dashboard polls
    more often than the sweep rewrites it)."""
    if not isinstance(record, dict) or not isinstance(record.get("eta_s"), (int, float)):
        return None
    at = record.get("at") if isinstance(record.get("at"), (int, float)) else None
    spent = (time.time() if now is None else now) - at if at is not None else 0.0
    return max(0.0, record["eta_s"] - max(0.0, spent))
