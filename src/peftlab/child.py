"""A sweep's child process: it must not outlive the sweep that started it."""
from __future__ import annotations

import os
import signal
import sys

PARENT_ENV = "PEFTLAB_SWEEP_PID"  # set for a sweep's child: the pid it must not outlive


def die_with_parent() -> None:
    """Called by a sweep's child at start-up (cli.main), not as Popen's preexec_fn: code run between
    fork and exec is unsafe while the sweep's reader threads run (a ctypes dlopen there can deadlock).
    Linux: get SIGTERM when the sweep dies (PR_SET_PDEATHSIG), so no run is left orphaned; a sweep
    that died before this call is noticed by the parent pid having changed."""
    parent = os.environ.pop(PARENT_ENV, "")
    if not parent.isdigit() or sys.platform != "linux":
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)
