"""classify_by: likelihood — labels ranked by the LM's likelihood of their verbalizers."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES

from peftlab.cli import main
from peftlab.config.settings import load_config
from peftlab.data.splits import load_splits
from peftlab.errors import UserError
from peftlab.models.loading import load_tokenizer, resolve_model
from peftlab.tasks.metrics import compute_classification
from peftlab.tasks.registry import get_task
from peftlab.training.train import run

COLA = SAMPLES / "cola"


def likelihood_overrides(tiny_llama, sentiment, tmp_path, *extra):
    return [
        "classify_by=likelihood",
        f"model={tiny_llama}",
        f"train_file={sentiment['train']}",
        f"validation_file={sentiment['dev']}",
        f"output_dir={tmp_path / 'runs'}",
        "epochs=1",
        "batch_size=16",
        "lr=5e-3",
        "max_length=32",
        "lora_rank=4",
        "run_name=r",
        *extra,
    ]


def test_prompt_and_verbalizers(tiny_llama, sentiment, tmp_path):
    cfg = load_config(
        None,
        likelihood_overrides(
            tiny_llama, sentiment, tmp_path, "label_words=[bad, good]", "prompt_template='{text} was it {labels} ?'"
        ),
    )
    task = get_task("classification", "likelihood")
    prepared = task.prepare(load_splits(cfg.data, cfg.train.seed), cfg)
    c = prepared.examples["validation"][0]
    assert prepared.labels == ["neg", "pos"] and c.options == ["bad", "good"]
    assert c.prompt == c.meta["text"] + " was it bad, good ?"
    for words, pattern in (("[bad]", "1 given for 2 labels"), ("[good, good]", "distinct")):
        with pytest.raises(UserError, match=pattern):
            task.prepare(
                load_splits(cfg.data, 0),
                load_config(None, likelihood_overrides(tiny_llama, sentiment, tmp_path, f"label_words={words}")),
            )
    with pytest.raises(UserError, match=r"prompt_template: .*\{sentence\}.*placeholders available.*\{text\}"):
        task.prepare(
            load_splits(cfg.data, 0),
            load_config(None, likelihood_overrides(tiny_llama, sentiment, tmp_path, "prompt_template='{sentence}'")),
        )


@pytest.mark.parametrize(
    "words, scoring", [("[bad, good]", "next-token"), ("[very bad, really good]", "per-label sequences")]
)
def test_scores_are_verbalizer_log_probs(words, scoring, tiny_llama, sentiment, tmp_path):
    """Single-token verbalizers: next-token log-probs after the prompt; multi-token: summed log-probs."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = load_config(None, likelihood_overrides(tiny_llama, sentiment, tmp_path, f"label_words={words}"))
    task, tok = get_task("classification", "likelihood"), load_tokenizer(tiny_llama)
    prepared = task.prepare(load_splits(cfg.data, 0), cfg)
    model, notes = task.build_model(resolve_model(tiny_llama), prepared, cfg, tok)
    assert notes["scoring"] == scoring
    ds = task.encode(prepared.examples["validation"][:2], tok, cfg)
    batch = task.build_collator(tok, cfg)([ds[i] for i in range(2)])
    plain = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    with torch.no_grad():
        got = model.eval()(**batch)["logits"]
        for row, c in enumerate(prepared.examples["validation"][:2]):
            ctx = tok(c.prompt)["input_ids"]
            for j, w in enumerate(c.options):
                cont = tok(" " + w, add_special_tokens=False)["input_ids"]
                logp = torch.log_softmax(plain(torch.tensor([ctx + cont])).logits[0], -1)
                assert got[row, j].item() == pytest.approx(
                    sum(logp[len(ctx) + i - 1, t].item() for i, t in enumerate(cont)), abs=1e-4
                )


@pytest.mark.parametrize("method", ["lora", "prompt-tuning"])
def test_cli_end_to_end_zero_shot_then_training(method, tiny_llama, sentiment, tmp_path, capsys):
    code = main(
        [
            "train",
            *likelihood_overrides(
                tiny_llama,
                sentiment,
                tmp_path,
                "label_words=[bad, good]",
                f"method={method}",
                "num_virtual_tokens=4",
                "epochs=2",
            ),
        ]
    )
    assert code == 0, capsys.readouterr().err
    run_dir = tmp_path / "runs" / "r"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["scoring"] == "next-token" and result["label_words"] == {"neg": ["bad"], "pos": ["good"]}
    assert [l["epoch"] for l in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())] == [0, 1, 2]
    preds = [json.loads(l) for l in (run_dir / "predictions_validation.jsonl").read_text().splitlines()]
    assert len(preds) == 32 and all(p["prediction"] in ("neg", "pos") for p in preds)
    gold = [int(p["label"] == "pos") for p in preds]
    pred = [int(p["prediction"] == "pos") for p in preds]
    assert compute_classification(gold, pred, 2) == pytest.approx(
        {k: v for k, v in result["metrics_best"].items() if k in compute_classification(gold, pred, 2)}
    )


@pytest.mark.real
def test_cola_smollm2_zero_shot(tmp_path):
    """Zero-shot CoLA from SmolLM2-135M: real scores for both labels from one pass per sentence (the
    untuned model mostly answers 'no': accuracy near the minority rate, which is its honest zero-shot)."""
    cfg = load_config(
        Path(__file__).parents[1] / "recipes" / "cola-smollm2-likelihood.yaml",
        [
            f"train_file={COLA / 'in_domain_train.tsv'}",
            f"validation_file={COLA / 'in_domain_dev.tsv'}",
            "max_samples=16",
            "max_eval_samples=60",
            "batch_size=8",
            f"output_dir={tmp_path}",
        ],
    )
    result = run(cfg)
    zero = result["metrics_epoch0"]
    assert result["scoring"] == "next-token"
    run_dir = Path(cfg.train.output_dir) / result["run_name"]
    preds = [json.loads(l) for l in (run_dir / "predictions_validation.jsonl").read_text().splitlines()]
    probs = np.array([p["probabilities"]["1"] for p in preds])
    assert len(preds) == 60 and 0.25 < zero["accuracy"] < 0.9 and np.isfinite(zero["mcc"])
    assert ((probs > 0) & (probs < 1)).all()
