"""peftlab: run and compare ways to fine-tune language models on NLP tasks, honestly measured.

From Python: peftlab.train, sweep, evaluate, predict and report (peftlab.api), loaded on first use, so
`import peftlab` stays light (no torch until one of them is called)."""

from __future__ import annotations

import time
import types

from peftlab.errors import UserError

__version__ = "0.1.0"
PROCESS_STARTED = time.time()  # before torch and transformers load: result.json's time to first step counts from here
WARM_STARTED = None  # when a sweep started this process ahead of its turn (peftlab.child.wait_for_go)

API = (
    "train",
    "sweep",
    "evaluate",
    "predict",
    "report",
    "RunResult",
    "SweepResult",
    "StudyResult",
    "EvalResult",
    "PredictResult",
    "Report",
)
__all__ = ["UserError", "__version__", *API]


PACKAGES = ("sweep", "report")  # subpackages of the same name, made callable (CommandPackage)


def __getattr__(name: str):
    import importlib

    # imported by name, on first use: peftlab.api sits above every layer (tests/test_layers.py)
    if name in PACKAGES:
        return importlib.import_module(f"peftlab.{name}")
    if name in API:
        return getattr(importlib.import_module("peftlab.api"), name)
    raise AttributeError(f"module 'peftlab' has no attribute {name!r}")


class CommandPackage(types.ModuleType):
    """The subpackages named like a function of the Python API (peftlab.sweep, peftlab.report): calling one
    calls peftlab.api's function of that name, and its modules stay where they are (peftlab.sweep.runner)."""

    def __call__(self, *args, **kwargs):
        import importlib

        return getattr(importlib.import_module("peftlab.api"), self.__name__.rpartition(".")[2])(*args, **kwargs)


def __dir__():
    return sorted(set(globals()) | set(API))
