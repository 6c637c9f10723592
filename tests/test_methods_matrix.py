"""Every method x head end to end on tiny models: run folder, finite loss, real predictions."""
import json
import math
from pathlib import Path

import pytest

from peftlab.config import load_config
from peftlab.methods import METHODS
from peftlab.train import run

LLAMA_METHODS = ["full", "head", "freeze", "lora", "dora", "ia3", "prompt-tuning", "p-tuning"]


def check_run_folder(result: dict, run_dir: Path, n_dev: int) -> None:
    assert result["status"] == "completed"
    for name in ("config.yaml", "metrics.jsonl", "result.json", "loss.png", "predictions_validation.jsonl"):
        assert (run_dir / name).is_file(), name
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [0, 1]
    assert all(math.isfinite(l["loss"]) for l in lines) and math.isfinite(lines[1]["train_loss"])
    assert json.loads((run_dir / "result.json").read_text())["metrics_best"] == result["metrics_best"]
    preds = [json.loads(l) for l in (run_dir / "predictions_validation.jsonl").read_text().splitlines()]
    assert len(preds) == n_dev
    # the best weights were reloaded: accuracy recomputed from the written predictions equals the best epoch's
    acc = sum(p["label"] == p["prediction"] for p in preds) / len(preds)
    assert acc == pytest.approx(result["metrics_best"]["accuracy"])
    weights = run_dir / result["adapter_dir"]
    assert weights.is_dir() and result["adapter_size_mb"] > 0
    assert 0 < result["trainable_params"] <= result["total_params"]


@pytest.mark.parametrize("method", [m for m in METHODS if m != "prefix-tuning"])
def test_every_method_on_encoder(method, base_config, tmp_path):
    pooling = "mean" if method in ("lora", "head", "prompt-tuning", "full") else "cls"
    cfg = load_config(None, base_config + [f"method={method}", f"pooling={pooling}", "lora_rank=4",
                                           "num_virtual_tokens=4", "freeze_layers=1"])
    result = run(cfg)
    check_run_folder(result, Path(cfg.train.output_dir) / result["run_name"], 32)
    assert result["pooling"] == pooling
    if method == "full":
        assert result["trainable_params"] == result["total_params"]
    elif method == "head":  # only the classifier: hidden 32 x 2 labels + 2 biases
        assert result["trainable_params"] == 32 * 2 + 2
    else:
        assert result["trainable_pct"] < 100


@pytest.mark.parametrize("method", LLAMA_METHODS)
def test_methods_on_decoder_last_token_head(method, tiny_llama, base_config, tmp_path):
    cfg = load_config(None, base_config + [f"model={tiny_llama}", f"method={method}", "lora_rank=4",
                                           "num_virtual_tokens=4", "freeze_layers=-1"])
    result = run(cfg)
    check_run_folder(result, Path(cfg.train.output_dir) / result["run_name"], 32)
    assert result["pooling"] == "last"


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama"])
def test_prefix_tuning_without_past_key_values_is_refused_before_training(model, request, base_config, tmp_path):
    from peftlab.errors import UserError

    cfg = load_config(None, base_config + ["method=prefix-tuning", f"model={request.getfixturevalue(model)}"])
    with pytest.raises(UserError, match="takes no `past_key_values`.*use prompt-tuning or p-tuning"):
        run(cfg)
    assert not (tmp_path / "runs").exists()


def test_test_split_is_scored_with_the_best_weights(base_config, sentiment):
    # the test file is the dev file: its score must equal the best epoch's validation score
    cfg = load_config(None, base_config + ["epochs=2", f"test_file={sentiment['dev']}"])
    result = run(cfg)
    assert result["metrics_test"]["accuracy"] == pytest.approx(result["metrics_best"]["accuracy"])
    assert result["metrics_test"]["loss"] == pytest.approx(result["metrics_best"]["loss"], rel=1e-5)
    assert (Path(cfg.train.output_dir) / result["run_name"] / "predictions_test.jsonl").is_file()


def test_early_stopping_stops_when_the_metric_stops_improving(base_config):
    # lr=0: nothing improves on epoch 0, so patience 1 ends the run after epoch 1 of 5
    cfg = load_config(None, base_config + ["epochs=5", "lr=0", "early_stopping_patience=1", "metric_for_best=loss"])
    result = run(cfg)
    assert result["epochs_run"] == 1 and result["best_epoch"] == 0
