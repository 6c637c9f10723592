"""The README's promise, literally: every method runs on every task way, on an encoder and a decoder,
or is refused before anything is written, with the reason.

Each trained cell takes one optimizer step (AdaLoRA four: its schedule needs three), then the run
folder is evaluated again through `peftlab eval` — the saved weights loaded back the way a user
would load them — and its predictions must equal the run's own. Each refused cell must raise the
expected UserError and leave no run folder. The expected refusals are written out below, so a cell
that starts failing, or starts being refused, fails the test. About 0.7 s a cell on 2 cores.
"""

import json
import math
import random
import re
from pathlib import Path

import pytest
from conftest import FILL, NEG, POS, save_tiny_model, sentence
from test_multiple_choice import polarity_questions
from test_ner import tagged
from test_qa import qa_rows

from peftlab.cli import main
from peftlab.config.settings import load_config
from peftlab.errors import UserError
from peftlab.models.methods import METHODS
from peftlab.report.tables import BOOKKEEPING
from peftlab.training.train import run

CAUSAL_WAYS = {"cls-likelihood", "cls-generate", "mc-likelihood", "mc-generate", "sft"}
LIKELIHOOD_WAYS = {"cls-likelihood", "mc-likelihood"}
WAYS = [
    "cls-head",
    "cls-likelihood",
    "cls-generate",
    "ner",
    "qa",
    "mc-likelihood",
    "mc-classifier",
    "mc-generate",
    "sft",
]


def refusal(model: str, way: str, method: str) -> str | None:
    """The reason a cell is refused (a pattern of its message), in the order the checks run; None = it trains."""
    if method == "head" and way in LIKELIHOOD_WAYS:
        return "trains only a task head, and likelihood scoring has none"
    if way in ("mc-likelihood", "mc-classifier") and METHODS[method].prompt:  # generate's rows are 2-D
        return "prepends virtual tokens to 2-D inputs"
    if model == "bert" and way in CAUSAL_WAYS:  # BertLMHeadModel attends both ways: it would read the answer
        return "is not causal"
    if method == "prefix-tuning":  # transformers 5 models take `cache`, not the past_key_values peft feeds
        return "takes no `past_key_values`"
    if way == "qa" and METHODS[method].prompt:
        return "start/end logits no longer line up"
    return None


@pytest.fixture(scope="module")
def matrix_data(tmp_path_factory):
    """Eight training and eight validation rows per task, tiny models of both families."""
    root = tmp_path_factory.mktemp("matrix")
    rng = random.Random(0)

    def lines(name, rows):
        (root / name).write_text("".join(r + "\n" for r in rows))
        return root / name

    cls = {
        s: lines(
            f"{s}.tsv", ["sentence\tlabel"] + [f"{sentence(rng, i % 2)}\t{'pos' if i % 2 else 'neg'}" for i in range(8)]
        )
        for s in ("tr", "dv")
    }
    conll = {
        s: lines(f"{s}.conll", ["\n".join(f"{w}\t{t}" for w, t in zip(*tagged(rng))) + "\n" for _ in range(8)])
        for s in ("tr", "dv")
    }
    qa = {s: lines(f"q{s}.jsonl", [json.dumps(r) for r in qa_rows(rng, 8, s)]) for s in ("tr", "dv")}
    mc = {s: polarity_questions(root / f"m{s}.jsonl", 8, i) for i, s in enumerate(("tr", "dv"))}
    sft = [
        {"instruction": " ".join(rng.sample(FILL, 3) + [w]), "input": "", "output": f"{w} ."}
        for w in (rng.choice(POS + NEG) for _ in range(16))
    ]
    (root / "str.json").write_text(json.dumps(sft[:8]))
    (root / "sdv.json").write_text(json.dumps(sft[8:]))
    files = lambda d: [f"train_file={d['tr']}", f"validation_file={d['dv']}"]  # noqa: E731
    words = ["label_words=[bad,good]"]
    ways = {
        "cls-head": files(cls),
        "cls-likelihood": files(cls) + ["classify_by=likelihood"] + words,
        "cls-generate": files(cls) + ["classify_by=generate", "max_new_tokens=2"] + words,
        "ner": ["task=ner"] + files(conll),
        "qa": ["task=qa", "split_by="] + files(qa),
        "mc-likelihood": ["task=multiple_choice", "map_k=2"] + files(mc),
        "mc-classifier": ["task=multiple_choice", "map_k=2", "mc_head=classifier"] + files(mc),
        "mc-generate": ["task=multiple_choice", "map_k=2", "mc_head=generate", "max_new_tokens=2"] + files(mc),
        "sft": [
            "task=sft",
            "max_new_tokens=3",
            f"train_file={root / 'str.json'}",
            f"validation_file={root / 'sdv.json'}",
        ],
    }
    letters = ("A", "B", "C")  # the option labels of mc-generate, known to both tokenizers
    models = {
        "bert": save_tiny_model(root / "bert", "bert", letters),
        "llama": save_tiny_model(root / "llama", "llama", letters),
    }
    return models, ways


def rounded(value, places=4):
    """Predictions as compared: numbers to 4 decimals (the files keep 4 to 6), everything else as is."""
    if isinstance(value, float):
        return round(value, places)
    if isinstance(value, dict):
        return {k: rounded(v, places) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, places) for v in value]
    return value


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


CELLS = [(m, w, meth) for m in ("bert", "llama") for w in WAYS for meth in METHODS]


@pytest.mark.parametrize("model,way,method", CELLS, ids=["-".join(c) for c in CELLS])
def test_every_method_on_every_task_trains_and_reloads_or_is_refused(model, way, method, matrix_data, tmp_path, capsys):
    models, ways = matrix_data
    overrides = [
        f"model={models[model]}",
        *ways[way],
        f"method={method}",
        f"output_dir={tmp_path / 'runs'}",
        "run_name=r",
        "epochs=1",
        f"batch_size={2 if method == 'adalora' else 8}",
        "lr=5e-3",
        "max_length=48",
        "lora_rank=4",
        "num_virtual_tokens=4",
        "freeze_layers=1",
        "eval_at_start=false",
    ]
    reason = refusal(model, way, method)
    if reason:
        with pytest.raises(UserError, match=re.escape(reason)):
            run(load_config(None, overrides))
        assert not (tmp_path / "runs").exists()
        return
    result = run(load_config(None, overrides))
    run_dir = tmp_path / "runs" / "r"
    assert result["status"] == "completed"
    epochs = read_rows(run_dir / "metrics.jsonl")
    assert [e["epoch"] for e in epochs] == [1] and math.isfinite(epochs[0]["train_loss"])
    assert result["optimizer_steps"] == (4 if method == "adalora" else 1)
    assert main(["eval", str(run_dir), "--out", str(tmp_path / "again")]) == 0
    capsys.readouterr()
    again = read_rows(tmp_path / "again" / "predictions_validation.jsonl")
    assert rounded(again) == rounded(read_rows(run_dir / "predictions_validation.jsonl"))
    scored = json.loads((tmp_path / "again" / "result.json").read_text())["metrics_best"]
    names = [n for n, v in result["metrics_best"].items() if n not in BOOKKEEPING and isinstance(v, float)]
    assert result["metric_for_best"] in names + ["loss"]
    for name in names:
        assert scored[name] == pytest.approx(result["metrics_best"][name], abs=1e-6), name
