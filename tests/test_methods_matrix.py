"""Every method x head end to end on tiny models: run folder, finite loss, real predictions."""

import json
import math
import shutil
from pathlib import Path

import pytest

from peftlab.config.settings import load_config
from peftlab.models.methods import METHODS
from peftlab.training.train import run

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
    # the weights only: the tokenizer saved beside them is not part of what a method costs on disk
    files = [f for f in weights.rglob("*") if f.is_file() and f.suffix in (".safetensors", ".bin")]
    assert files and result["adapter_size_mb"] == round(sum(f.stat().st_size for f in files) / 2**20, 6)
    assert 0 < result["trainable_params"] <= result["total_params"]


@pytest.mark.parametrize("method", [m for m in METHODS if m != "prefix-tuning" and not METHODS[m].catalog])
def test_every_method_on_encoder(method, base_config, tmp_path):
    pooling = "mean" if method in ("lora", "head", "prompt-tuning", "full") else "cls"
    cfg = load_config(
        None,
        base_config
        + [f"method={method}", f"pooling={pooling}", "lora_rank=4", "num_virtual_tokens=4", "freeze_layers=1"],
    )
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
    cfg = load_config(
        None,
        base_config
        + [f"model={tiny_llama}", f"method={method}", "lora_rank=4", "num_virtual_tokens=4", "freeze_layers=-1"],
    )
    result = run(cfg)
    check_run_folder(result, Path(cfg.train.output_dir) / result["run_name"], 32)
    assert result["pooling"] == "last"


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama"])
def test_prefix_tuning_without_past_key_values_is_refused_before_training(
    model, request, base_config, tmp_path, monkeypatch
):
    """As it will be once transformers (5.40) stops mapping past_key_values onto `cache`."""
    from peftlab.errors import UserError
    from peftlab.models import methods

    monkeypatch.setattr(methods, "takes_past_key_values", lambda module: False)

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


def test_llama_question_answering_gets_the_pretrained_backbone_not_a_random_one(tiny_llama):
    """LlamaForQuestionAnswering names its backbone `transformer.`, a causal-LM checkpoint `model.`:
    loaded plainly every backbone weight is freshly random (transformers only logs it)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForQuestionAnswering

    from peftlab.models.loading import ResolvedModel, load_pretrained

    model = load_pretrained(
        AutoModelForQuestionAnswering, ResolvedModel(tiny_llama, tiny_llama, "auto", "folder"), "float32"
    )
    saved = load_file(Path(tiny_llama) / "model.safetensors")
    state = model.state_dict()
    backbone = [k for k in saved if k.startswith("model.")]
    assert backbone and all(state["transformer." + k[len("model.") :]].equal(saved[k]) for k in backbone)


def test_a_checkpoint_missing_backbone_weights_is_refused_before_training(tiny_bert, base_config, tmp_path):
    from safetensors.torch import load_file, save_file

    from peftlab.errors import UserError

    broken = tmp_path / "broken-bert"
    shutil.copytree(tiny_bert, broken)
    state = load_file(broken / "model.safetensors")
    save_file({k: v for k, v in state.items() if "layer.1." not in k}, str(broken / "model.safetensors"))
    cfg = load_config(None, base_config + [f"model={broken}", "method=lora"])
    with pytest.raises(
        UserError,
        match=r"weights of BertForSequenceClassification's pretrained part are not in the "
        r"checkpoint \(e\.g\. bert\.encoder\.layer\.1\..*train from random weights",
    ):
        run(cfg)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("method", ["lora", "full"])
def test_best_weights_restore_strictly(method, base_config, tmp_path):
    """A weights file with a key the model lacks, or without a trained parameter, is an error, not a
    partial restore under strict=False."""
    from safetensors.torch import load_file, save_file

    from peftlab.training.train import load_best

    cfg = load_config(None, base_config + [f"method={method}", "lora_rank=4", "run_name=r"])
    run(cfg)
    folder = tmp_path / "runs" / "r" / ("adapter" if method == "lora" else "model")
    name = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
    state = load_file(folder / name)
    from peftlab.inference.session import load_eval_splits, open_session, read_source

    cfg, source = read_source(str(tmp_path / "runs" / "r"), [])
    model = open_session(cfg, source, load_eval_splits(cfg, "validation"), ["validation"]).model
    for n, p in model.named_parameters():  # as in training: what the method trains
        p.requires_grad = method == "full" or "lora_" in n or "modules_to_save" in n
    load_best(model, folder)  # the file as written restores whole
    extra = {**state, "not.in.the.model": state[next(iter(state))].clone()}
    save_file(extra, str(folder / name))
    with pytest.raises(RuntimeError, match="do not restore whole.*not.in.the.model"):
        load_best(model, folder)
    trained = next(k for k in state if ("lora_A" in k) == (method == "lora") and "embeddings" not in k)
    save_file({k: v for k, v in state.items() if k != trained}, str(folder / name))
    with pytest.raises(RuntimeError, match="trained but not in the file"):
        load_best(model, folder)


@pytest.mark.parametrize("fast_bf16", [True, False], ids=["cpu-with-bf16", "cpu-without"])
def test_bf16_on_cpu_only_where_the_cpu_does_it_in_hardware(fast_bf16, base_config, tmp_path, monkeypatch):
    """AVX512-BF16/AMX CPUs run bf16 autocast (bench/run.py: ~1.5-1.9x fp32 here); elsewhere it is emulated and
    many times slower, so it is refused. The flags are detected, never assumed (peftlab.hardware)."""
    import torch

    from peftlab import hardware
    from peftlab.errors import UserError

    if torch.cuda.is_available():
        pytest.skip("a GPU decides bf16 by itself")
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: fast_bf16)
    cfg = load_config(None, base_config + ["method=lora", "lora_rank=4", "precision=bf16", "run_name=r"])
    if not fast_bf16:
        with pytest.raises(UserError, match="bf16 needs a GPU that supports it or a CPU with AVX512-BF16"):
            run(cfg)
        assert not (tmp_path / "runs").exists()
        return
    result = run(cfg)
    assert result["status"] == "completed" and math.isfinite(result["metrics_best"]["loss"])
    lines = [json.loads(l) for l in (tmp_path / "runs" / "r" / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(lines[-1]["train_loss"])
