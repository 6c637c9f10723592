"""The task contract: the hooks a task module provides, one module per task way (registry.py lists them).

A task module is the implementation itself (PEP 544 lets a module stand for a protocol, its functions for
the methods without `self`): `Task` is what every module defines, `OptionalHooks` what a module may
define, and OPTIONAL the value every reader takes when a module leaves one out (read_hook reads them,
so the defaults live here once). tests/test_task_contract.py checks every registered module against
both, and that the package reads no hook off a task module that is not listed here.

`cfg` is always the whole Config. Hooks take their arguments by position (the `/` below), so a module
may name them as it likes. Adding a task is a new module and a row in registry.py; the training path
does not change.

Splits besides train / validation / test (e.g. `extra`, read from extra_eval_file) are prepared and
encoded like the others and scored at every evaluation through the same build_compute_metrics; their
metrics join the epoch's line prefixed with the split name (extra_loss, extra_rougeL).

`peftlab data check` uses the same hooks: prepare(), then encode() with max_length lifted to count
untruncated tokens (so encode must not pad to max_length; an example of one sequence per option counts
its longest), and the encoded `labels` that index `prepared.labels` (ints, or per-token lists with
-100 ignored) for the label distribution; a task whose labels are token ids instead defines
label_indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence


@dataclass
class TaskEnv:
    """What a task's metrics and prediction writer may use besides the predictions."""

    cfg: Any  # the run's Config
    tokenizer: Any
    trainer: Any = None  # set once the Trainer exists; trainer.model is the live model
    generate: Any = None  # another backend's generation (llama.cpp): prompts' token ids -> answers' ids

    @property
    def model(self):
        return self.trainer.model


class Prepared(Protocol):
    """What prepare() returns. It may also carry `.labels` (the label names, in the model's order) and
    `.notes` (a dict merged into result.json, e.g. repaired BIO tags or truncated examples)."""

    examples: dict[str, Any]
    """Split name -> that split's examples, a list with one item per example."""


class Task(Protocol):
    """The hooks every task module defines."""

    TASK_TYPE: str
    """peft's task type (e.g. "SEQ_CLS"): how peft wraps the model and which head it keeps trainable."""
    DEFAULT_METRIC: str
    """The metric the best epoch is picked by when metric_for_best is auto."""
    METRICS: tuple[str, ...]
    """The names the best epoch may be picked by, "loss" included."""
    TOKEN_LEVEL_LOSS: bool
    """True when the model returns a token-summed LM loss (the Trainer then normalises it by token counts)."""

    def prepare(self, splits: dict, cfg: Any, /) -> Prepared:
        """Read the splits into examples, validating their columns and labels."""

    def encode(self, examples: list, tokenizer: Any, cfg: Any, /) -> Any:
        """A datasets.Dataset of model inputs, with `labels` (or the columns named by LABEL_NAMES)."""

    def build_model(self, resolved: Any, prepared: Prepared, cfg: Any, tokenizer: Any, /) -> tuple[Any, dict]:
        """The model to tune, and notes for result.json (e.g. the head's pooling)."""

    def build_collator(self, tokenizer: Any, cfg: Any, /) -> Callable:
        """The Trainer's data collator."""

    def build_compute_metrics(self, prepared: Prepared, split: str, env: TaskEnv, /) -> Callable[[Any], dict]:
        """EvalPrediction -> metrics, once per split scored (env: for tasks that generate or need the weights)."""

    def write_predictions(self, path: Any, prepared: Prepared, split: str, predictions: Any, env: TaskEnv, /) -> None:
        """Write the split's predictions, one JSON line per example."""


class OptionalHooks(Protocol):
    """The hooks a task module may define; a reader takes OPTIONAL's value for one a module leaves out."""

    REPORT_METRICS: tuple[str, ...]
    """The metric columns of the sweep report, in order (default: the metrics the runs have)."""
    REPORT_NOTE: str
    """A caveat the report prints under the best-epoch table, e.g. how QA's no-answer threshold was chosen."""
    LABEL_NAMES: Sequence[str]
    """The model's label arguments, passed to it and to compute_metrics as label_ids (a tuple when several)."""
    LM_LOSS: bool
    """True for a next-token loss over `labels`: train.chunked_loss may compute it from the answer tokens."""

    def preprocess_logits(self, logits: Any, labels: Any, /) -> Any:
        """A smaller tensor kept for compute_metrics in place of the logits (vocabulary-sized ones)."""

    def label_indices(self, prepared: Prepared, split: str, /) -> list:
        """The label index of each example, for a task whose encoded labels are token ids (data check)."""


OPTIONAL: dict[str, Any] = {
    "REPORT_METRICS": (),
    "REPORT_NOTE": "",
    "LABEL_NAMES": ("labels",),
    "LM_LOSS": False,
    "preprocess_logits": None,
    "label_indices": None,
}


def read_hook(task, name: str) -> Any:
    """An optional hook of a task module, or its default when the module has none (or there is no module:
    the report reads runs of tasks by name); only a hook named in OPTIONAL may be read this way."""
    return getattr(task, name, OPTIONAL[name])
