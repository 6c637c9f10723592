"""The README's promise, literally: every method runs on every task way, on an encoder and a decoder,
or is refused before anything is written, with the reason.

Each trained cell takes one optimizer step (AdaLoRA four: its schedule needs three), then the run
folder is evaluated again through `peftlab eval` — the saved weights loaded back the way a user
would load them — and its predictions and its eval loss must equal the run's own. The loss must also
differ from the untrained model's (the run's epoch-0 evaluation, before any update): NER tags, SFT
answers and generated labels of a tiny model can stay the same after one step, so only the loss tells
an eval that loaded the trained weights from one that loaded the base model or a fresh adapter.
The best epoch is chosen by that loss, so the saved weights are the trained ones. Each refused cell
must raise the expected UserError and leave no run folder. The expected refusals are written out below, so a cell
that starts failing, or starts being refused, fails the test. About 0.7 s a cell on 2 cores.

Which cells: the original methods (a METHODS row that is not `catalog`) on every way of both models; the
rest of peft's catalogue (models/peft_methods.py, about 30 rows) on a sample of ways, since the full grid
would be some 550 more cells (~7 minutes): the classification head on both models (the encoder and the
decoder wrapping of peft's SEQ_CLS), SFT on the decoder (peft's CAUSAL_LM: generation and the LM loss), and
SFT on the encoder (refused before anything is written). What a catalogue method does is peft's; what can
differ between ways is how peftlab wraps the model, which those ways cover. Their sizes are shrunk to the
tiny models' 32 hidden units where peft's defaults need bigger layers (TINY_ARGS).
Measured on 2 shared cores: the 234 cells of the original methods 89 s before this sample was added, 98 s
after (prefix-tuning now trains on 3 ways, merges checked); the 120 sampled cells 65 s more.

Merge: the decoder's classification-head cell of every method exports the run with `--merge` (the path of
`peftlab export --merge`) and evaluates the merged folder, whose predictions must equal the run's; a method
peft cannot merge is refused with the reason (MERGE_REFUSED), a prompt method exports its adapter instead.
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


# peft's defaults sized for real layers (hundreds of units), shrunk to the tiny models' 32 (and 16 for the
# decoder's key/value projections); the methods' sizes themselves are what `peftlab methods` says
TINY_ARGS = {
    "fourierft": "{n_frequency: 64}",
    "waveft": "{n_frequency: 64}",
    "vblora": "{vector_length: 8, num_vectors: 16}",
    "c3a": "{block_size: 8}",
    "road": "{group_size: 8}",
    "adamss": "{r: 4}",
}
# what the table says merges but peft refuses to merge on the tiny decoder, and the message's pattern
# (lily and shadow, which peft never merges, export their adapter instead, as prompt methods do)
MERGE_REFUSED = {"beft": "Base layer has no bias"}
SAMPLED_WAYS = (("bert", "cls-head"), ("llama", "cls-head"), ("llama", "sft"), ("bert", "sft"))


def refusal(model: str, way: str, method: str) -> str | None:
    """The reason a cell is refused (a pattern of its message), in the order the checks run; None = it trains."""
    if method == "head" and way in LIKELIHOOD_WAYS:
        return "trains only a task head, and likelihood scoring has none"
    if way in ("mc-likelihood", "mc-classifier") and METHODS[method].prompt:  # generate's rows are 2-D
        return "prepends virtual tokens to 2-D inputs"
    if method == "prefix-tuning" and way in ("cls-generate", "mc-generate", "sft"):  # generate() drops the prefix
        return "cannot be scored by generating"
    if model == "bert" and way in CAUSAL_WAYS:  # BertLMHeadModel attends both ways: it would read the answer
        return "is not causal"
    if method == "shadow" and model == "bert":  # peft's ShadowCarrier fails inside BERT
        return "method shadow: not on BertForSequenceClassification"
    # peft 0.21's classification, token and QA wrappers need `past_key_values` in the signature (now `cache`)
    if method == "prefix-tuning":
        return "takes no `past_key_values`"
    if way == "qa" and METHODS[method].prompt:
        return "start/end logits no longer line up"
    return None


@pytest.fixture(scope="module")
def matrix_data(tmp_path_factory):
    """Eight rows per task, trained on and validated on, tiny models of both families."""
    root = tmp_path_factory.mktemp("matrix")
    rng = random.Random(0)

    def lines(name, rows):
        (root / name).write_text("".join(r + "\n" for r in rows))
        return root / name

    cls = lines(
        "tr.tsv", ["sentence\tlabel"] + [f"{sentence(rng, i % 2)}\t{'pos' if i % 2 else 'neg'}" for i in range(8)]
    )
    conll = lines("tr.conll", ["\n".join(f"{w}\t{t}" for w, t in zip(*tagged(rng))) + "\n" for _ in range(8)])
    qa = lines("qtr.jsonl", [json.dumps(r) for r in qa_rows(rng, 8, "tr")])
    mc = polarity_questions(root / "mtr.jsonl", 8, 0)
    sft = [
        {"instruction": " ".join(rng.sample(FILL, 3) + [w]), "input": "", "output": f"{w} ."}
        for w in (rng.choice(POS + NEG) for _ in range(8))
    ]
    (root / "str.json").write_text(json.dumps(sft))
    # validated on the training rows: the one step (all 8 rows in one batch) descends on exactly the rows
    # the loss is measured on, so it lowers that loss measurably and the saved weights are the trained ones
    files = lambda path: [f"train_file={path}", f"validation_file={path}"]  # noqa: E731
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
        "sft": ["task=sft", "max_new_tokens=3"] + files(root / "str.json"),
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


CELLS = [(m, w, meth) for m in ("bert", "llama") for w in WAYS for meth in METHODS if not METHODS[meth].catalog]
CELLS += [(m, w, meth) for meth in METHODS if METHODS[meth].catalog for m, w in SAMPLED_WAYS]


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
        # Adam's first step moves every weight by about lr: 5e-3 overshoots a whole tiny model's likelihood loss
        f"lr={1e-3 if method in ('full', 'freeze') else 5e-3}",
        "max_length=48",
        "lora_rank=4",
        "num_virtual_tokens=4",
        "freeze_layers=1",
        "eval_at_start=true",  # epoch 0: the untrained model's loss, the one a wrong reload would give
        "metric_for_best=loss",
        # the tiny BERT's [CLS] pooler barely depends on the input: its loss would not move (1e-5)
        *(["pooling=mean"] if model == "bert" and way in ("cls-head", "mc-classifier") else []),
        *([f"method_args={TINY_ARGS[method]}"] if method in TINY_ARGS else []),
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
    assert [e["epoch"] for e in epochs] == [0, 1] and math.isfinite(epochs[1]["train_loss"])
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
    untrained, trained = epochs[0]["loss"], result["metrics_best"]["loss"]
    assert result["best_epoch"] == 1, f"the step did not lower the loss ({untrained} -> {epochs[1]['loss']})"
    assert scored["loss"] == pytest.approx(trained, rel=1e-6, abs=1e-6)
    # 10x the tolerance above: the base model or a fresh adapter could not pass for the trained weights
    assert abs(trained - untrained) > 1e-5, (untrained, trained)
    if (model, way) == ("llama", "cls-head"):
        check_merge(method, run_dir, tmp_path, capsys)


def check_merge(method: str, run_dir: Path, tmp_path: Path, capsys) -> None:
    """export --merge: the merged model predicts what the run did, or the method is refused with its reason."""
    from peftlab.export.merge import run_export

    out = tmp_path / "merged"
    if method in MERGE_REFUSED:
        with pytest.raises(UserError, match=f"peft cannot merge this {method} adapter.*{MERGE_REFUSED[method]}"):
            run_export(str(run_dir), str(out), merge=True)
        return
    lines = " ".join(run_export(str(run_dir), str(out), merge=True))
    if not METHODS[method].can_merge:  # the adapter, with a note on loading it with peft
        assert "cannot be merged" in lines and (out / "adapter_config.json").is_file()
        return
    assert "merged " in lines and not (out / "adapter_config.json").exists()
    assert main(["eval", str(out), "--out", str(tmp_path / "merged-eval")]) == 0
    capsys.readouterr()
    merged = read_rows(tmp_path / "merged-eval" / "predictions_validation.jsonl")
    assert rounded(merged, 3) == rounded(read_rows(run_dir / "predictions_validation.jsonl"), 3)
