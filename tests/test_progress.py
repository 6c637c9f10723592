"""The sweep's one ETA rule (sweep/progress.py) on a fake clock: with one slot it gives the numbers the
sequential sweep printed before the backends shared it, with several and no epoch known the parallel
sweep's; the record the console, sweep.json and the dashboard read. The one loop (runner.run_todo)
with its launchers' child processes replaced: the console lines each backend printed before they
shared it, an evaluation after its run, Ctrl-C. No process, no torch."""

from __future__ import annotations

import random

import pytest

from peftlab.sweep.progress import Progress, eta_now, fmt_duration


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def old_sequential_eta(durations, elapsed, epochs_done, epochs, total, index):
    """Progress.eta of the sequential sweep as it was (epochs_done passed in by the epoch line)."""
    per_run = sum(durations) / len(durations) if durations else None
    if epochs_done > 0:
        current_total = elapsed / epochs_done * max(1, epochs)
    elif per_run is not None:
        current_total = per_run
    else:
        return None
    per_run = per_run if per_run is not None else current_total
    return max(0.0, current_total - elapsed) + per_run * (total - index)


def old_parallel_eta(durations, elapsed_of_running, slots, waiting):
    """backends.parallel_eta as it was."""
    if not durations:
        return None
    mean = sum(durations) / len(durations)
    left = [max(0.0, mean - e) for e in elapsed_of_running]
    return (sum(left) + waiting * mean) / max(1, slots)


def test_one_slot_counts_as_the_sequential_sweep():
    clock = Clock()
    p = Progress(total=4, done=1, clock=clock)  # one run kept from before
    assert p.start("a", epochs=3) == 2 and p.eta() is None  # nothing finished, no epoch yet: unknown
    clock.t += 30
    p.epoch("a", 1)
    assert p.eta() == pytest.approx(60 + 90 * 2)  # a: 30 s an epoch, 2 to go; each run to come as long as a
    clock.t += 60
    p.finish("a", ok=True)
    assert p.eta() == pytest.approx(90 * 2)  # between runs: two to come at a's 90 s
    assert p.start("b", epochs=3) == 3
    assert p.eta() == pytest.approx(90 + 90)  # b: the mean until it finishes an epoch
    clock.t += 10
    p.epoch("b", 1)
    assert p.eta() == pytest.approx(20 + 90)  # b's own pace (10 s an epoch); the last run: the mean
    clock.t += 20
    p.finish("b", ok=False)
    assert (p.done, p.failed, p.durations) == (2, 1, [90, 30])
    p.start("c", epochs=2)
    clock.t += 100
    assert p.eta() == 0.0  # past the mean: at least nothing left


@pytest.mark.parametrize("seed", range(20))
def test_one_slot_gives_the_old_sequential_numbers(seed):
    rng = random.Random(seed)
    clock = Clock()
    total = rng.randint(1, 8)
    kept = rng.randint(0, total - 1)
    p = Progress(total, kept, clock=clock)
    durations = []
    for k in range(total - kept):
        epochs = rng.randint(0, 4)
        index = p.start(f"r{k}", epochs)
        assert index == kept + k + 1
        began = clock.t
        assert p.eta() == old_sequential_eta(durations, 0.0, 0, epochs, total, index)  # the run's header line
        for epoch in range(1, max(1, epochs) + 1):
            clock.t += rng.uniform(0.5, 50)
            p.epoch(f"r{k}", epoch)  # the epoch line
            expected = old_sequential_eta(durations, clock.t - began, epoch, epochs, total, index)
            assert p.eta() == pytest.approx(expected)
        clock.t += rng.uniform(0, 5)
        durations.append(clock.t - began)
        p.finish(f"r{k}", ok=rng.random() < 0.8)
        assert p.durations == pytest.approx(durations)


@pytest.mark.parametrize("seed", range(20))
def test_several_slots_without_epochs_give_the_old_parallel_numbers(seed):
    rng = random.Random(seed)
    clock = Clock()
    slots, total = rng.randint(2, 4), rng.randint(3, 12)
    p = Progress(total, 0, slots=slots, clock=clock)
    pending, running, durations = [f"r{i}" for i in range(total)], {}, []
    while pending or running:
        while pending and len(running) < slots:
            name = pending.pop(0)
            p.start(name, 3)
            running[name] = clock.t
        clock.t += rng.uniform(1, 30)
        name = rng.choice(list(running))
        durations.append(clock.t - running.pop(name))
        p.finish(name, ok=True)
        expected = old_parallel_eta(durations, [clock.t - t0 for t0 in running.values()], slots, len(pending))
        assert p.eta() == pytest.approx(expected)


def test_several_slots_use_each_running_runs_epochs():
    clock = Clock()
    p = Progress(total=3, done=0, slots=2, clock=clock)
    p.start("a", 4)
    p.start("b", 4)
    clock.t += 40
    assert p.eta() is None  # nothing finished, no epoch: unknown, as the parallel sweep said
    p.epoch("a", 2)  # a: 20 s an epoch, 40 s left; b and the run to come: a's pace (80 s)
    assert p.eta() == pytest.approx((40 + 40 + 80) / 2)


def test_the_record_is_what_the_console_line_shows():
    clock = Clock(5000.0)
    p = Progress(total=3, done=1, clock=clock)
    published = []
    p.publish = published.append
    p.start("a", 1)
    clock.t += 59.96
    p.finish("a", ok=False)
    record = p.changed()
    assert published == [record]
    assert record == {"done": 1, "failed": 1, "running": [], "total": 3, "eta_s": 59.9, "at": 5059.96}
    assert fmt_duration(record["eta_s"]) == fmt_duration(p.eta()) == "59 s"  # cut, not rounded up to 1 min
    p.start("b", 2)
    assert p.record()["running"] == ["b"]
    p.interrupted("b")
    assert p.record()["running"] == [] and p.durations == [pytest.approx(59.96)]


def test_the_dashboard_counts_a_record_down_from_when_it_was_written():
    record = {"done": 1, "failed": 0, "running": ["b"], "total": 3, "eta_s": 100.0, "at": 5000.0}
    assert eta_now(record, 5030.0) == 70.0
    assert eta_now(record, 5200.0) == 0.0
    assert eta_now({**record, "eta_s": None}, 5030.0) is None
    assert eta_now(None, 5030.0) is None and eta_now({"eta_s": "soon"}) is None  # an older or foreign sweep.json


# -- the one loop (runner.run_todo) with the child processes replaced -----------------------------


def planned(tmp_path):
    """Two training runs and an evaluation of the first, planned by hand (only the run's epochs of its
    config are read when the child processes are replaced)."""
    from types import SimpleNamespace

    from peftlab.sweep.plan import PlannedRun, Sweep

    source = tmp_path / "s.yaml"
    source.write_text("name: loop\n")
    cfg = SimpleNamespace(train=SimpleNamespace(epochs=2))
    runs = [
        PlannedRun("a", "a", {"method": "lora"}, cfg, 1),
        PlannedRun("b", "b", {"method": "full"}, cfg, 1),
        PlannedRun("a-again", "a-again", {}, cfg, 1, kind="eval", of="a"),
    ]
    return Sweep("loop", source, tmp_path / "out" / "loop", runs)


def entry(run, status="completed", error=None) -> dict:
    return run.entry(status, **({"error": error} if error else {}))


def sweep_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("== sweep")]


def test_the_sequential_sweep_runs_in_the_foreground_and_starts_the_next_run_ahead(tmp_path, monkeypatch, capsys):
    import json

    import peftlab.sweep.runner as runner

    calls, published = [], []

    def fake_execute(sweep, run, progress, mode, warm, next_up):
        calls.append((run.name, mode, next_up and next_up[0].name, progress.index, list(progress.running)))
        published.append(json.loads((sweep.folder / "sweep.json").read_text())["progress"])
        return entry(run, "failed", "boom") if run.name == "b" else entry(run)

    monkeypatch.setattr(runner, "execute", fake_execute)
    sweep = planned(tmp_path)
    entries = runner.run_sweep(sweep)
    assert calls == [
        ("a", "resume", "b", 1, ["a"]),
        ("b", "resume", "a-again", 2, ["b"]),
        ("a-again", "after", None, 3, ["a-again"]),
    ]
    lines = sweep_lines(capsys.readouterr().out)
    assert lines[0] == "== sweep [1/3] a: method=lora  | done 0, failed 0, ETA ?"
    assert lines[1].startswith("== sweep [2/3] b: method=full  | done 1, failed 0, ETA ")
    assert lines[2] == "== sweep: b FAILED: boom (the sweep goes on)"
    assert lines[3].startswith(
        "== sweep [3/3] a-again: (base config)  (evaluates the run above)  | done 1, failed 1, ETA "
    )
    assert len(lines) == 4
    state = json.loads((sweep.folder / "sweep.json").read_text())
    assert (
        [r["status"] for r in state["runs"]]
        == ["completed", "failed", "completed"]
        == [entries[n]["status"] for n in ("a", "b", "a-again")]
    )
    # the record each header line printed, in sweep.json while its run ran; at the end, nothing left
    assert [(r["running"], r["done"], r["failed"]) for r in published] == [
        (["a"], 0, 0),
        (["b"], 1, 0),
        (["a-again"], 1, 1),
    ]
    assert published[0]["eta_s"] is None and published[1]["eta_s"] is not None
    assert {k: v for k, v in state["progress"].items() if k != "at"} == {
        "done": 2,
        "failed": 1,
        "running": [],
        "total": 3,
        "eta_s": 0.0,
    }


def test_ctrl_c_saves_the_run_in_progress_as_interrupted(tmp_path, monkeypatch):
    import json

    import peftlab.sweep.runner as runner

    def fake_execute(sweep, run, progress, mode, warm, next_up):
        if run.name == "b":
            raise KeyboardInterrupt
        return entry(run)

    monkeypatch.setattr(runner, "execute", fake_execute)
    sweep = planned(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        runner.run_sweep(sweep)
    state = json.loads((sweep.folder / "sweep.json").read_text())
    assert [r["status"] for r in state["runs"]] == ["completed", "interrupted", "pending"]
    assert state["progress"]["running"] == [] and state["progress"]["done"] == 1


class SideBySide:
    """A launcher of two slots whose runs end in the order they started, one per wait of the loop."""

    def __new__(cls, sweep):
        from concurrent.futures import Future

        from peftlab.sweep.backends import Launcher

        class Fake(Launcher):
            slots = 2

            def __init__(self):
                super().__init__(sweep)
                self.futures, self.may_end, self.closed = [], 1, False

            def submit(self, run, mode, upcoming):
                future = Future()
                self.futures.append(future)
                self.advance()
                return future

            def advance(self):
                for f in self.futures[: self.may_end]:
                    if not f.done():
                        f.set_result(None)

            def outcome(self, future, run, started):
                self.may_end += 1
                self.advance()
                return entry(run, "failed", "out of memory") if run.name == "b" else entry(run)

            def close(self):
                self.closed = True

        return Fake()


def test_side_by_side_runs_share_the_loop(tmp_path, capsys):
    import re

    from peftlab.sweep.progress import Progress
    from peftlab.sweep.runner import run_todo

    sweep = planned(tmp_path)
    launcher = SideBySide(sweep)
    (sweep.folder / "a").mkdir(parents=True)
    (sweep.folder / "a" / "metrics.jsonl").write_text("{}\n{}\n")  # epoch 0 and epoch 1
    todo = [(r, "resume") for r in sweep.runs[:2]] + [(sweep.runs[2], "after")]
    progress = Progress(3, 0)
    entries = run_todo(sweep, todo, {}, progress, launcher)
    lines = sweep_lines(capsys.readouterr().out)
    assert lines[:2] == ["== sweep [1/3] start a: method=lora", "== sweep [2/3] start b: method=full"]
    assert lines[2] == "== sweep: a done"  # the evaluation of a starts only now
    assert re.fullmatch(r"== sweep: running b \(epoch 0/2\) \| done 1/3, failed 0, ETA \d+ s", lines[3])
    assert lines[4:6] == ["== sweep [3/3] start a-again: (base config)", "== sweep: b FAILED: out of memory"]
    assert re.fullmatch(r"== sweep: running a-again \(eval\) \| done 1/3, failed 1, ETA \d+ s", lines[6])
    assert lines[7:] == ["== sweep: a-again done"]
    assert [entries[n]["status"] for n in ("a", "b", "a-again")] == ["completed", "failed", "completed"]
    assert launcher.closed and progress.slots == 2 and not progress.running


def test_the_dashboard_shows_the_eta_the_running_sweep_wrote(tmp_path, monkeypatch):
    import json
    import time

    from peftlab.ui import folders

    sweep = tmp_path / "runs" / "s"
    sweep.mkdir(parents=True)
    record = {"done": 1, "failed": 0, "running": ["b"], "total": 3, "eta_s": 500.0, "at": time.time() - 100}
    (sweep / "sweep.json").write_text(
        json.dumps(
            {
                "name": "s",
                "runs": [{"name": "a", "status": "completed"}, {"name": "b", "status": "running"}],
                "progress": record,
            }
        )
    )
    monkeypatch.setattr(folders, "live_pid", lambda folder: 4242)
    p = folders.progress(tmp_path / "runs", "s")
    assert p["live"] and 399 <= p["eta_s"] <= 400.5 and (p["done"], p["total"]) == (1, 2)
    monkeypatch.setattr(folders, "live_pid", lambda folder: None)  # stopped: its record is no ETA
    assert folders.progress(tmp_path / "runs", "s")["eta_s"] is None
