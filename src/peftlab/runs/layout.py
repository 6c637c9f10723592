"""The run folder contract: every file name of a run, evaluation, export and sweep folder, written once
here, and the typed shape of result.json, read and written here alone.

A run folder (`peftlab train`) and an evaluation folder (`peftlab eval`, the same shape with one
evaluation as "epoch 0") are what every later step reads: the report, reuse by a sweep, export, the
dashboard. Code names a file through this module (`run_dir / layout.RESULT`), so a renamed file is one
change and the README's table of the run folder is checked against RUN_FILES (tests/test_layout.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypedDict

from peftlab.errors import UserError

# -- a run or evaluation folder -------------------------------------------------------------------------
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
RESULT = "result.json"
TRAIN_LOG = "train_log.jsonl"
LOSS_PLOT = "loss.png"
CHECKPOINTS = "checkpoints"  # the Trainer's, for --resume; deleted at the end unless keep_checkpoints
TENSORBOARD = "tensorboard"
MLRUNS = "mlruns"
ADAPTER, HEAD, MODEL = "adapter", "head", "model"  # the best weights: one of the three
WEIGHT_DIRS = (ADAPTER, HEAD, MODEL)
# written first into every run and evaluation folder: `--overwrite` replaces only a folder that holds it
# (or, made before it existed, a config.yaml and a result.json of a known status), never any other folder
MARKER = ".peftlab"


def predictions_file(split: str) -> str:
    """Per-example predictions of one split (validation, test, extra, or a `peftlab predict` name)."""
    return f"predictions_{split}.jsonl"


# -- inside a weights folder (head/, model/) or an export ------------------------------------------------
HEAD_WEIGHTS = "head.safetensors"  # the head method's trained parameters alone
WEIGHTS_NOTE = "peftlab_weights.json"  # how to load head/ or model/ with plain transformers
LOADER_README = "README.md"
EXPORT_NOTE = "peftlab.json"  # a `peftlab export` folder: what it was exported from, merged or not
# a run's weights folder: the metrics.jsonl line of the evaluation that saved these weights, written with them
# (a resumed run's metrics_best is that evaluation, even where the redone one scores otherwise)
BEST_EVALUATION = "peftlab_best_evaluation.json"


def merged_export(run_name: str) -> str:
    """`peftlab export RUN --merge`'s folder, beside the run (a sweep's rows: under EXPORTS)."""
    return f"{run_name}-merged"


def adapter_export(run_name: str) -> str:
    """`peftlab export RUN --adapter-only`'s folder, beside the run."""
    return f"{run_name}-saved_model"


def gguf_file(kind: str) -> str:
    """A GGUF file of an export folder (f16, bf16, q8_0, q4_0, q4_k_m)."""
    return f"model-{kind}.gguf"


def export_lock(folder_name: str) -> str:
    """The lock file beside an export folder (export.merge.export_lock), held while the folder is checked
    and written; removed by its holder when done. Never a temporary() name: the cleaner leaves it alone."""
    return f".{folder_name}.lock"


# -- a sweep folder (`peftlab sweep`) and a study folder -------------------------------------------------
SWEEP_STATE = "sweep.json"  # the plan and each run's status
SWEEP_COPY = "sweep.yaml"  # the sweep file as it was run
INIT_SWEEP = "sweep.yaml"  # `peftlab init`: the methods sweep it writes beside its config.yaml (CONFIG)
SWEEP_LOCK = ".lock"
ESTIMATE = "estimate.json"  # `peftlab sweep --estimate`: each run's predicted time and memory (sweep/estimate.py)
LOGS, CONFIGS, EXPORTS, REPORT = "logs", "configs", "exports", "report"
STUDY_STATE = "study.json"
SWEEP_FOLDERS = (LOGS, CONFIGS, EXPORTS, REPORT)  # the sweep's own folders beside its run folders


def run_log(run_name: str) -> str:
    """A sweep run's console output, under LOGS."""
    return f"{run_name}.log"


def run_config(run_name: str) -> str:
    """The config a sweep hands its run, under CONFIGS."""
    return f"{run_name}.yaml"


# -- a report folder (REPORT of a sweep, or a study's report.md) ------------------------------------------
REPORT_MD, REPORT_CSV, REPORT_JSON, REPORT_HTML = "report.md", "report.csv", "report.json", "report.html"
PLOT_LOSSES, PLOT_METRIC, PLOT_PARETO = "loss_curves.png", "metric_per_epoch.png", "pareto.png"


def predict_answers(name: str) -> str:
    """`peftlab predict`: one answer per line, as the users' result_QQP.txt."""
    return f"result_{name}.txt"


# -- names that become folders -----------------------------------------------------------------------------
# what a sweep or study folder holds of its own, beside the run (or part) folders the user names
RESERVED = (*SWEEP_FOLDERS, SWEEP_STATE, SWEEP_COPY, STUDY_STATE, REPORT_MD, ESTIMATE)
SEPARATORS = ("/", "\\", "\0")  # "\\" too on every system: a sweep file may travel to Windows


def folder_name_problem(name: str) -> str:
    """Why `name` cannot be a folder of its own inside a sweep or study folder; '' when it can."""
    if not name.strip():
        return "an empty name (the folder around it)"
    if name in (".", ".."):
        return "'.' (the folder itself)" if name == "." else "'..' (the folder above)"
    if any(sep in name for sep in SEPARATORS):
        return "a path (it holds a separator)"
    if name.startswith("."):
        return "a hidden name (it starts with a dot, as the temporary folders do)"
    if name.casefold() in {r.casefold() for r in RESERVED}:
        return f"the name of the sweep's own {name} (reserved: {', '.join(RESERVED)})"
    return ""


def check_folder_name(name, what: str) -> str:
    """`name` when it can be a folder of its own inside a sweep or study folder, else a UserError naming
    `what` (the key or row it came from). A name is joined onto a folder that is then written, replaced
    or, with --overwrite, deleted: `..` is the folder above, `.` and an empty name the sweep folder
    itself, `a/b` another folder, `.x` a hidden name of the kind temporary() makes, `logs` or `report`
    the sweep's own folder. Every name that becomes a folder (a sweep, a study and its parts, a variant,
    a grid point, run_name) is checked here, when the plan is made, before anything runs."""
    text = str(name)
    problem = folder_name_problem(text)
    if problem:
        raise UserError(
            f"{what}: '{text}' must be a folder name, not {problem}; choose another name "
            f"(letters, digits, '-', '_' and '.', not first)"
        )
    return text


# -- atomic writes: one temporary naming rule, known to runs.rundir.clear_leftovers --------------------------
TMP, OLD = "tmp", "old"


def temporary(final: Path, kind: str = TMP, pid: int | None = None) -> Path:
    """Where a file or folder is built before its one rename into `final` (kind tmp), or where the older
    copy waits while it is replaced (kind old): `.NAME.KIND-PID`, hidden, and owned by one process so two
    writers never share one and a cleaner can tell a dead writer's leftovers from a live one's."""
    final = Path(final)
    return final.with_name(f".{final.name}.{kind}-{os.getpid() if pid is None else pid}")


def parse_temporary(name: str) -> tuple[str, str, int] | None:
    """(final name, kind, pid) of a name made by temporary(); None for any other name."""
    if not name.startswith("."):
        return None
    stem, _, pid = name.rpartition("-")
    final, dot, kind = stem[1:].rpartition(".")
    if not (dot and final and kind in (TMP, OLD) and pid.isdigit()):
        return None
    return final, kind, int(pid)


# -- result.json -----------------------------------------------------------------------------------------
class Result(TypedDict, total=False):
    """result.json of a run (kind absent) or an evaluation (kind "eval"). The report, reuse and the
    dashboard rely on these keys; a run writes more (timeline, throughput, precision, notes ...)."""

    status: str  # running | completed | failed | interrupted
    kind: str  # "eval" for an evaluation folder
    run_name: str
    task: str
    model: str
    method: str | None
    metric_for_best: str
    best_epoch: int | None
    epochs_run: int
    metrics_epoch0: dict[str, Any] | None
    metrics_best: dict[str, Any] | None
    metrics_last: dict[str, Any] | None
    metrics_test: dict[str, Any]
    time_per_epoch_s: float | None
    trainable_params: int
    trainable_pct: float
    total_params: int | None
    metric_scale: str  # METRIC_SCALE: every metric a fraction (absent: an older peftlab's, see upgrade_result)
    peak_memory_mb: float  # MiB (2**20 bytes), as every *_mb key; peak_memory_kind says RSS or GPU
    peak_memory_kind: str  # process_peak_rss | cuda_max_allocated
    adapter_size_mb: float | None  # MiB
    labels: list[str] | None
    label_counts_train: dict[str, int] | None  # label -> count in the training split (classification, MC)
    versions: dict[str, str]
    git_hash: str | None
    finished_at: str
    error: str


STATUSES = ("running", "completed", "failed", "interrupted")

# Every metric is a fraction (0-1): accuracy, F1, MAP@k, exact match, BLEU and ROUGE alike; loss is the loss.
# result.json says so (METRIC_SCALE_KEY); a result without it was written by an older peftlab, whose
# generation scores (OLD_PERCENT_METRICS) were 0-100 and whose QA exact match was called `exact`.
# upgrade_result reads such a result (and its metrics.jsonl lines) on today's scale and names, once.
METRIC_SCALE_KEY, METRIC_SCALE = "metric_scale", "fraction"
OLD_PERCENT_METRICS = ("bleu4", "bleu4_corpus", "rouge1", "rouge2", "rougeL", "exact_match")
OLD_METRIC_NAMES = {"exact": "exact_match"}  # also with a prefix: HasAns_exact, extra_exact
METRIC_PHASES = ("metrics_epoch0", "metrics_best", "metrics_last", "metrics_test")


def _renamed(key: str) -> str:
    for old, new in OLD_METRIC_NAMES.items():
        if key == old or key.endswith("_" + old):
            return key[: len(key) - len(old)] + new
    return key


def upgrade_metrics(metrics: dict) -> dict:
    """One metrics dict (a metrics.jsonl line, result.json's metrics_best ...) of an older peftlab on today's
    scale and names: the 0-100 generation scores divided by 100 (prefixed ones too: extra_rougeL), `exact`
    renamed exact_match. Only for files without METRIC_SCALE_KEY: a file on today's scale must not pass here."""
    out = {}
    for key, value in metrics.items():
        percent = any(key == m or key.endswith("_" + m) for m in OLD_PERCENT_METRICS)
        if percent and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = value / 100
        out[_renamed(key)] = value
    return out


def upgrade_result(result):
    """result.json as read: one without METRIC_SCALE_KEY (an older peftlab's) gets today's metric scale and
    names (upgrade_metrics on every metrics phase, metric_for_best renamed) and the key; others are unchanged."""
    if not isinstance(result, dict) or METRIC_SCALE_KEY in result:
        return result
    result = dict(result)
    for phase in METRIC_PHASES:
        if isinstance(result.get(phase), dict):
            result[phase] = upgrade_metrics(result[phase])
    if isinstance(result.get("metric_for_best"), str):
        result["metric_for_best"] = _renamed(result["metric_for_best"])
    result[METRIC_SCALE_KEY] = METRIC_SCALE
    return result


# what a completed result must hold for a report row: one that lacks any was cut short or edited
COMPLETED_KEYS = ("metric_for_best", "method", "trainable_params", "trainable_pct", "total_params", "metrics_best")


def missing_keys(result: Result) -> list[str]:
    """The COMPLETED_KEYS a completed result lacks."""
    return [k for k in COMPLETED_KEYS if k not in result] if result.get("status") == "completed" else []


# -- the README's table of the run folder, checked against this module by tests/test_layout.py -----------
RUN_FILES = (
    (
        f"`{MARKER}`",
        "written first: marks the folder as peftlab's; `--overwrite` and a sweep's rerun replace only a "
        "folder that holds it (or an older run's config.yaml and result.json), never another folder",
    ),
    (f"`{CONFIG}`", "the fully resolved config"),
    (
        f"`{METRICS}`",
        "one line per evaluation, epoch 0 (before any update) first, every metric a fraction (0-1, BLEU and ROUGE "
        "too): loss, accuracy, precision, "
        "recall, F1 (binary on label 1 for two classes, else macro), macro P/R/F1, MCC, train loss, train time of "
        "the epoch",
    ),
    (
        f"`{RESULT}`",
        "status (`running`/`completed`/`failed`/`interrupted`), best epoch, metrics at epoch 0 / "
        "best / last (and test), `metric_scale: fraction` (a result without it, from an older peftlab, is read with "
        "its 0-100 BLEU/ROUGE/exact match divided by 100 and QA's `exact` as `exact_match`), time per epoch, train "
        "tokens/s and samples/s, peak memory in MiB (`peak_memory_kind`: GPU max allocated on a GPU, process peak "
        "RSS on CPU), trainable/total params and %, adapter size in MiB, labels, library versions, git hash",
    ),
    (
        f"`{ADAPTER}/`, `{HEAD}/` or `{MODEL}/`",
        "the best epoch's weights + tokenizer: a peft adapter "
        f"(`save_pretrained`), the trained head alone (`head` method: `{HEAD_WEIGHTS}` on the base it names), or "
        f"the whole model; `{HEAD}/` and `{MODEL}/` carry a {LOADER_README} and `{WEIGHTS_NOTE}` saying how to "
        f"load them with plain transformers, pooling included; `{BEST_EVALUATION}` is the metrics line of the "
        "evaluation that saved them (result.json's `metrics_best`, after a resume too)",
    ),
    (
        f"`{predictions_file('validation')}`",
        "per example, from the best weights: for classification text, gold "
        "label, predicted label and probabilities (each task writes its own: tags per word, answer spans, "
        f"generated text, ranked options); `{predictions_file('extra')}` for `extra_eval_file`",
    ),
    (f"`{LOSS_PLOT}`", "training and evaluation loss curves"),
    (f"`{TRAIN_LOG}`", "training loss and learning rate per logging step (the sweep report's loss curves)"),
    (
        f"`{TENSORBOARD}/`, `{MLRUNS}/`",
        "with `report_to: tensorboard` / `mlflow` only: the tracker's copy of the logs (below)",
    ),
)


def run_files_table() -> str:
    """RUN_FILES as the README's markdown table."""
    return "\n".join(["| file | content |", "|---|---|"] + [f"| {name} | {what} |" for name, what in RUN_FILES])
