"""report_to: the Trainer's logs and peftlab's epoch-0 / best-epoch metrics in TensorBoard (or MLflow),
inside the run folder; a value or a package that cannot work is refused before anything is written."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from peftlab.cli import main
from peftlab.config.settings import config_diff, load_config
from peftlab.training.train import run


def scalars(folder) -> dict:
    """tag -> [(step, value)] from the TensorBoard event files in folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def numbers(line: dict) -> dict:
    return {
        k: v
        for k, v in line.items()
        if k not in ("epoch", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def test_tensorboard_gets_the_training_loss_and_peftlabs_epoch0_and_best_metrics(base_config, tmp_path, monkeypatch):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # where TensorBoard's default ./runs would appear
    # AdaLoRA keeps the last epoch as the best: the tiny model's best epoch is not epoch 0 by luck
    result = run(
        load_config(None, base_config + ["report_to=tensorboard", "method=adalora", "epochs=2", "run_name=tb"])
    )
    folder = tmp_path / "runs" / "tb"
    assert result["status"] == "completed"
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
    assert not list((tmp_path / "cwd").iterdir()), "TensorBoard wrote outside the run folder (./runs)"
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ  # set for the run only

    got = scalars(folder / "tensorboard")
    logged = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    assert [s for s, _ in got["train/loss"]] == [h["step"] for h in logged]
    assert [v for _, v in got["train/loss"]] == pytest.approx([h["loss"] for h in logged], rel=1e-6)
    assert [v for _, v in got["eval/accuracy"]] == pytest.approx(
        [json.loads(line)["accuracy"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    )
    for phase, line in (("epoch0", result["metrics_epoch0"]), ("best", result["metrics_best"])):
        assert {"accuracy", "f1", "loss"} <= set(numbers(line))
        for key, value in numbers(line).items():
            assert got[f"peftlab/{phase}/{key}"] == [(line["step"], pytest.approx(value, rel=1e-6))], key
    assert got["peftlab/best_epoch"] == [(result["metrics_best"]["step"], result["best_epoch"])]
    assert result["metrics_epoch0"]["step"] == 0 and result["best_epoch"] == 2


def test_report_to_is_not_part_of_what_a_run_computes(base_config):
    saved = load_config(None, base_config).to_dict()
    assert config_diff(saved, load_config(None, base_config + ["report_to=tensorboard"])) == []


@pytest.mark.parametrize(
    "value, message",
    [
        ("wandb", "report_to: unknown value 'wandb'; available: none, tensorboard, mlflow"),
        ("tensorbord", "report_to: unknown value 'tensorbord' (did you mean 'tensorboard'?)"),
    ],
)
def test_a_bad_report_to_exits_2_naming_the_key(base_config, tmp_path, capsys, value, message):
    assert main(["train"] + base_config + [f"report_to={value}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_mlflow_without_the_package_is_refused_before_anything_is_written(base_config, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: find_spec and import both fail
    assert importlib.util.find_spec("mlflow") is None
    assert main(["train"] + base_config + ["report_to=mlflow"]) == 2
    err = capsys.readouterr().err
    assert "report_to: mlflow needs the mlflow package (pip install mlflow-skinny; requirements.txt" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_mlflow_gets_peftlabs_metrics_in_a_store_inside_the_run_folder(base_config, tmp_path, monkeypatch):
    """mlflow-skinny is in requirements.txt: this runs everywhere `make setup` ran (no skip)."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    result = run(load_config(None, base_config + ["report_to=mlflow", "run_name=ml"]))
    store = tmp_path / "runs" / "ml" / "mlruns"
    assert store.is_dir() and "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a file store only when asked
    client = mlflow.tracking.MlflowClient(store.as_uri())
    (found,) = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert found.data.metrics["peftlab/best/accuracy"] == pytest.approx(result["metrics_best"]["accuracy"])
    assert found.data.metrics["peftlab/epoch0/loss"] == pytest.approx(result["metrics_epoch0"]["loss"])
    assert {"loss", "eval_accuracy"} <= set(found.data.metrics)  # the Trainer's own logs too
