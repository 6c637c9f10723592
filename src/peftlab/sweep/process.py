"""A sweep's run as a child process: its command line, its output pumped to the console and its log,
how it is stopped, and its sweep.json entry."""

from __future__ import annotations

import codecs
import os
import re
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from peftlab.runs import layout
from peftlab.runs.rundir import UnreadableFile, read_result, run_status, write_yaml
from peftlab.sweep.plan import PlannedRun, Sweep, eval_overrides
from peftlab.sweep.search import tell, trial_spec
from peftlab.sweep.terminal import ScreenLines


def pump(stream, sink, log, tail: list, on_line=None) -> None:
    """Copy a child's output to our console as it comes and to its log as the lines it leaves on a
    screen (terminal.ScreenLines: a progress bar once, in its last state, no control codes); keep
    the tail (for failure reasons)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character cut by a chunk's end
    screen = ScreenLines()
    buffer = ""
    while True:
        chunk = os.read(stream.fileno(), 4096)
        text = decoder.decode(chunk, final=not chunk)
        if text:
            sink.write(text)
            sink.flush()
            tail.append(text)
            del tail[:-50]
        log.write(screen.feed(text) + ("" if chunk else screen.finish()))
        log.flush()  # `peftlab ui` shows the log's tail while the run runs
        if not chunk:
            break
        buffer += text
        *lines, buffer = re.split(r"[\r\n]", buffer)
        for line in lines:
            if on_line:
                on_line(line)


def failure_reason(run_dir: Path, returncode: int, tail: list) -> str:
    try:
        result = read_result(run_dir, {}) or {}
    except UnreadableFile as e:
        return str(e)
    if result.get("error"):
        return result["error"]
    lines = [l.strip() for l in "".join(tail).splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("peftlab: error:") or "Error" in l]
    if returncode < 0:
        sig = signal.Signals(-returncode).name
        hint = " (killed: out of memory?)" if sig == "SIGKILL" else ""
        return f"process ended by {sig}{hint}"
    return (errors or lines or [f"exit code {returncode}"])[-1][:500]


def stop_child(child: subprocess.Popen, signalled: bool = True) -> None:
    """After Ctrl-C: a terminal has sent SIGINT to the run too (signalled), and it is writing its
    'interrupted' state; a second SIGINT could cut that short, so send one only if it does not end by
    itself. A run outside the terminal's process group (a Ray task's: Ray gives its workers their own)
    got none, and gets it at once."""
    steps = ((None, 10), (signal.SIGINT, 60), (signal.SIGKILL, 10))
    for sig, wait in steps if signalled else steps[1:]:
        if sig is not None:
            child.send_signal(sig)
        try:
            child.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def child_command(sweep: Sweep, run: PlannedRun, mode: str) -> list[str]:
    config_path = sweep.folder / layout.CONFIGS / layout.run_config(run.name)
    write_yaml(config_path, run.cfg.to_dict())
    return command_of(sweep, run, config_path, mode)


def entry_of(sweep: Sweep, run: PlannedRun, returncode: int, tail: list, started: str) -> dict:
    """A finished run's sweep.json entry, from its exit code and its folder (every backend)."""
    run_dir = sweep.folder / run.name
    status = run_status(run_dir)
    entry = run.entry(
        "completed" if returncode == 0 and status == "completed" else "failed",
        returncode=returncode,
        started_at=started,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if run.variant and sweep.search:  # a trial of `search:`: its outcome goes into its variant's study
        try:
            result = read_result(run_dir)
        except UnreadableFile:
            result = None  # told as failed; the report names the file
        tell(sweep.search, run, result)
        if entry["status"] == "completed" and (result or {}).get("pruned"):
            entry["pruned"] = result["pruned"]  # the epoch it reached, for the console and the dashboard
    if entry["status"] == "failed":  # no exit code: the process never ran (a backend's own error, in the tail)
        entry["error"] = failure_reason(run_dir, returncode, tail) if returncode is not None else "".join(tail)
    return entry


def command_of(sweep: Sweep, run: PlannedRun, config_path: Path, mode: str) -> list[str]:
    """The child's command line: `peftlab train`, or `peftlab eval` of the config's model or of a run."""
    peftlab = [sys.executable, "-m", "peftlab"]
    if run.kind == "train":
        trial = ["--trial", trial_spec(sweep.search, run)] if run.variant and sweep.search else []
        return peftlab + ["train", str(config_path), "--resume" if mode == "resume" else "--overwrite"] + trial
    out = ["--out", str(sweep.folder / run.name), "--overwrite"]
    if not run.of:
        return peftlab + ["eval", str(config_path)] + out
    # an evaluation of a trained run: that run's own config, with the settings this row changes
    export = ["--export", run.export] if run.export else []
    return peftlab + ["eval", str(sweep.folder / run.of)] + eval_overrides(run) + export + out


def interrupted_entry(run: PlannedRun) -> dict:
    return run.entry("interrupted")


def completed_entry(run: PlannedRun) -> dict:
    """A run stopped by Ctrl-C after it had written its completed result.json: completed, as its folder says
    (its weights and numbers are all there; the same command skips it)."""
    return run.entry(
        "completed",
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        note="it had completed when the sweep was stopped",
    )
