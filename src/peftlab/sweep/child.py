"""A sweep's child process: it must not outlive the sweep that started it."""

from __future__ import annotations

import os
import signal
import sys

PARENT_ENV = "PEFTLAB_SWEEP_PID"  # set for a sweep's child: the pid it must not outlive
FAST_EXIT_ENV = "PEFTLAB_FAST_EXIT"  # "0" in a sweep's environment: its children exit the usual way
is_sweep_child = False


def child_env(**extra: str) -> dict:
    """The environment of a sweep's run process (every backend): unbuffered output, and the pid of the
    process it must not outlive (die_with_parent)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid()), **extra}


def die_with_parent() -> None:
    """Called by a sweep's child at start-up (cli.main), not as Popen's preexec_fn: code run between
    fork and exec is unsafe while the sweep's reader threads run (a ctypes dlopen there can deadlock).
    Linux: get SIGTERM when the sweep dies (PR_SET_PDEATHSIG), so no run is left orphaned; a sweep
    that died before this call is noticed by the parent pid having changed."""
    global is_sweep_child
    parent = os.environ.pop(PARENT_ENV, "")
    is_sweep_child = parent.isdigit()
    if not parent.isdigit():
        return
    stoppable()
    if sys.platform != "linux":
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)


def stoppable() -> None:
    """A sweep stops its run with SIGINT (process.stop_child), which the run takes as Ctrl-C and saves its
    interrupted state. A run Ray started inherits SIGINT blocked (Ray blocks it in its own processes),
    one started from a shell in the background may inherit it ignored: either would train on, and save
    nothing, until it was killed."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def leave(code: int) -> None:
    """The end of `python -m peftlab`. A sweep's child skips the interpreter's teardown: with torch,
    transformers and a model loaded it took ~2 s here after the run's last file was written (measured
    from result.json's timeline), time the next run of the sweep waits for (bench/run.py job e).
    Every file the run wrote is closed by then; the console is flushed before leaving."""
    if is_sweep_child and os.environ.get(FAST_EXIT_ENV) != "0":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0 if code is None else code)
    raise SystemExit(code)


# ---------------------------------------------------------------- warm start
# A sweep starts its next run's process while the current one works: that process imports torch,
# transformers and peftlab (most of the ~7 s a minilm run takes to its first step here) and then
# waits, idle, for a line on stdin.
# "go" runs it; end of input (the sweep needs another command, or stopped) ends it having done nothing.
# It is started when the current run starts, so its imports overlap the current run's own loading,
# never its training steps. bench/run.py job (e) measures the gap it closes.
WARM_ENV = "PEFTLAB_WAIT_FOR_GO"
START_AHEAD_ENV = "PEFTLAB_START_AHEAD"  # "0" in a sweep's environment: start each run only at its turn
HEAVY = {"train": ("peftlab.training.train",), "eval": ("peftlab.inference.evaluation", "peftlab.training.train")}


def wait_for_go(command: str) -> bool:
    """In a warm-started child (cli.main): import what `command` needs, then wait. True: go on."""
    if os.environ.pop(WARM_ENV, "") != "1":
        return True
    import importlib

    for module in HEAVY.get(command, ()):
        importlib.import_module(module)
    import transformers

    transformers.Trainer  # noqa: B018  (lazy: importing it loads accelerate, peft's Trainer hooks, ...)
    if sys.stdin.readline().strip() != "go":
        return False
    import time

    import peftlab  # result.json's timeline counts from "go"; the start ahead is noted beside it

    peftlab.WARM_STARTED, peftlab.PROCESS_STARTED = peftlab.PROCESS_STARTED, time.time()
    return True


class WarmStart:
    """The sweep's side: at most one process started ahead, for one exact command line."""

    def __init__(self):
        self.proc, self.cmd = None, None

    def start(self, cmd: list[str], env: dict) -> None:
        import subprocess

        self.discard()
        if env.get(START_AHEAD_ENV) == "0":  # bench/run.py job e compares
            return
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**env, WARM_ENV: "1"}
        )
        self.cmd = cmd

    def take(self, cmd: list[str]):
        """The started process for cmd, told to go; None when there is none for this command."""
        proc, same = self.proc, self.cmd == cmd
        if proc is not None and same and proc.poll() is None:
            self.proc = None
            try:
                proc.stdin.write(b"go\n")
                proc.stdin.close()
                return proc
            except OSError:  # it died while waiting: start afresh
                proc.wait()
                return None
        self.discard()
        return None

    def discard(self) -> None:
        """End the waiting process (end of input: it exits having written nothing)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=30)
        except Exception:  # noqa: BLE001  (a stuck import must not hang the sweep)
            proc.kill()
            proc.wait()
