"""classify_by=generate: label words, tolerant parsing, prompts, unparsed answers, a tiny-llama run."""

import json

import pytest
from sklearn.metrics import accuracy_score, matthews_corrcoef

from peftlab.config.settings import load_config
from peftlab.data.splits import load_splits
from peftlab.errors import UserError
from peftlab.tasks import cls_generate
from peftlab.tasks.metrics import compute_classification
from peftlab.tasks.registry import get_task

WORDS = [["unacceptable", "no"], ["acceptable", "yes", "ok"]]


@pytest.mark.parametrize(
    "text, label",
    [
        ("acceptable", 1),
        ("  Unacceptable.", 0),
        ("ACCEPTABLE!!", 1),
        ("The answer is: acceptable", 1),
        ("Yes, it is.", 1),
        ("no", 0),
        ("no - it is acceptable", 0),  # the first label word wins
        ("unacceptable, not acceptable", 0),  # whole words: 'acceptable' is not in 'unacceptable'
        ("ok", 1),
        ("okay", None),
        ("maybe", None),
        ("", None),
        ("noacceptable", None),
    ],
)
def test_parse_is_tolerant_and_takes_the_first_label_word(text, label):
    assert cls_generate.parse(text, WORDS) == label


def test_parse_prefers_the_longer_word_at_the_same_place():
    assert cls_generate.parse("not good at all", [["not good"], ["not"]]) == 0
    assert cls_generate.parse("not good at all", [["not"], ["not good"]]) == 1


def test_label_words_default_aliases_and_errors():
    assert cls_generate.label_words(["0", "1"], []) == [["0"], ["1"]]
    assert cls_generate.label_words(["neg", "pos"], ["no | bad", "yes"]) == [["no", "bad"], ["yes"]]
    with pytest.raises(UserError, match=r"label_words: 1 entries for 2 labels \(neg, pos\)"):
        cls_generate.label_words(["neg", "pos"], ["no"])
    with pytest.raises(UserError, match="label_words: 'yes' is given for both 'neg' and 'pos'"):
        cls_generate.label_words(["neg", "pos"], ["no|Yes", "yes"])
    with pytest.raises(UserError, match="label 'pos' needs a word with letters or digits"):
        cls_generate.label_words(["neg", "pos"], ["no", "?"])


def test_prompts_hold_the_instruction_and_answer_with_the_first_word(sentiment):
    cfg = load_config(
        None,
        [
            "task=classification",
            "classify_by=generate",
            f"train_file={sentiment['train']}",
            f"validation_file={sentiment['dev']}",
            "label_words=[bad|negative, good]",
            "instruction=Sentiment? Say {choices}.",
        ],
    )
    task = get_task("classification", "generate")
    assert task is cls_generate
    prepared = task.prepare(load_splits(cfg.data, 42), cfg)
    assert prepared.labels == ["neg", "pos"]
    text, pair, y = prepared.rows["train"][0]
    ((user, answer),) = prepared.examples["train"][0].turns
    assert user == f"Sentiment? Say bad, good.\n\n{text}" and answer == ["bad", "good"][y]
    assert prepared.notes["label_words"] == {"neg": ["bad", "negative"], "pos": ["good"]}
    default = task.prepare(load_splits(cfg.data, 42), load_config(None, [f"train_file={sentiment['train']}"]))
    assert default.examples["train"][0].turns[0][0].startswith("Classify the text. Answer with one of: neg, pos.\n\n")


def test_unparsed_answers_count_as_wrong():
    gold, pred = [1, 1, 0, 0, 1], [1, -1, 0, -1, 0]  # two unparsed
    m = compute_classification(gold, pred, 2)
    assert m["accuracy"] == pytest.approx(2 / 5) == accuracy_score(gold, pred)
    assert m["recall"] == pytest.approx(1 / 3) and m["precision"] == pytest.approx(1.0)  # label 1: tp 1, fn 2, fp 0
    assert m["mcc"] == pytest.approx(matthews_corrcoef(gold, pred))


def test_cli_run_classify_by_generate(tiny_llama, sentiment, tmp_path):
    from peftlab.cli import main

    out = tmp_path / "runs"
    code = main(
        [
            "train",
            f"model={tiny_llama}",
            "task=classification",
            "classify_by=generate",
            f"train_file={sentiment['train']}",
            f"validation_file={sentiment['dev']}",
            f"output_dir={out}",
            "run_name=g",
            "method=full",
            "epochs=2",
            "batch_size=16",
            "lr=1e-2",
            "max_length=32",
            "max_new_tokens=3",
            "label_words=[bad, good]",
            "max_eval_generate=16",
            f"extra_eval_file={sentiment['dev']}",
        ]
    )
    assert code == 0
    result = json.loads((out / "g" / "result.json").read_text())
    assert result["status"] == "completed" and result["metric_for_best"] == "accuracy"
    assert result["label_words"] == {"neg": ["bad"], "pos": ["good"]}
    lines = [json.loads(l) for l in (out / "g" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["unparsed"] == 16 and lines[0]["unparsed_ratio"] == 1.0  # the random model names no label
    assert lines[-1]["unparsed"] == 0  # after training every answer is a label word
    assert lines[-1]["loss"] < lines[0]["loss"]
    for line in lines:  # the extra file is the validation file: the same scores, prefixed
        assert all(line[f"extra_{k}"] == pytest.approx(line[k]) for k in ("loss", "accuracy", "mcc", "unparsed"))
    preds = [json.loads(l) for l in (out / "g" / "predictions_validation.jsonl").read_text().splitlines()]
    assert len(preds) == 16 and set(preds[0]) == {"text", "label", "generated", "prediction"}
    assert all(
        p["prediction"] is not None and {"neg": "bad", "pos": "good"}[p["prediction"]] in p["generated"] for p in preds
    )
    acc = sum(p["prediction"] == p["label"] for p in preds) / len(preds)
    assert acc == pytest.approx(result["metrics_best"]["accuracy"])


def test_label_words_take_the_shape_data_convert_takes(tmp_path):
    """`peftlab data convert label_words=0=no,1=yes` (or '{0: no, 1: yes}') and the config's label_words are
    one shape: a mapping from label to word, from a YAML file or the command line, or a list in label order."""
    from peftlab.data.convert import label_map, label_words_value

    as_list = cls_generate.label_words(["0", "1"], ["no", "yes|ok"])
    config = tmp_path / "c.yaml"
    config.write_text("task:\n  label_words: {1: [yes, ok], 0: no}\n")
    for cfg in (
        load_config(config),
        load_config(None, ["label_words={0: no, 1: yes|ok}"]),
        load_config(None, ["label_words=0=no,1=yes|ok"]),
    ):
        assert cls_generate.label_words(["0", "1"], cfg.task.label_words) == as_list
    # what convert reads from the same text is the same mapping
    assert label_map(label_words_value("{0: no, 1: yes|ok}")) == {"0": "no", "1": "yes|ok"}
    assert load_config(None, ["label_words={0: no, 1: yes|ok}"]).task.label_words == {"0": "no", "1": "yes|ok"}
    with pytest.raises(
        UserError, match=r"label_words: '2' not among the labels; no word for '1' \(the labels are 0, 1\)"
    ):
        cls_generate.label_words(["0", "1"], {"0": "no", "2": "yes"})
    with pytest.raises(UserError, match="not a YAML mapping"):
        load_config(None, ["label_words={0: no"])
