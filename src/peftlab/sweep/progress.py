"""Sweep-level progress: runs done and failed, and the ETA of the runs to come."""
from __future__ import annotations

import time


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Progress:
    """Sweep-level ETA: finished runs' mean duration for the runs to come, epochs for the current one."""

    def __init__(self, total: int, done: int):
        self.total, self.done, self.failed, self.durations = total, done, 0, []
        self.index, self.started, self.epochs = 0, time.time(), 1

    def start(self, index: int, epochs: int) -> None:
        self.index, self.started, self.epochs = index, time.time(), max(1, epochs)

    def finish(self, ok: bool) -> None:
        self.durations.append(time.time() - self.started)
        self.done += ok
        self.failed += not ok

    def eta(self, epochs_done: int = 0) -> float | None:
        elapsed = time.time() - self.started
        per_run = sum(self.durations) / len(self.durations) if self.durations else None
        if epochs_done > 0:
            current_total = elapsed / epochs_done * self.epochs
        elif per_run is not None:
            current_total = per_run
        else:
            return None
        per_run = per_run if per_run is not None else current_total
        return max(0.0, current_total - elapsed) + per_run * (self.total - self.index)
