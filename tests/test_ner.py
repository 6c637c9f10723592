"""NER (token classification): readers, sub-token alignment, BIO repair, seqeval metrics, every
method on tiny models, the CLI end to end, and a JNLPBA run on MiniLM + LoRA."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FILL, NEG, POS, SAMPLES

from peftlab.config.settings import load_config
from peftlab.data.formats import read_records
from peftlab.data.splits import load_splits
from peftlab.errors import UserError
from peftlab.models.loading import load_tokenizer, resolve_model
from peftlab.models.methods import METHODS
from peftlab.tasks import ner
from peftlab.training.train import run

ROOT = Path(__file__).resolve().parents[1]
JNLPBA = SAMPLES / "jnlpba"

CONLL2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def prepare(tmp_path, train: Path, dev: Path, *overrides):
    cfg = load_config(None, ["task=ner", f"train_file={train}", f"validation_file={dev}", *overrides])
    return ner.prepare(load_splits(cfg.data, cfg.train.seed), cfg), cfg


def tagged(rng: random.Random) -> tuple[list[str], list[str]]:
    """A sentence whose tags follow from its words: 'very good' -> B-POS I-POS, 'bad' -> B-NEG."""
    words, tags = [], []
    for _ in range(rng.randint(3, 6)):
        r = rng.random()
        if r < 0.5:
            words.append(rng.choice([w for w in FILL if w != "very"]))
            tags.append("O")
        else:
            kind, pool = ("POS", POS) if r < 0.75 else ("NEG", NEG)
            if rng.random() < 0.4:
                words, tags = words + ["very"], tags + [f"B-{kind}"]
                words.append(rng.choice(pool))
                tags.append(f"I-{kind}")
            else:
                words.append(rng.choice(pool))
                tags.append(f"B-{kind}")
    return words, tags


@pytest.fixture(scope="session")
def toy_ner(tmp_path_factory) -> dict:
    """train.conll (80 sentences) and dev.conll (24), words from the tiny tokenizer's vocabulary."""
    folder = tmp_path_factory.mktemp("toy-ner")
    rng = random.Random(0)
    for name, n in (("train", 80), ("dev", 24)):
        blocks = ["\n".join(f"{w}\t{t}" for w, t in zip(*tagged(rng))) for _ in range(n)]
        (folder / f"{name}.conll").write_text("\n\n".join(blocks) + "\n")
    return {"train": folder / "train.conll", "dev": folder / "dev.conll"}


def tiny_overrides(model: str, data: dict, tmp_path, *extra) -> list[str]:
    return [
        "task=ner",
        f"model={model}",
        f"train_file={data['train']}",
        f"validation_file={data['dev']}",
        f"output_dir={tmp_path / 'runs'}",
        "epochs=1",
        "batch_size=16",
        "lr=5e-3",
        "max_length=16",
        "logging_steps=2",
        "save_steps=50",
        *extra,
    ]


# ---------------------------------------------------------------- readers


def test_conll2003_four_columns_docstart_skipped_rows_are_lines(tmp_path):
    split = read_records(write(tmp_path / "eng.conll", CONLL2003), "train_file")
    assert split.records == [
        {"tokens": ["EU", "rejects", "German", "call"], "tags": ["B-ORG", "O", "B-MISC", "O"]},
        {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]},
        {"tokens": ["BRUSSELS"], "tags": ["B-LOC"]},
    ]
    assert split.rows == [3, 8, 12]


def test_jnlpba_iob2_and_tsv_layouts():
    """The official test file (.iob2, detected by extension) and the MTL-2016 .tsv with -DOCSTART- lines
    (the package's samples: the counts are those of their SOURCE.md)."""
    test = read_records(JNLPBA / "Genia4EReval1.iob2", "train_file")
    assert len(test.records) == 400 and sum(len(r["tokens"]) for r in test.records) == 10474
    assert test.records[0]["tokens"][:3] == ["Number", "of", "glucocorticoid"]
    assert test.records[0]["tags"][:4] == ["O", "O", "B-protein", "I-protein"]
    assert sum(r["tags"].count("B-protein") for r in test.records) == 415  # SOURCE.md's tag count
    dev = read_records(JNLPBA / "devel.tsv", "validation_file", data_format="conll")
    assert len(dev.records) == 205 and dev.rows[0] == 3  # line 1 is -DOCSTART-, line 2 blank
    assert not any("-DOCSTART-" in r["tokens"] for r in dev.records)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("EU\tB-ORG\nrejects\n", r"bad.conll:2: one column \('rejects'\); expected a token and its tag"),
        ("EU NNP B-ORG\nrejects O\n", r"bad.conll:2: 2 columns, but line 1 has 3"),
    ],
)
def test_bad_column_file_names_the_line(tmp_path, text, pattern):
    with pytest.raises(UserError, match=pattern):
        read_records(write(tmp_path / "bad.conll", text), "train_file")


def test_bad_tag_names_its_line_through_the_cli(tmp_path, capsys):
    """A tag in the wrong column is caught in prepare: exit 2, file:line, nothing written."""
    from peftlab.cli import main

    bad = write(tmp_path / "dev.iob2", "EU\tB-ORG\nrejects\tO\n\nGerman\tNNP\n")
    good = write(tmp_path / "train.iob2", "EU\tB-ORG\ncalls\tO\n")
    assert (
        main(["train", "task=ner", f"train_file={good}", f"validation_file={bad}", f"output_dir={tmp_path / 'runs'}"])
        == 2
    )
    assert "dev.iob2:4: tag 'NNP' is not IOB2 (O, B-TYPE or I-TYPE)" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_json_int_tags_with_label_names_and_string_tags(tmp_path):
    train = write(
        tmp_path / "train.jsonl",
        "\n".join(
            json.dumps(r)
            for r in [
                {"tokens": ["EU", "rejects", "Peter"], "ner_tags": [3, 0, 1]},
                {"tokens": ["Peter", "Blackburn", "spoke"], "ner_tags": [1, 2, 0]},
            ]
        ),
    )
    dev = write(tmp_path / "dev.json", json.dumps([{"tokens": ["EU", "calls"], "tags": ["B-ORG", "O"]}]))
    prepared, _ = prepare(tmp_path, train, dev, "label_names=[O, B-PER, I-PER, B-ORG]")
    assert prepared.labels == ["O", "B-PER", "I-PER", "B-ORG", "I-ORG"]  # given order kept, I-ORG completed
    assert [s.tags for s in prepared.examples["train"]] == [[3, 0, 1], [1, 2, 0]]
    assert prepared.examples["validation"][0].tags == [3, 0]  # dev has `tags`: found without tags_column
    with pytest.raises(UserError, match=r"train.jsonl: row 1, token 1: tag 3 is a number; .*label_names"):
        prepare(tmp_path, train, dev)
    with pytest.raises(UserError, match=r"train.jsonl: row 1, token 1: tag 3 is out of range for label_names"):
        prepare(tmp_path, train, dev, "label_names=[O, B-PER]")


def test_json_shape_errors_name_the_row_and_the_columns(tmp_path):
    dev = write(tmp_path / "dev.json", json.dumps([{"words": ["EU"], "labels": ["B-ORG"]}]))
    short = write(
        tmp_path / "short.jsonl", '{"tokens": ["EU"], "tags": ["B-ORG"]}\n\n{"tokens": ["a", "b"], "tags": ["O"]}\n'
    )
    with pytest.raises(UserError, match=r"short.jsonl: row 3, token 1: 2 words but 1 tags"):
        prepare(tmp_path, short, dev)
    train = write(tmp_path / "train.jsonl", '{"tokens": ["EU"], "tags": ["B-ORG"]}\n')
    with pytest.raises(
        UserError, match=r"dev.json: column 'tokens' not found \(columns: words, labels\); set `tokens_column:`"
    ):
        prepare(tmp_path, train, dev)
    prepared, _ = prepare(tmp_path, dev, dev, "tokens_column=words", "tags_column=labels")
    assert prepared.examples["validation"][0].tokens == ["EU"]


# ---------------------------------------------------------------- tags: repair, label set, unseen types


def test_bio_repair_by_hand():
    tags = ["I-X", "I-X", "O", "I-Y", "B-X", "I-Y", "I-Y", "B-Y", "I-Y"]
    assert ner.repair_bio(tags) == (["B-X", "I-X", "O", "B-Y", "B-X", "B-Y", "I-Y", "B-Y", "I-Y"], 3)


def test_repairs_counted_per_split_and_label_pairs_completed(tmp_path, capsys):
    train = write(tmp_path / "t.iob2", "a\tI-gene\nb\tI-gene\nc\tO\nd\tI-cell\n\ne\tB-drug\nf\tI-gene\n")
    dev = write(tmp_path / "d.iob2", "a\tO\nb\tI-drug\n")
    prepared, _ = prepare(tmp_path, train, dev)
    assert prepared.repairs == {"train": 3, "validation": 1}
    assert (
        "repaired invalid BIO tags (I-X after O or after another type -> B-X): train 3, validation 1"
        in capsys.readouterr().out
    )
    assert prepared.labels == ["O", "B-cell", "I-cell", "B-drug", "I-drug", "B-gene", "I-gene"]
    assert [prepared.labels[t] for t in prepared.examples["train"][1].tags] == ["B-drug", "B-gene"]
    assert prepared.notes["bio_repairs"] == {"train": 3, "validation": 1}


def test_entity_type_unseen_in_train_is_refused_at_its_line(tmp_path):
    train = write(tmp_path / "t.iob2", "a\tB-gene\n")
    dev = write(tmp_path / "d.iob2", "a\tO\n\nb\tO\nc\tB-drug\n")
    with pytest.raises(UserError, match=r"d.iob2:4: tag 'B-drug': entity type never seen in train_file"):
        prepare(tmp_path, train, dev)
    prepared, _ = prepare(tmp_path, train, dev, "label_names=[O, B-drug]")
    assert "I-drug" in prepared.labels and "I-gene" in prepared.labels


# ---------------------------------------------------------------- sub-tokens


def test_labels_on_first_subtoken_only_tiny_tokenizer(tiny_bert, tmp_path):
    train = write(tmp_path / "t.iob2", "the\tO\ngood.\tB-POS\nfilm\tO\n")  # 'good.' -> 'good' '.'
    prepared, cfg = prepare(tmp_path, train, train)
    tok = load_tokenizer(tiny_bert)
    ds = ner.encode(prepared.examples["train"], tok, cfg)
    assert tok.convert_ids_to_tokens(ds[0]["input_ids"]) == ["[CLS]", "the", "good", ".", "film", "[SEP]"]
    b_pos = prepared.labels.index("B-POS")
    assert ds[0]["labels"] == [-100, 0, b_pos, -100, 0, -100]
    assert prepared.examples["train"][0].kept == [0, 1, 2]


def test_minilm_wordpieces_and_truncation(tmp_path):
    train = write(tmp_path / "t.iob2", "IL-2\tB-protein\ngene\tO\nexpression\tO\nin\tO\nT-cells\tB-cell_type\n")
    prepared, cfg = prepare(tmp_path, train, train, "max_length=8")
    tok = load_tokenizer(resolve_model("minilm-l6").path)
    ds = ner.encode(prepared.examples["train"], tok, cfg)
    # [CLS] il - 2 gene expression in [SEP]: T-cells is cut off
    assert tok.convert_ids_to_tokens(ds[0]["input_ids"]) == [
        "[CLS]",
        "il",
        "-",
        "2",
        "gene",
        "expression",
        "in",
        "[SEP]",
    ]
    assert ds[0]["labels"] == [-100, prepared.labels.index("B-protein"), -100, -100, 0, 0, 0, -100]
    assert prepared.notes["truncated_words"] == {"train": 1, "validation": 0}


def test_byte_level_bpe_words_tokenize_as_running_text(tmp_path):
    """SmolLM2's byte-level BPE: each word keeps its leading-space marker, as in the plain sentence."""
    train = write(tmp_path / "t.iob2", "IL-2\tB-protein\ngene\tO\nexpression\tO\n")
    prepared, cfg = prepare(tmp_path, train, train)
    tok = load_tokenizer(resolve_model("smollm2-135m").path)
    assert ner.spaced_words(tok) and not ner.spaced_words(load_tokenizer(resolve_model("minilm-l6").path))
    ds = ner.encode(prepared.examples["train"], tok, cfg)
    assert ds[0]["input_ids"] == tok("IL-2 gene expression")["input_ids"]
    assert sum(l != -100 for l in ds[0]["labels"]) == 3


# ---------------------------------------------------------------- metrics

GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER", "O"]]
PRED = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "O", "B-PER", "B-LOC"]]


def test_entity_metrics_by_hand():
    # gold entities: PER(0,0-1) LOC(0,3) ORG(1,0) PER(1,2); predicted: PER(0,0-1) ORG(0,3) ORG(1,0, from a
    # stray I-ORG, which conlleval's default mode accepts and strict IOB2 does not) PER(1,2) LOC(1,3)
    m = ner.entity_metrics(GOLD, PRED)
    assert m["precision"] == pytest.approx(3 / 5) and m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert m["precision_strict"] == pytest.approx(2 / 4) and m["recall_strict"] == pytest.approx(2 / 4)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["f1_per"] == 1.0 and m["f1_loc"] == 0.0 and m["precision_org"] == 0.5 and m["recall_org"] == 1.0
    assert m["f1_macro"] == pytest.approx((1 + 0 + 2 / 3) / 3)


def test_entity_metrics_equal_seqeval():
    from seqeval.metrics import accuracy_score, classification_report, f1_score
    from seqeval.scheme import IOB2

    rng = random.Random(1)
    tags = ["O", "O", "O", "B-gene", "I-gene", "B-cell_type", "I-cell_type"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(60)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in g] for g in gold]
    m = ner.entity_metrics(gold, pred)
    assert m["f1"] == pytest.approx(f1_score(gold, pred))
    assert m["f1_strict"] == pytest.approx(f1_score(gold, pred, mode="strict", scheme=IOB2))
    assert m["accuracy"] == pytest.approx(accuracy_score(gold, pred))
    report = classification_report(gold, pred, output_dict=True)
    assert m["f1_cell_type"] == pytest.approx(report["cell_type"]["f1-score"])
    assert m["recall_gene"] == pytest.approx(report["gene"]["recall"])


def test_predictions_are_read_at_first_subtokens_and_cut_words_are_o():
    labels = ["O", "B-X", "I-X"]
    prepared = ner.Prepared(labels, {"validation": [ner.Sentence(["a", "b", "c"], [1, 2, 0], kept=[0, 1])]}, {})
    logits = torch.zeros(1, 5, 3)
    logits[0, 1, 1] = logits[0, 2, 0] = logits[0, 3, 2] = logits[0, 4, 1] = 5.0  # pos 2 is a 2nd sub-token
    label_ids = torch.tensor([[-100, 1, -100, 2, -100]])
    preds = ner.preprocess_logits(logits, label_ids).numpy()
    assert preds.tolist() == [[-100, 1, -100, 2, -100]]
    assert ner.word_tags(prepared, "validation", preds) == [["B-X", "I-X", "O"]]


# ---------------------------------------------------------------- training: methods and the CLI


def check_ner_run(run_dir: Path, result: dict, n_dev: int) -> list[dict]:
    assert result["status"] == "completed"
    for key in ("metrics_epoch0", "metrics_best"):
        assert 0 <= result[key]["f1"] <= 1 and "accuracy" in result[key] and "f1_strict" in result[key]
    preds = [json.loads(l) for l in (run_dir / "predictions_validation.jsonl").read_text().splitlines()]
    assert len(preds) == n_dev and all(len(p["tokens"]) == len(p["tags"]) == len(p["predicted"]) for p in preds)
    # the written predictions are those of the reloaded best weights: same F1 as the best epoch
    assert ner.entity_metrics([p["tags"] for p in preds], [p["predicted"] for p in preds])["f1"] == pytest.approx(
        result["metrics_best"]["f1"]
    )
    return preds


@pytest.mark.parametrize("method", [m for m in METHODS if m != "prefix-tuning" and not METHODS[m].catalog])
def test_every_method_on_tiny_bert(method, tiny_bert, toy_ner, tmp_path):
    cfg = load_config(
        None,
        tiny_overrides(
            tiny_bert,
            toy_ner,
            tmp_path,
            f"method={method}",
            "lora_rank=4",
            "num_virtual_tokens=4",
            "freeze_layers=1",
            "max_samples=48",
        ),
    )
    result = run(cfg)
    check_ner_run(Path(cfg.train.output_dir) / result["run_name"], result, 24)
    if method == "head":  # the token classifier only: hidden 32 x 5 tags + 5 biases
        assert result["trainable_params"] == 32 * 5 + 5
    assert result["labels"] == ["O", "B-NEG", "I-NEG", "B-POS", "I-POS"]


@pytest.mark.parametrize("method", ["freeze", "prompt-tuning"])
def test_decoder_score_head_methods(method, tiny_llama, toy_ner, tmp_path):
    """Prompt tuning on a decoder: the virtual tokens come first, the labels are shifted past them."""
    cfg = load_config(
        None,
        tiny_overrides(
            tiny_llama,
            toy_ner,
            tmp_path,
            f"method={method}",
            "freeze_layers=-1",
            "num_virtual_tokens=4",
            "max_samples=48",
        ),
    )
    result = run(cfg)
    check_ner_run(Path(cfg.train.output_dir) / result["run_name"], result, 24)


def test_prefix_tuning_is_refused_before_training(tiny_bert, toy_ner, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_bert, toy_ner, tmp_path, "method=prefix-tuning"))
    with pytest.raises(UserError, match="takes no `past_key_values`"):
        run(cfg)
    assert not (tmp_path / "runs").exists()


def cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "peftlab", "train", *args], capture_output=True, text=True, env=env)


@pytest.mark.parametrize(
    "model, extra",
    [("tiny_bert", ["method=full", "epochs=3", "lr=1e-2"]), ("tiny_llama", ["method=lora", "lora_rank=4"])],
)
def test_cli_end_to_end(model, extra, toy_ner, tmp_path, request):
    proc = cli(tiny_overrides(request.getfixturevalue(model), toy_ner, tmp_path, "run_name=r", *extra))
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = tmp_path / "runs" / "r"
    result = json.loads((run_dir / "result.json").read_text())
    check_ner_run(run_dir, result, 24)
    assert result["bio_repairs"] == {"train": 0, "validation": 0} and result["task"] == "ner"
    if model == "tiny_bert":  # tags follow from the words: three epochs of full tuning learn some of them
        assert result["metrics_best"]["f1"] > result["metrics_epoch0"]["f1"]


# ---------------------------------------------------------------- real data


@pytest.mark.real
def test_jnlpba_minilm_lora_f1_rises(tmp_path):
    """JNLPBA (official test file as training data, MTL-2016 dev for validation), a few hundred sentences."""
    cfg = load_config(
        ROOT / "recipes" / "jnlpba-minilm-lora.yaml",
        [
            f"train_file={JNLPBA / 'Genia4EReval1.iob2'}",
            f"validation_file={JNLPBA / 'devel.tsv'}",
            "max_samples=240",
            "max_eval_samples=80",
            "max_length=40",
            "epochs=1",
            "batch_size=4",
            "lr=1e-3",
            f"output_dir={tmp_path / 'runs'}",
        ],
    )
    result = run(cfg)
    assert result["metrics_epoch0"]["f1"] < 0.05  # random head
    assert result["metrics_best"]["f1"] > result["metrics_epoch0"]["f1"] + 0.04  # 0.006 -> 0.075 here
    assert "f1_protein" in result["metrics_best"]
