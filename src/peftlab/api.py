"""peftlab from Python (a notebook, a script): `peftlab.train`, `sweep`, `evaluate`, `predict` and `report`
do what the commands of the same name do, through the same code (the same checks, messages and files),
and return typed results instead of printing alone. Bad input raises peftlab.UserError with the message
the command would print; keyword arguments are the commands' key=value overrides."""

from __future__ import annotations

import csv
import json
import os
import sys
from argparse import Namespace
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftlab.cli import evaluate as cli_evaluate
from peftlab.cli import quiet_libraries, run_one_sweep
from peftlab.cli import train as cli_train
from peftlab.errors import UserError
from peftlab.runs import layout
from peftlab.runs.rundir import read_history, read_json, read_jsonl, read_result


def as_overrides(values: dict[str, Any]) -> list[str]:
    """Keyword arguments as the command line's key=value overrides, so each is read and checked as the
    command reads it: text as is, True/False as true/false, a list as a YAML list, None as empty."""
    out = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = str(value).lower()
        elif value is None:
            text = ""
        elif isinstance(value, (list, tuple)):
            text = json.dumps(list(value), default=str)  # JSON is a YAML flow list: strings stay quoted
        elif isinstance(value, dict):
            raise UserError(f"keyword argument {key}: a mapping ({value!r}); give one value or a list")
        else:
            text = str(value)
        out.append(f"{key}={text}")
    return out


@dataclass
class RunResult:
    """One run folder (`peftlab train`, or a run of a sweep): its result.json, read into fields."""

    status: str  # completed | failed | interrupted | running | not run
    run_dir: Path
    metric: str | None = None  # the metric the best epoch was chosen by (metric_for_best)
    metrics: dict = field(default_factory=dict)  # the best epoch's validation metrics (metrics_best)
    best_epoch: int | None = None
    epochs: list[dict] = field(default_factory=list)  # metrics.jsonl: one row per evaluation, epoch 0 first
    metrics_test: dict = field(default_factory=dict)
    trainable_params: int | None = None
    total_params: int | None = None
    trainable_pct: float | None = None
    peak_memory_mb: float | None = None
    time_per_epoch_s: float | None = None
    error: str | None = None
    result: dict = field(default_factory=dict)  # result.json as written

    @classmethod
    def from_folder(cls, folder: str | Path, status: str = "not run") -> RunResult:
        """A run folder as a RunResult; `status` where it holds no result.json (yet)."""
        folder = Path(folder)
        result = dict(read_result(folder, {}) or {})
        return cls(
            status=result.get("status", status),
            run_dir=folder,
            metric=result.get("metric_for_best"),
            metrics=result.get("metrics_best") or {},
            best_epoch=result.get("best_epoch"),
            epochs=read_history(folder),  # on today's metric scale, as metrics_best (read_result) is
            metrics_test=result.get("metrics_test") or {},
            trainable_params=result.get("trainable_params"),
            total_params=result.get("total_params"),
            trainable_pct=result.get("trainable_pct"),
            peak_memory_mb=result.get("peak_memory_mb"),
            time_per_epoch_s=result.get("time_per_epoch_s"),
            error=result.get("error"),
            result=result,
        )


@dataclass
class Report:
    """A sweep's report (`peftlab report`): report.csv's rows with numbers as numbers, report.json as
    `summary`, the markdown the command prints and the HTML page."""

    folder: Path  # the sweep folder
    html: Path
    markdown: str
    rows: list[dict]
    summary: dict


@dataclass
class SweepResult:
    """A sweep folder after `peftlab sweep`: every planned run, and the report."""

    folder: Path
    runs: dict[str, RunResult]
    report: Report

    @property
    def failed(self) -> list[str]:
        return [name for name, run in self.runs.items() if run.status == "failed"]


@dataclass
class StudyResult:
    """A study (a sweep file with `parts:`): one SweepResult per part and the gathered report.md."""

    folder: Path
    parts: list[SweepResult]
    report_md: Path


@dataclass
class EvalResult:
    """An evaluation folder (`peftlab eval`)."""

    folder: Path
    metric: str
    metrics: dict  # the scores (result.json's metrics_best)
    split: str
    n_evaluated: int
    result: dict


@dataclass
class PredictResult:
    """`peftlab predict`'s files: one answer per line in `path`, every row in full in `predictions_path`."""

    path: Path  # result_NAME.txt
    predictions_path: Path  # predictions_NAME.jsonl
    rows: list[dict]  # its rows: row number, input, the task's prediction fields, the answer line
    messages: list[str]  # what the command prints: the timing and, with answers=, the grade


def number(text: str):
    """A report.csv cell as a value: '' None, True/False, an int, a float, else the text."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_report(folder: Path, markdown: str, html: Path) -> Report:
    out = folder / layout.REPORT
    with open(out / layout.REPORT_CSV, encoding="utf-8", newline="") as f:
        rows = [{k: number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return Report(folder, html, markdown, rows, read_json(out / layout.REPORT_JSON, {}) or {})


def train(config: str | Path | dict | None = None, *, resume: bool = False, overwrite: bool = False, **overrides):
    """`peftlab train CONFIG key=value ...`: train one configuration; returns its RunResult. `config` is a
    YAML file, a mapping of the same keys (flat or in sections), or None (the keyword arguments alone).

        peftlab.train("recipes/sst2-minilm-lora.yaml", epochs=1, max_samples=64)"""
    from peftlab.config.settings import load_config

    quiet_libraries()
    if isinstance(config, dict):
        cfg = load_config(None, as_overrides(overrides), base=config)
    else:
        cfg = load_config(config, as_overrides(overrides))
    return RunResult.from_folder(cli_train(cfg, resume, overwrite))


def sweep(
    file: str | Path,
    *,
    output_dir: str | Path | None = None,
    keep_failed: bool = False,
    rerun_changed: bool = False,
    backend: str = "sequential",
    workers: int = 1,
    gpus_per_run: int = 0,
    cpus_per_run: int = 0,
    ray_address: str = "",
    max_retries: int = 2,
) -> SweepResult | StudyResult:
    """`peftlab sweep FILE`: run every run of a sweep file not yet done (each its own process, as the command
    does), then write the report; returns a SweepResult (a StudyResult for a study file). A run that
    fails is in `.failed`, as the command's exit code 1; Ctrl-C (the notebook's stop) keeps finished runs."""
    from peftlab.report.study import write_study_report
    from peftlab.sweep.load import load_sweep
    from peftlab.sweep.study import Study

    args = Namespace(
        keep_failed=keep_failed,
        rerun_changed=rerun_changed,
        backend=backend,
        workers=workers,
        gpus_per_run=gpus_per_run,
        cpus_per_run=cpus_per_run,
        ray_address=ray_address,
        max_retries=max_retries,
    )
    quiet_libraries()
    planned = load_sweep(str(file), None if output_dir is None else str(output_dir))
    parts = []
    for one in planned.sweeps if isinstance(planned, Study) else [planned]:
        with bars_for_terminals_only():
            code, markdown = run_one_sweep(one, args)
        if code == 130:  # the command's message is printed; the caller sees the interrupt
            raise KeyboardInterrupt
        runs = {run.name: RunResult.from_folder(one.folder / run.name) for run in one.runs}
        parts.append(SweepResult(one.folder, runs, read_report(one.folder, markdown, html_of(one.folder))))
    if isinstance(planned, Study):
        return StudyResult(planned.folder, parts, write_study_report(planned, [p.report.markdown for p in parts]))
    return parts[0]


@contextmanager
def bars_for_terminals_only():
    """A sweep's runs draw progress bars for a terminal (rows redrawn, the cursor moved up and down), and
    the sweep copies them to its console as they come. Into a notebook cell or a file that is noise, so
    there the runs draw none (TQDM_DISABLE, which tqdm reads) and print their lines alone: each epoch's
    metrics, and the sweep's progress and ETA."""
    if sys.stdout.isatty() or "TQDM_DISABLE" in os.environ:
        yield
        return
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        os.environ.pop("TQDM_DISABLE", None)


def html_of(folder: Path) -> Path:
    return folder / layout.REPORT / layout.REPORT_HTML


def evaluate(
    source: str | Path | None = None,
    *,
    split: str = "validation",
    out: str | Path | None = None,
    overwrite: bool = False,
    export: str = "",
    **overrides,
) -> EvalResult:
    """`peftlab eval SOURCE key=value ...`: score a run folder (its best weights), an export, a .gguf file or
    a YAML config's untrained model; returns the EvalResult of the evaluation folder it writes."""
    from peftlab.inference.evaluation import format_eval_summary

    quiet_libraries()
    args = Namespace(
        source=None if source is None else str(source),
        overrides=as_overrides(overrides),
        split=split,
        out=None if out is None else str(out),
        overwrite=overwrite,
        export=export,
    )
    result, folder = cli_evaluate(args)
    print("\n" + format_eval_summary(result))
    print(f"evaluation folder: {folder}")
    metric = result["metric_for_best"]
    return EvalResult(Path(folder), metric, result["metrics_best"], result["split"], result["n_evaluated"], result)


def predict(
    source: str | Path,
    input: str | Path,
    *,
    limit: int = 0,
    name: str = "",
    out: str | Path = "",
    answers: str | Path | None = None,
    overwrite: bool = False,
    **overrides,
) -> PredictResult:
    """`peftlab predict SOURCE INPUT key=value ...`: predict rows (gold columns may be absent) into
    OUT/result_NAME.txt and predictions_NAME.jsonl; returns them, read back."""
    from peftlab.inference.predict import run_predict

    quiet_libraries()
    messages = run_predict(
        str(source),
        str(input),
        as_overrides(overrides),
        limit=limit,
        name=name,
        out=str(out),
        answers=None if answers is None else str(answers),
        overwrite=overwrite,
    )
    for line in messages:
        print(line)
    folder, name = Path(out or "."), name or Path(input).stem
    jsonl = folder / layout.predictions_file(name)
    return PredictResult(folder / layout.predict_answers(name), jsonl, read_jsonl(jsonl), list(messages))


def report(folder: str | Path) -> Report:
    """`peftlab report FOLDER`: write a sweep folder's report again (tables, CSV/JSON, HTML, plots) and
    return it. (For a study folder, `peftlab report` on the command line gathers its parts.)"""
    from peftlab.report.write import write_report

    folder = Path(folder)
    markdown, html = write_report(folder)
    return read_report(folder, markdown, html)
