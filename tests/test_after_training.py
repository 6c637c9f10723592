"""After training: eval (zero/few-shot, run folders, exports), predict -> grade, export --merge, report."""

import json
import random
from pathlib import Path

import pytest
from conftest import FILL, NEG, POS

from peftlab.cli import main
from peftlab.inference.predict import line_of
from peftlab.tasks.chat import Conversation
from peftlab.tasks.choices import Choice
from peftlab.tasks.shots import apply_shots


def read_rows(path: Path) -> list[dict]:
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]


def result_of(folder: Path) -> dict:
    return json.loads((folder / "result.json").read_text())


def cli(*argv, capsys=None) -> int:
    code = main([str(a) for a in argv])
    if capsys is not None and code != 0:
        print(capsys.readouterr().err)
    return code


# ---------------------------------------------------------------- few-shot prompts


def test_shots_never_show_an_evaluated_row_and_keep_each_format():
    train = [Choice(f"q{i}", ["no", "yes"], i % 2, ["0", "1"]) for i in range(10)]
    dev = [Choice(f"q{i}", ["no", "yes"], i % 2, ["0", "1"]) for i in range(6)]  # q0..q5 are also in train
    examples = {"train": list(train), "validation": list(dev)}
    shown = apply_shots(examples, 3, seed=0, splits=["validation"])
    assert len(shown) == 3 and all(s["prompt"] not in {f"q{i}" for i in range(6)} for s in shown)
    first = examples["validation"][0]
    assert first.prompt.endswith("\n\nq0") and first.options == ["no", "yes"]
    assert first.prompt.split("\n\n")[0] == f"{shown[0]['prompt']} {shown[0]['answer']}"
    convs = {
        "train": [Conversation("", [(f"u{i}", f"a{i}")]) for i in range(5)],
        "validation": [Conversation("sys", [("u0", "a0")])],
    }
    shown = apply_shots(convs, 2, seed=1, splits=["validation"])
    turns = convs["validation"][0].turns
    assert len(turns) == 3 and turns[-1] == ("u0", "a0") and ("u0", "a0") not in turns[:2]
    assert convs["validation"][0].system == "sys" and [t[0] for t in turns[:2]] == [s["prompt"] for s in shown]
    with pytest.raises(Exception, match="only 4 rows"):
        apply_shots({"train": convs["train"], "validation": convs["train"][:1]}, 5, 0, ["validation"])


def test_few_shot_eval_of_a_base_model_records_its_shots(tiny_llama, sentiment, tmp_path, capsys):
    args = [
        "eval",
        "classify_by=likelihood",
        f"model={tiny_llama}",
        f"train_file={sentiment['train']}",
        f"validation_file={sentiment['dev']}",
        "label_words=[bad,good]",
        "max_length=96",
        "shots=2",
    ]
    assert cli(*args, "--out", tmp_path / "e", capsys=capsys) == 0
    result = result_of(tmp_path / "e")
    assert result["kind"] == "eval" and result["shots"] == 2 and len(result["shots_shown"]) == 2
    dev_texts = {l.split("\t")[0] for l in Path(sentiment["dev"]).read_text().splitlines()[1:]}
    assert all(s["prompt"].split("\n")[0] not in dev_texts for s in result["shots_shown"])
    assert result["n_evaluated"] == 32 and result["examples_per_s"] > 0 and result["size_on_disk_mb"] > 0
    preds = read_rows(tmp_path / "e" / "predictions_validation.jsonl")
    assert sum(p["label"] == p["prediction"] for p in preds) / 32 == pytest.approx(result["metrics_best"]["accuracy"])
    assert cli(*args, "--out", tmp_path / "e") == 2  # exists: refused, not overwritten
    assert cli("eval", "task=ner", f"model={tiny_llama}", f"train_file={sentiment['train']}", "shots=1") == 2


# ---------------------------------------------------------------- eval and export of run folders

CASES = {  # name -> extra overrides on base_config (tiny BERT, sentiment data)
    "bert-lora-mean": ["method=lora", "pooling=mean", "lora_rank=4"],
    "bert-full-mean": ["method=full", "pooling=mean", "lr=1e-3"],
    "llama-likelihood-lora": ["classify_by=likelihood", "label_words=[bad,good]", "lora_rank=4", "max_length=32"],
    "llama-generate-lora": [
        "classify_by=generate",
        "label_words=[bad,good]",
        "lora_rank=4",
        "max_length=48",
        "max_new_tokens=3",
    ],
}


def alpaca_files(tmp_path: Path) -> list[str]:
    rng = random.Random(5)
    rows = [
        {"instruction": " ".join(rng.sample(FILL, 3) + [w]), "input": "", "output": f"{w} ."}
        for w in (rng.choice(POS + NEG) for _ in range(40))
    ]
    (tmp_path / "tr.json").write_text(json.dumps(rows[:30]))
    (tmp_path / "dv.json").write_text(json.dumps(rows[30:]))
    return [f"train_file={tmp_path / 'tr.json'}", f"validation_file={tmp_path / 'dv.json'}"]


CASES["llama-sft-lora"] = ["task=sft", "lora_rank=4", "max_length=32", "max_new_tokens=4"]
SAME_SCORE = (
    "epoch",
    "step",
    "eval_time_s",
    "model_preparation_time",
    "train_time_s",
    "train_loss",
    "epoch_wall_s",
    "partial_epoch_time",
)  # bookkeeping of training, not scores


@pytest.mark.parametrize("case", list(CASES))
def test_eval_and_merged_export_score_what_the_run_scored(case, base_config, tiny_llama, tmp_path, capsys):
    extra = CASES[case] + ([f"model={tiny_llama}"] if case.startswith("llama") else [])
    extra += alpaca_files(tmp_path) if "sft" in case else []
    assert cli("train", *base_config, *extra, "epochs=2", "run_name=r", capsys=capsys) == 0
    run_dir = tmp_path / "runs" / "r"
    best = result_of(run_dir)["metrics_best"]
    assert cli("eval", run_dir, capsys=capsys) == 0
    evaluated = result_of(tmp_path / "runs" / "r-eval")
    assert cli("export", run_dir, "--merge", capsys=capsys) == 0
    merged = tmp_path / "runs" / "r-merged"
    assert (merged / "config.json").is_file() and (merged / "model.safetensors").is_file()
    assert not (merged / "adapter_config.json").exists()
    assert cli("eval", merged, capsys=capsys) == 0
    after_merge = result_of(tmp_path / "runs" / "r-merged-eval")
    scores = [k for k, v in best.items() if isinstance(v, (int, float)) and k not in SAME_SCORE]
    assert len(scores) >= 4  # accuracy/f1/.../loss, or rougeL/bleu4/exact_match/loss
    for key in scores:
        assert evaluated["metrics_best"][key] == pytest.approx(best[key], rel=1e-4, abs=1e-6), key
        assert after_merge["metrics_best"][key] == pytest.approx(best[key], rel=1e-4, abs=1e-6), key
    note = json.loads((merged / "peftlab.json").read_text())
    assert note["merged"] and note["labels"] == (None if "sft" in case else ["neg", "pos"])


def test_mean_pooling_survives_the_merge_with_plain_transformers(base_config, sentiment, tmp_path, capsys):
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from peftlab.models.loading import apply_pooling

    assert (
        cli(
            "train", *base_config, "method=lora", "pooling=mean", "lora_rank=4", "epochs=2", "run_name=r", capsys=capsys
        )
        == 0
    )
    assert cli("export", tmp_path / "runs" / "r", "--merge", "--out", tmp_path / "m", capsys=capsys) == 0
    note = json.loads((tmp_path / "m" / "peftlab.json").read_text())
    assert note["pooling"] == "mean" and "apply_pooling(model, 'mean')" in (tmp_path / "m" / "README.md").read_text()
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    apply_pooling(model, note["pooling"])
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    preds = read_rows(tmp_path / "runs" / "r" / "predictions_validation.jsonl")
    batch = tok([p["text"] for p in preds], padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**batch).logits, -1).numpy()
    expected = np.array([[p["probabilities"]["neg"], p["probabilities"]["pos"]] for p in preds])
    assert np.allclose(probs, expected, atol=1e-4)


def test_adapter_only_copy_loads_with_plain_peft(base_config, tiny_llama, tmp_path, capsys):
    """The copy loads with PeftModel onto the base model, as a grader would, and gives the run's own
    probabilities (its trained classifier head included), not only a readable adapter_config.json.
    The tiny llama: its last-token classifier learns here (the tiny BERT's [CLS] pooler stays near 0.5)."""
    import numpy as np
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    train = [f"model={tiny_llama}", "method=lora", "lora_rank=4", "epochs=2", "run_name=r"]
    assert cli("train", *base_config, *train, capsys=capsys) == 0
    saved = tmp_path / "saved_model"
    assert cli("export", tmp_path / "runs" / "r", "--adapter-only", "--out", saved, capsys=capsys) == 0
    assert PeftConfig.from_pretrained(str(saved)).r == 4
    assert (saved / "adapter_model.safetensors").is_file()

    result = result_of(tmp_path / "runs" / "r")
    assert result["pooling"] == "last"  # what plain transformers does for a decoder: nothing more to set
    labels = result["labels"]
    tok = AutoTokenizer.from_pretrained(saved)
    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_llama, num_labels=len(labels), id2label=dict(enumerate(labels)), pad_token_id=tok.pad_token_id
    )
    model = PeftModel.from_pretrained(base, saved).eval()
    preds = read_rows(tmp_path / "runs" / "r" / "predictions_validation.jsonl")
    batch = tok([p["text"] for p in preds], padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**batch).logits, -1).numpy()
        with model.disable_adapter():  # the base model with its fresh head: what a wrong load would give
            untrained = torch.softmax(model(**batch).logits, -1).numpy()
    expected = np.array([[p["probabilities"][l] for l in labels] for p in preds])
    assert np.allclose(probs, expected, atol=1e-4), np.abs(probs - expected).max()
    assert np.abs(untrained - expected).max() > 0.02  # the comparison above can tell the two apart


def test_prompt_tuning_is_exported_as_its_adapter_with_a_note(base_config, tmp_path, capsys):
    assert cli("train", *base_config, "method=prompt-tuning", "num_virtual_tokens=4", "run_name=r", capsys=capsys) == 0
    assert cli("export", tmp_path / "runs" / "r", "--merge", capsys=capsys) == 0
    folder = tmp_path / "runs" / "r-merged"
    assert (folder / "adapter_config.json").is_file() and not json.loads((folder / "peftlab.json").read_text())[
        "merged"
    ]
    assert "cannot be merged" in capsys.readouterr().out


def test_export_and_eval_errors_are_clear(base_config, tiny_llama, tmp_path, capsys):
    run_dir = tmp_path / "runs" / "r"
    assert cli("export", tmp_path, "--merge") == 2  # not a run folder
    assert cli("train", *base_config, "method=lora", "lora_rank=4", "run_name=r", capsys=capsys) == 0
    assert cli("export", run_dir) == 2  # nothing asked for
    assert "--merge, --adapter-only" in capsys.readouterr().err
    assert cli("export", run_dir, "--merge", "--adapter-only", "--out", tmp_path / "o") == 2
    assert "--out names one folder" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert cli("eval", run_dir, "eval_batch_size=0", "--out", tmp_path / "x") == 2
    assert "eval_batch_size" in capsys.readouterr().err and not (tmp_path / "x").exists()
    # an adapter trained on the tiny BERT, evaluated on the tiny llama
    assert cli("eval", run_dir, f"model={tiny_llama}", "pooling=auto") == 2
    assert "the adapter does not fit model" in capsys.readouterr().err
    import shutil

    assert cli("eval", run_dir, "--out", tmp_path / "e", capsys=capsys) == 0
    assert cli("eval", tmp_path / "e") == 2 and "holds scores, not weights" in capsys.readouterr().err
    result = json.loads((run_dir / "result.json").read_text())
    (run_dir / "result.json").write_text(json.dumps({**result, "status": "interrupted"}))
    assert cli("eval", run_dir) == 2 and "the run is interrupted" in capsys.readouterr().err
    (run_dir / "result.json").write_text(json.dumps(result))
    shutil.rmtree(run_dir / "adapter")
    assert cli("eval", run_dir) == 2
    assert "saved no weights" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "r-eval").exists()


# ---------------------------------------------------------------- predict -> grade, every task


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(l + "\n" for l in lines))
    return path


def strip_gold_tsv(src: str, dst: Path) -> Path:
    return write_lines(dst, [l.split("\t")[0] for l in Path(src).read_text().splitlines()])


def task_data(task: str, tmp_path: Path, sentiment: dict, tiny_bert: str, tiny_llama: str):
    """(train overrides, predict input, gold answers in input order) for one task."""
    rng = random.Random(3)
    if task in ("classification", "likelihood", "generate"):
        golds = [l.split("\t")[1] for l in Path(sentiment["dev"]).read_text().splitlines()[1:]]
        extra = {
            "classification": [f"model={tiny_bert}"],
            "likelihood": [f"model={tiny_llama}", "classify_by=likelihood", "label_words=[bad,good]"],
            "generate": [
                f"model={tiny_llama}",
                "classify_by=generate",
                "label_words=[bad,good]",
                "max_new_tokens=3",
                "max_length=48",
            ],
        }[task]
        return extra, strip_gold_tsv(sentiment["dev"], tmp_path / "in.tsv"), golds
    if task == "ner":
        from test_ner import tagged

        rows = [tagged(rng) for _ in range(60)]
        conll = lambda part: "\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(*s)) for s in part) + "\n"  # noqa: E731
        (tmp_path / "tr.conll").write_text(conll(rows[:40]))
        (tmp_path / "dv.conll").write_text(conll(rows[40:]))
        write_lines(tmp_path / "in.jsonl", [json.dumps({"tokens": w}) for w, _ in rows[40:]])
        return (
            [
                "task=ner",
                f"model={tiny_bert}",
                f"train_file={tmp_path / 'tr.conll'}",
                f"validation_file={tmp_path / 'dv.conll'}",
            ],
            tmp_path / "in.jsonl",
            [" ".join(t) for _, t in rows[40:]],
        )
    if task == "qa":
        from test_qa import qa_rows

        train, dev = qa_rows(rng, 40, "tr"), qa_rows(rng, 16, "dv")
        write_lines(tmp_path / "tr.jsonl", [json.dumps(r) for r in train])
        write_lines(tmp_path / "dv.jsonl", [json.dumps(r) for r in dev])
        write_lines(tmp_path / "in.jsonl", [json.dumps({k: r[k] for k in ("id", "context", "question")}) for r in dev])
        return (
            [
                "task=qa",
                f"model={tiny_bert}",
                f"train_file={tmp_path / 'tr.jsonl'}",
                f"validation_file={tmp_path / 'dv.jsonl'}",
                "split_by=",
            ],
            tmp_path / "in.jsonl",
            [(r["answers"]["text"] or [""])[0] for r in dev],
        )
    if task == "multiple_choice":
        from test_multiple_choice import polarity_questions

        train, dev = polarity_questions(tmp_path / "t.jsonl", 40, 0), polarity_questions(tmp_path / "d.jsonl", 16, 1)
        rows = read_rows(dev)
        write_lines(
            tmp_path / "in.jsonl", [json.dumps({"question": r["question"], "choices": r["choices"]}) for r in rows]
        )
        return (
            ["task=multiple_choice", f"model={tiny_llama}", f"train_file={train}", f"validation_file={dev}", "map_k=2"],
            tmp_path / "in.jsonl",
            ["ABC"[r["answer"]] for r in rows],
        )
    rows = [
        {"instruction": " ".join(rng.sample(FILL, 3) + [w]), "input": "", "output": f"{w} ."}
        for w in (rng.choice(POS + NEG) for _ in range(40))
    ]
    (tmp_path / "tr.json").write_text(json.dumps(rows[:30]))
    (tmp_path / "dv.json").write_text(json.dumps(rows[30:]))
    (tmp_path / "in.json").write_text(json.dumps([{"instruction": r["instruction"]} for r in rows[30:]]))
    return (
        [
            "task=sft",
            f"model={tiny_llama}",
            f"train_file={tmp_path / 'tr.json'}",
            f"validation_file={tmp_path / 'dv.json'}",
            "max_new_tokens=4",
            "max_length=32",
        ],
        tmp_path / "in.json",
        [r["output"] for r in rows[30:]],
    )


TASK_OF = {
    "classification": "classification",
    "likelihood": "classification",
    "generate": "classification",
    "ner": "ner",
    "qa": "qa",
    "multiple_choice": "multiple_choice",
    "sft": "sft",
}


@pytest.mark.parametrize("task", list(TASK_OF))
def test_predict_then_grade_round_trip(task, sentiment, tiny_bert, tiny_llama, tmp_path, capsys):
    extra, input_path, golds = task_data(task, tmp_path, sentiment, tiny_bert, tiny_llama)
    base = (
        [f"train_file={sentiment['train']}", f"validation_file={sentiment['dev']}"]
        if TASK_OF[task] == "classification"
        else []
    )
    assert (
        cli(
            "train",
            *base,
            *extra,
            f"output_dir={tmp_path / 'runs'}",
            "epochs=1",
            "batch_size=8",
            "lr=5e-3",
            "lora_rank=4",
            "run_name=r",
            *([] if "max_length=" in " ".join(extra) else ["max_length=32"]),
            capsys=capsys,
        )
        == 0
    )
    run_dir = tmp_path / "runs" / "r"
    rows = read_rows(run_dir / "predictions_validation.jsonl")
    if task == "qa":  # new input gets the run's one threshold; the run's own validation rows were cross-fitted
        threshold = result_of(run_dir)["metrics_best"]["null_threshold"]
        rows = [
            {
                **r,
                "prediction": ""
                if r["null_score_diff"] is not None and r["null_score_diff"] > threshold
                else r["best_span"],
            }
            for r in rows
        ]
    expected = [line_of(TASK_OF[task], r) for r in rows]
    if task == "qa":  # predictions_*.jsonl rounds null_score_diff to 4 decimals, and the threshold is one
        # row's own diff: for a row that close to it the file cannot tell which side predict falls on
        near = [r["null_score_diff"] is not None and abs(r["null_score_diff"] - threshold) <= 5e-5 for r in rows]
    answers = write_lines(tmp_path / "answers.txt", golds)
    capsys.readouterr()
    assert (
        cli(
            "predict",
            run_dir,
            input_path,
            "--name",
            "dev",
            "--out",
            tmp_path / "out",
            "--answers",
            answers,
            capsys=capsys,
        )
        == 0
    )
    out = capsys.readouterr().out
    lines = (tmp_path / "out" / "result_dev.txt").read_text().splitlines()
    if task == "qa":
        spans = [line_of(TASK_OF[task], {**r, "prediction": r["best_span"]}) for r in rows]
        expected = [got if n and got in ("", span) else e for got, e, n, span in zip(lines, expected, near, spans)]
    assert lines == expected  # batched, sorted by length, restored to input order: the run's own predictions
    jsonl = read_rows(tmp_path / "out" / "predictions_dev.jsonl")
    assert [r["prediction"] for r in jsonl] == lines and jsonl[0]["row"] < jsonl[-1]["row"]
    accuracy = sum(p == g for p, g in zip(lines, golds)) / len(golds)
    assert f"accuracy {accuracy:.4f}" in out
    # the first N rows only, and an answer file of the wrong length
    assert cli("predict", run_dir, input_path, "--limit", 5, "--name", "five", "--out", tmp_path / "out") == 0
    assert (tmp_path / "out" / "result_five.txt").read_text().splitlines() == expected[:5]
    assert (
        cli(
            "predict",
            run_dir,
            input_path,
            "--limit",
            5,
            "--name",
            "bad",
            "--out",
            tmp_path / "out",
            "--answers",
            answers,
        )
        == 2
    )
    assert "lines for 5 predicted rows" in capsys.readouterr().err
    assert not (tmp_path / "out" / "result_bad.txt").exists()


# ---------------------------------------------------------------- one report


def test_report_puts_baselines_runs_and_exports_in_one_table(tiny_llama, sentiment, tmp_path, capsys):
    runs = tmp_path / "runs"
    common = [
        "classify_by=likelihood",
        f"model={tiny_llama}",
        f"train_file={sentiment['train']}",
        f"validation_file={sentiment['dev']}",
        "label_words=[bad,good]",
        "max_length=96",
        f"output_dir={runs}",
    ]
    assert cli("eval", *common, "--out", runs / "zero-shot", capsys=capsys) == 0
    assert cli("eval", *common, "shots=2", "--out", runs / "2-shot", capsys=capsys) == 0
    assert cli("train", *common, "epochs=1", "lr=5e-3", "lora_rank=4", "run_name=lora", capsys=capsys) == 0
    assert cli("export", runs / "lora", "--merge", capsys=capsys) == 0
    assert cli("eval", runs / "lora-merged", capsys=capsys) == 0
    capsys.readouterr()
    assert cli("report", runs) == 0
    md = capsys.readouterr().out
    table = md.split("## Zero-shot, few-shot, tuned, merged and quantized")[1]
    for row in ("| zero-shot |", "| 2-shot |", "| lora |", "| lora-merged-eval |"):
        assert row in table
    zero = result_of(runs / "zero-shot")["metrics_best"]["accuracy"]
    assert f"| zero-shot | base {tiny_llama}, transformers | validation | 32 | {zero:.3f} |" in table
    report = json.loads((runs / "report" / "report.json").read_text())
    assert [g["group"] for g in report["groups"]] == ["lora"]  # evaluations stay out of the training tables


def test_a_sweep_lists_evaluations_beside_training_variants(tiny_llama, sentiment, tmp_path, capsys):
    import yaml

    sweep = {
        "name": "loop",
        "output_dir": str(tmp_path / "sweeps"),
        "config": {
            "model": tiny_llama,
            "train_file": sentiment["train"],
            "validation_file": sentiment["dev"],
            "classify_by": "likelihood",
            "label_words": ["bad", "good"],
            "max_length": 96,
            "epochs": 1,
            "lr": 5.0e-3,
            "lora_rank": 4,
        },
        "variants": [
            {"name": "zero-shot", "kind": "eval"},
            {"name": "2-shot", "kind": "eval", "shots": 2},
            {"name": "lora", "method": "lora"},
            {"name": "lora-adapter", "of": "lora"},
            {"name": "lora-merged", "of": "lora", "export": "merged"},
        ],
    }
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(sweep))
    assert cli("sweep", path, capsys=capsys) == 0
    folder = tmp_path / "sweeps" / "loop"
    md = (folder / "report" / "report.md").read_text()
    table = md.split("## Zero-shot, few-shot, tuned, merged and quantized")[1]
    for row in ("zero-shot", "2-shot", "lora", "lora-adapter", "lora-merged"):
        assert f"| {row} |" in table
    assert result_of(folder / "2-shot")["shots"] == 2
    assert result_of(folder / "lora-merged")["source"]["folder"] == str(folder / "exports" / "lora-merged")
    trained = result_of(folder / "lora")["metrics_best"]["accuracy"]
    assert result_of(folder / "lora-adapter")["metrics_best"]["accuracy"] == pytest.approx(trained)
    assert result_of(folder / "lora-merged")["metrics_best"]["accuracy"] == pytest.approx(trained)
    capsys.readouterr()
    assert cli("sweep", path) == 0 and "5 already done" in capsys.readouterr().out
    # the trained run changes: refused, and with --rerun-changed its evaluations are made again after it
    before = (
        result_of(folder / "lora-adapter")["finished_at"],
        (folder / "lora-adapter" / "result.json").stat().st_mtime,
    )
    sweep["variants"][2]["lr"] = 1.0e-3
    path.write_text(yaml.safe_dump(sweep))
    assert cli("sweep", path) == 2 and "train.lr: 0.005 -> 0.001" in capsys.readouterr().err
    assert cli("sweep", path, "--rerun-changed", capsys=capsys) == 0
    assert "2 already done or kept, 3 to run" in capsys.readouterr().out  # lora and its 2 evaluations rerun
    assert (folder / "lora-adapter" / "result.json").stat().st_mtime > before[1]
    assert result_of(folder / "lora-adapter")["metrics_best"]["loss"] == pytest.approx(
        result_of(folder / "lora")["metrics_best"]["loss"]
    )
    sweep["variants"].append({"name": "bad", "of": "nope"})
    path.write_text(yaml.safe_dump(sweep))
    assert cli("sweep", path, "--dry-run") == 2
    assert "of: 'nope' names no training variant listed before it (trained: lora)" in capsys.readouterr().err


def test_predict_with_an_untrained_model_takes_the_labels_from_train_file(tiny_llama, sentiment, tmp_path, capsys):
    rows = strip_gold_tsv(sentiment["dev"], tmp_path / "in.tsv")
    args = [
        f"model={tiny_llama}",
        rows,
        f"train_file={sentiment['train']}",
        "classify_by=likelihood",
        "label_words=[bad,good]",
        "max_length=32",
        "--limit",
        8,
        "--name",
        "base",
        "--out",
        tmp_path,
    ]
    assert cli("predict", *args, capsys=capsys) == 0
    lines = (tmp_path / "result_base.txt").read_text().splitlines()
    assert len(lines) == 8 and set(lines) <= {"neg", "pos"}
    assert cli("predict", f"model={tiny_llama}", rows, "classify_by=likelihood", "--out", tmp_path) == 2
    assert "needs the label set" in capsys.readouterr().err


def test_eval_export_never_reuses_the_export_of_older_weights(base_config, tmp_path, capsys):
    run_dir = tmp_path / "runs" / "r"
    merged = tmp_path / "runs" / "exports" / "r-merged"
    assert cli("train", *base_config, "method=lora", "lora_rank=4", "run_name=r", capsys=capsys) == 0
    assert cli("eval", run_dir, "--export", "merged", capsys=capsys) == 0
    first = json.loads((merged / "peftlab.json").read_text())["run_finished_at"]
    assert cli("eval", run_dir, "--export", "merged", "--overwrite", capsys=capsys) == 0  # same weights: reused
    assert json.loads((merged / "peftlab.json").read_text())["run_finished_at"] == first
    result = json.loads((run_dir / "result.json").read_text())
    result["finished_at"] = "2099-01-01T00:00:00+00:00"  # the run trained again
    (run_dir / "result.json").write_text(json.dumps(result))
    assert cli("eval", run_dir, "--export", "merged", "--overwrite", capsys=capsys) == 0
    assert json.loads((merged / "peftlab.json").read_text())["run_finished_at"] == "2099-01-01T00:00:00+00:00"


@pytest.mark.parametrize("method", ["head", "freeze"])
def test_head_and_whole_model_weights_reload_outside_peftlab_with_their_pooling(method, base_config, tmp_path, capsys):
    """head/ holds only the trained head (not a second copy of the model), model/ the whole model; each
    folder's README says how to load it with plain transformers, and doing what it says (mean pooling
    included) gives the run's own probabilities."""
    import numpy as np
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from peftlab.models.loading import apply_pooling

    assert (
        cli(
            "train",
            *base_config,
            f"method={method}",
            "pooling=mean",
            "freeze_layers=1",
            "epochs=2",
            "run_name=r",
            capsys=capsys,
        )
        == 0
    )
    run_dir = tmp_path / "runs" / "r"
    result = result_of(run_dir)
    folder = run_dir / ("head" if method == "head" else "model")
    note = json.loads((folder / "peftlab_weights.json").read_text())
    readme = (folder / "README.md").read_text()
    assert note["pooling"] == "mean" and "apply_pooling(model, 'mean')" in readme
    assert result["adapter_dir"] == folder.name
    if method == "head":
        head = load_file(folder / "head.safetensors")
        assert set(head) == {"classifier.weight", "classifier.bias"} == set(note["tensors"])
        assert sum(t.numel() for t in head.values()) == result["trainable_params"] == 32 * 2 + 2
        assert not (folder / "model.safetensors").exists() and f"from_pretrained({note['base_model']!r}" in readme
        model = AutoModelForSequenceClassification.from_pretrained(note["base_model"], num_labels=2)
        assert model.load_state_dict(head, strict=False).unexpected_keys == []
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder)
    model.eval()
    apply_pooling(model, note["pooling"])
    tok = AutoTokenizer.from_pretrained(folder)
    preds = read_rows(run_dir / "predictions_validation.jsonl")
    batch = tok([p["text"] for p in preds], padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**batch).logits, -1).numpy()
    expected = np.array([[p["probabilities"]["neg"], p["probabilities"]["pos"]] for p in preds])
    assert np.allclose(probs, expected, atol=1e-4)
