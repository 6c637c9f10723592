"""The Python API (peftlab.train, sweep, evaluate, predict, report): docs/python-api.md's example runs as
written, results are what the folders hold, bad input raises peftlab.UserError with the command's message,
and `import peftlab` alone loads no torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import peftlab
from peftlab.runs import layout
from peftlab.runs.rundir import read_json, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")


def test_import_is_light_and_the_names_resolve():
    code = (
        "import sys, peftlab\n"
        "names = [peftlab.UserError, peftlab.__version__, peftlab.sweep, peftlab.report]\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch loaded'\n"
        "import peftlab.sweep.runner as runner\n"  # a subpackage that is callable keeps its modules
        "assert callable(peftlab.sweep) and callable(peftlab.report) and runner.run_sweep\n"
        "assert peftlab.train.__module__ == 'peftlab.api' and peftlab.RunResult.__name__ == 'RunResult'\n"
        "assert {'train', 'sweep', 'evaluate', 'predict', 'report'} <= set(dir(peftlab))\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": SRC})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        peftlab.trian  # noqa: B018


def test_keyword_arguments_are_the_commands_overrides():
    from peftlab.api import as_overrides
    from peftlab.config.settings import load_config

    texts = as_overrides({"label_words": ["no", "yes"], "lora_rank": 16, "lr": 1e-4, "eval_at_start": False})
    assert texts == ['label_words=["no", "yes"]', "lora_rank=16", "lr=0.0001", "eval_at_start=false"]
    cfg = load_config(None, texts)
    assert cfg.task.label_words == ["no", "yes"] and cfg.method.lora_rank == 16
    assert cfg.train.lr == 1e-4 and cfg.eval.eval_at_start is False


def test_bad_input_raises_user_error_with_the_commands_message(tmp_path, capsys, monkeypatch):
    from peftlab.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "epochs=1.5"]) == 2
    printed = capsys.readouterr().err.strip().removeprefix("peftlab: error: ")
    with pytest.raises(peftlab.UserError) as raised:
        peftlab.train(epochs=1.5)
    assert str(raised.value) == printed and "expected int for 'epochs'" in printed
    assert main(["report", "nowhere"]) == 2
    printed = capsys.readouterr().err.strip().removeprefix("peftlab: error: ")
    with pytest.raises(peftlab.UserError) as raised:
        peftlab.report("nowhere")
    assert str(raised.value) == printed
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.real
@pytest.mark.timeout(300)
def test_the_python_api_page_runs_as_written(tmp_path, monkeypatch, capsys):
    """Every ```python block of docs/python-api.md, verbatim, in an empty folder; then what it returned is
    checked against the folders it wrote (the packaged MiniLM, as the page says)."""
    page = (ROOT / "docs" / "python-api.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    for block in blocks:
        exec(compile(block, "docs/python-api.md", "exec"), names)
    printed = capsys.readouterr().out
    runs, report = names["runs"], names["report"]
    for method in ("lora", "head"):
        run = runs[method]
        result = read_json(tmp_path / "runs/api-example" / method / layout.RESULT)
        assert run.status == "completed" and run.run_dir == Path("runs/api-example") / method
        assert run.metrics == result["metrics_best"] and run.metric == "accuracy"
        assert run.trainable_params == result["trainable_params"] and run.best_epoch == result["best_epoch"]
        assert [e["epoch"] for e in run.epochs] == [0, 1, 2]
        assert run.epochs == read_jsonl(run.run_dir / layout.METRICS)
    assert runs["head"].trainable_params < runs["lora"].trainable_params
    by_method = {row["method"]: row for row in report.rows}
    assert set(by_method) == {"lora", "head"} and report.html.is_file()
    for method, row in by_method.items():
        assert row["best_accuracy_mean"] == runs[method].metrics["accuracy"]
        assert row["trainable_params"] == runs[method].trainable_params
    assert {g["method"] for g in report.summary["groups"]} == {"lora", "head"}
    scored = names["scored"]
    assert scored.n_evaluated == 12 and scored.metrics == read_json(scored.folder / layout.RESULT)["metrics_best"]
    predicted = names["predicted"]
    assert predicted.path.read_text().splitlines() == [row["prediction"] for row in predicted.rows]
    assert len(predicted.rows) == 2 and {r["prediction"] for r in predicted.rows} <= {"positive", "negative"}
    assert "refused: override 'lora_rnak=8': unknown key 'lora_rnak' (did you mean 'lora_rank'?)" in printed


def test_sweep_returns_every_run_and_the_report(tmp_path, base_config, monkeypatch, capsys):
    """A real two-run sweep (each run its own process): the SweepResult holds each run's result.json and
    the report's rows. Its output, not a terminal's here (as in a notebook), holds the runs' lines and
    no progress bar redrawn in place."""
    monkeypatch.setenv("PYTHONPATH", SRC)  # the runs' processes import peftlab from this checkout
    config = dict(kv.split("=", 1) for kv in base_config)
    config.pop("output_dir")
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(
        yaml.safe_dump(
            {
                "name": "api",
                "output_dir": str(tmp_path / "sweeps"),
                "config": config,
                "variants": [{"method": "lora", "lora_rank": 2}, {"method": "head"}],
            }
        )
    )
    done = peftlab.sweep(sweep_file)
    assert isinstance(done, peftlab.SweepResult) and done.folder == tmp_path / "sweeps" / "api"
    assert sorted(done.runs) == ["head", "lora-r2"] and not done.failed
    for name, run in done.runs.items():
        assert run.status == "completed" and run.run_dir == done.folder / name
        assert run.metrics == read_json(run.run_dir / layout.RESULT)["metrics_best"]
    assert {row["group"] for row in done.report.rows} == {"head", "lora-r2"}
    assert done.report.markdown == (done.folder / layout.REPORT / layout.REPORT_MD).read_text(encoding="utf-8")
    again = peftlab.report(done.folder)
    assert again.rows == done.report.rows
    out, err = capsys.readouterr()
    assert "epoch 1: loss" in out and "sweep api: 2 runs" in out
    assert "\r" not in out + err and "it/s" not in out + err and "TQDM_DISABLE" not in os.environ


def test_a_notebooks_progress_display_is_kept(tmp_path, base_config, monkeypatch):
    """In Jupyter transformers picks its notebook progress display; peftlab's console bar replaces only the
    console one. Stood in for by a recording callback, as IPython is not installed here."""
    import transformers.trainer
    from transformers import ProgressCallback, TrainerCallback

    from peftlab.training.callbacks import QuietProgress

    seen = []

    class NotebookDisplay(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(state.global_step)

    monkeypatch.setattr(transformers.trainer, "DEFAULT_PROGRESS_CALLBACK", NotebookDisplay)

    def console_bar(self, *args, **kwargs):
        seen.append("console bar")
        return ProgressCallback.on_train_begin(self, *args, **kwargs)

    monkeypatch.setattr(QuietProgress, "on_train_begin", console_bar)
    run = peftlab.train(None, **dict(kv.split("=", 1) for kv in base_config))
    assert run.status == "completed" and seen == list(range(1, 7))  # 96 rows / 16 a step
