"""Issue 24, items 6-8: labels are what the user meant, settings the model cannot honour are refused
before anything is written, and every table's figures are the ones their settings produced."""

import json
import math
import re

import pytest

from peftlab.cli import main
from peftlab.config.settings import load_config
from peftlab.data.splits import load_splits
from peftlab.errors import UserError
from peftlab.tasks.registry import get_task


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def one_error(capsys) -> str:
    """The one `peftlab: error:` line of a refused command (and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.startswith("peftlab: error:")]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------- 6. labels are what the user meant

TRAIN_ROWS = [
    (f"the {w} movie .", "pos" if w in ("good", "great", "fine") else "neg") for w in ("good", "bad", "great")
]


def tsv(rows) -> str:
    return "sentence\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in rows)


def prepared(tmp_path, train: str, *more, name: str = "train.tsv"):
    """The classification task's prepare() on `train` (and a valid dev file), as `peftlab train` runs it."""
    dev = write(tmp_path / "dev.tsv", tsv([("the good film .", "pos"), ("the bad film .", "neg")]))
    cfg = load_config(None, [f"train_file={write(tmp_path / name, train)}", f"validation_file={dev}", *more])
    splits = load_splits(cfg.data, cfg.train.seed)
    return get_task("classification", "head").prepare(splits, cfg), splits


@pytest.mark.parametrize("marker", ["NaN", "nan", "NA", "N/A", "null", "None"])
def test_a_missing_value_marker_is_not_a_third_class(marker, tmp_path):
    """What pandas writes for a missing label (NaN) used to become a class of its own: `labels: neg, pos, NaN`."""
    rows = TRAIN_ROWS + [("the plot film .", marker)]
    with pytest.raises(UserError, match=rf"train.tsv: row 5: label '{re.escape(marker)}' marks a missing value"):
        prepared(tmp_path, tsv(rows))


def test_on_bad_lines_skip_leaves_unlabelled_rows_out_and_counts_them(tmp_path):
    rows = TRAIN_ROWS + [("the plot film .", "NaN"), ("the fine film .", "pos"), ("the sad film .", "")]
    done, splits = prepared(tmp_path, tsv(rows), "on_bad_lines=skip")
    assert done.labels == ["neg", "pos"]
    assert [label for _, _, label in done.examples["train"]] == [1, 0, 1, 1]
    assert [(s["line"], s["reason"]) for s in splits["train"].skipped] == [
        (5, "missing label 'NaN'"),
        (7, "missing label ''"),
    ]
    assert [r["label"] for r in splits["train"].records] == ["pos", "neg", "pos", "pos"]  # the split says so too


def test_json_nan_and_null_labels_are_missing_too(tmp_path):
    """JSON's NaN (json.loads reads it as a float) and null: refused, or skipped and counted."""
    rows = [{"sentence": t, "label": l} for t, l in TRAIN_ROWS]
    text = "\n".join(json.dumps(r) for r in rows) + '\n{"sentence": "the plot film .", "label": NaN}\n'
    with pytest.raises(UserError, match=r"t.jsonl: row 4: label nan marks a missing value"):
        prepared(tmp_path, text, name="t.jsonl")
    done, splits = prepared(tmp_path, text + '{"sentence": "x", "label": null}\n', "on_bad_lines=skip", name="t.jsonl")
    assert done.labels == ["neg", "pos"] and len(splits["train"].skipped) == 2
    assert math.isnan(json.loads(text.splitlines()[-1])["label"])


def test_a_marker_named_in_label_names_is_a_label(tmp_path):
    rows = TRAIN_ROWS + [("the plot film .", "none")]
    done, _ = prepared(tmp_path, tsv(rows), "label_names=[neg,pos,none]")
    assert done.labels == ["neg", "pos", "none"] and done.examples["train"][-1][2] == 2


def test_numbers_mixed_with_names_in_a_csv_label_column_are_refused(tmp_path):
    """In JSON 1 and "neg" were refused as two label sets; a CSV's "1" is text, and slipped through."""
    rows = TRAIN_ROWS + [("the plot film .", "1")]
    with pytest.raises(UserError, match=r"train.tsv: column 'label' mixes kinds of labels: row 2 has 'pos', row 5"):
        prepared(tmp_path, tsv(rows))
    # numbers alone are one label set, names alone another
    numbers = write(tmp_path / "n.tsv", tsv([("a good one", "1"), ("a bad one", "-1")]))
    cfg = load_config(None, [f"train_file={numbers}", f"validation_file={numbers}"])
    assert get_task("classification", "head").prepare(load_splits(cfg.data, 0), cfg).labels == ["-1", "1"]


def test_a_nan_label_through_the_cli_is_one_line_and_no_run_folder(base_config, sentiment, tmp_path, capsys):
    train = write(tmp_path / "train.csv", "sentence,label\n" + "the good movie .,pos\nthe bad movie .,neg\n" * 4 + "x,")
    args = [a for a in base_config if not a.startswith("train_file=")] + [f"train_file={train}", "run_name=r"]
    assert main(["train", *args]) == 2
    assert re.search(r"train.csv: row 10: empty text or label; .*on_bad_lines: skip", one_error(capsys))
    assert not (tmp_path / "runs").exists()
    (tmp_path / "train.csv").write_text(
        "sentence,label\n" + "the good movie .,pos\nthe bad movie .,neg\n" * 4 + "the plot .,NaN\n"
    )
    assert main(["data", "check", *args]) == 2
    assert "row 10: label 'NaN' marks a missing value" in one_error(capsys)
    assert main(["data", "check", *args, "on_bad_lines=skip"]) == 0
    out = capsys.readouterr().out
    assert "labels train: neg 4 (50.0%), pos 4 (50.0%)" in out and "skipped 1 bad row" in out
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- 7. settings the model cannot honour


def long_train(tmp_path, words: int) -> str:
    """The fixture's sentiment rows and one row of `words` words (the tiny BERT has 128 positions)."""
    rows = TRAIN_ROWS * 4 + [(" ".join(["the movie was good"] * (words // 4)), "pos")]
    return write(tmp_path / "long.tsv", tsv(rows))


def test_max_length_beyond_the_models_positions_is_refused_before_anything_is_written(base_config, tmp_path, capsys):
    """max_length 100000 on a 128-position model trained until its first long row and died there,
    mid-run, with a traceback and a run folder left behind."""
    args = [a for a in base_config if not a.startswith(("train_file=", "max_length="))]
    args += [f"train_file={long_train(tmp_path, 200)}", "run_name=r", "eval_at_start=false"]
    assert main(["train", *args, "max_length=100000"]) == 2
    line = one_error(capsys)
    assert re.search(r"max_length: 100000 tokens is more than model '.*' can take in one sequence \(128: ", line)
    assert "set max_length: 128 or less" in line and not (tmp_path / "runs").exists()
    # prompt tuning's virtual tokens take positions before the text too
    assert main(["train", *args, "max_length=120", "method=prompt-tuning", "num_virtual_tokens=20"]) == 2
    assert "max_length: 120 + num_virtual_tokens 20 tokens" in (line := one_error(capsys))
    assert "set max_length: 108 or less" in line and not (tmp_path / "runs").exists()
    # at the limit it trains, the long row truncated
    assert main(["train", *args, "max_length=128"]) == 0, capsys.readouterr().err


def test_position_limit_counts_a_padding_offset():
    """RoBERTa's position table starts after its padding index: 34 rows hold 32 tokens; Llama has no table."""
    from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

    from peftlab.models.loading import position_limit

    size = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    roberta = RobertaForSequenceClassification(RobertaConfig(max_position_embeddings=34, pad_token_id=1, **size))
    assert position_limit(roberta)[0] == 32
    assert position_limit(BertForSequenceClassification(BertConfig(max_position_embeddings=34, **size)))[0] == 34
    # rotary positions run past the config's count without an error: no limit to refuse by
    from transformers import LlamaConfig, LlamaForCausalLM

    assert (
        position_limit(LlamaForCausalLM(LlamaConfig(max_position_embeddings=34, num_key_value_heads=1, **size))) is None
    )


@pytest.fixture
def trained_run(base_config, tmp_path, capsys):
    assert main(["train", *base_config, "method=lora", "lora_rank=4", "run_name=r", "eval_at_start=false"]) == 0
    capsys.readouterr()
    return tmp_path / "runs" / "r"


def test_predict_checks_the_answer_file_and_out_before_predicting(trained_run, sentiment, tmp_path, capsys):
    rows = [l.split("\t") for l in open(sentiment["dev"]).read().splitlines()[1:]]
    given = write(tmp_path / "in.tsv", "sentence\n" + "".join(t + "\n" for t, _ in rows))
    golds = [l for _, l in rows]
    out = tmp_path / "out"
    # a label the model does not have: refused with its line, before anything is predicted or written
    bad = write(tmp_path / "bad.txt", "".join(g + "\n" for g in golds[:3] + ["maybe"] + golds[4:]))
    assert main(["predict", str(trained_run), given, "--out", str(out), "--answers", bad]) == 2
    assert re.search(
        r"--answers .*bad.txt: 1 answers are not among the model's labels .*line 4: 'maybe'", one_error(capsys)
    )
    assert not out.exists()
    # --out naming a file (or a folder inside one): refused up front, the file untouched
    (tmp_path / "a.txt").write_text("mine")
    for where in (tmp_path / "a.txt", tmp_path / "a.txt" / "sub"):
        assert main(["predict", str(trained_run), given, "--out", str(where)]) == 2
        assert "a.txt is a file, not a folder" in one_error(capsys)
    assert (tmp_path / "a.txt").read_text() == "mine"
    # --name makes file names in --out: a separator would write elsewhere
    for name in ("../x", "a/b", "a\\b"):
        assert main(["predict", str(trained_run), given, "--out", str(out), "--name", name]) == 2
        assert "--name: " in one_error(capsys)
    assert not out.exists() and not (tmp_path / "x.txt").exists()
    # the good answer file grades
    good = write(tmp_path / "good.txt", "".join(g + "\n" for g in golds))
    assert main(["predict", str(trained_run), given, "--out", str(out), "--answers", good]) == 0
    assert "graded against 32 answers" in capsys.readouterr().out


def test_eval_out_never_replaces_a_file_or_a_foreign_folder(trained_run, tmp_path, capsys):
    (tmp_path / "a.txt").write_text("mine")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("keep")
    for where in ("a.txt", "mine"):
        for more in ([], ["--overwrite"]):
            assert main(["eval", str(trained_run), "--out", str(tmp_path / where), *more]) == 2
            one_error(capsys)
    assert (tmp_path / "a.txt").read_text() == "mine" and (tmp_path / "mine" / "notes.md").read_text() == "keep"
    # an evaluation folder is replaced with --overwrite, as before
    assert main(["eval", str(trained_run), "--out", str(tmp_path / "e")]) == 0
    assert main(["eval", str(trained_run), "--out", str(tmp_path / "e"), "--overwrite"]) == 0


# ---------------------------------------------------------------- 8. honest figures in every table


@pytest.fixture
def squad2(tmp_path):
    """SQuAD 2.0-style train / dev / test files (a quarter of the questions have no answer)."""
    import random

    from test_qa import qa_rows

    rng = random.Random(0)
    files = {}
    for name, n in (("train", 48), ("dev", 16), ("test", 16)):
        files[name] = write(tmp_path / f"{name}.jsonl", "\n".join(json.dumps(r) for r in qa_rows(rng, n, name)) + "\n")
    return files


QA_RUN = ["task=qa", "epochs=2", "batch_size=8", "lr=1e-2", "max_length=14", "doc_stride=3", "split_by="]


def test_eval_of_the_test_split_uses_the_validation_threshold(squad2, tiny_bert, tmp_path, capsys):
    """`eval RUN --split test` re-tuned SQuAD 2.0's no-answer threshold on the test split's own answers."""
    data = [f"train_file={squad2['train']}", f"validation_file={squad2['dev']}", f"test_file={squad2['test']}"]
    base = [f"model={tiny_bert}", *QA_RUN, *data]
    assert main(["train", *base, "method=lora", f"output_dir={tmp_path / 'runs'}", "run_name=qa"]) == 0
    run = json.loads((tmp_path / "runs" / "qa" / "result.json").read_text())
    assert main(["eval", str(tmp_path / "runs" / "qa"), "--split", "test", "--out", str(tmp_path / "e")]) == 0
    scored = json.loads((tmp_path / "e" / "result.json").read_text())
    assert scored["metrics_best"]["null_threshold"] == run["metrics_best"]["null_threshold"]
    assert "f1_tuned_in_sample" not in scored["metrics_best"]  # nothing was tuned on the scored rows
    for key in ("f1", "exact_match", "HasAns_f1", "NoAns_f1"):  # what the run's own test evaluation scored
        assert scored["metrics_best"][key] == pytest.approx(run["metrics_test"][key], abs=1e-9), key
    # an untrained model: the threshold its validation split gives, scored first
    capsys.readouterr()
    assert main(["eval", *base, "--out", str(tmp_path / "bv")]) == 0
    assert main(["eval", *base, "--split", "test", "--out", str(tmp_path / "bt")]) == 0
    assert "tuning the no-answer threshold on the validation split first" in capsys.readouterr().out
    val, test = (json.loads((tmp_path / f / "result.json").read_text())["metrics_best"] for f in ("bv", "bt"))
    assert test["null_threshold"] == val["null_threshold"] and "f1_tuned_in_sample" not in test
    # with no validation data but rows cut from the scored file itself: refused
    alone = [f"model={tiny_bert}", *QA_RUN, f"test_file={squad2['test']}"]
    assert main(["eval", *alone, "--split", "test", "--out", str(tmp_path / "x")]) == 2
    assert "threshold tuned on validation" in one_error(capsys) and not (tmp_path / "x").exists()


def set_result(run, **changes):
    path = run / "result.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_variants_choosing_by_different_metrics_get_their_own_tables(tmp_path):
    """One "best epoch chosen by accuracy" header stood over a variant that chose its epoch by f1."""
    from test_sweep import fake_sweep

    from peftlab.report.tables import compare, summarize
    from peftlab.report.write import write_report

    fake_sweep(
        tmp_path,
        {
            "full": [(0.5, 0.90, 1000, 2000, 80)],
            "lora": [(0.5, 0.88, 10, 1500, 70)],
            "lora-f1": [(0.5, 0.95, 10, 1500, 70)],
        },
    )
    set_result(tmp_path / "lora-f1-s1", metric_for_best="f1")
    s = summarize(tmp_path)
    assert [(sec["metric"], sec["best"], [g["group"] for g in sec["groups"]]) for sec in s["sections"]] == [
        ("accuracy", "full", ["full", "lora"]),
        ("f1", "lora-f1", ["lora-f1"]),
    ]
    md = write_report(tmp_path)[0]
    accuracy, f1 = md.split("## Best epoch chosen by accuracy")[1].split("## Best epoch chosen by f1")
    assert "best epoch chosen by **accuracy**" in accuracy and "| lora-f1 |" not in accuracy
    assert "best epoch chosen by **f1**" in f1 and "| full |" not in f1 and "| lora-f1 |" in f1
    assert "chose their best epoch by different metrics: **accuracy** (full, lora); **f1** (lora-f1)" in md
    report = tmp_path / "report"
    assert (report / "report.csv").read_text().splitlines()[1].startswith("accuracy,full,")
    assert (report / "pareto-f1.png").is_file() and "Best epoch chosen by f1" in (report / "report.html").read_text()
    with pytest.raises(UserError, match="pick their best epoch by different metrics"):
        compare(tmp_path, tmp_path)


def test_every_memory_figure_says_what_it_measured(tmp_path, monkeypatch):
    """A column headed "peak RSS" held CUDA figures too, and a llama.cpp row on a GPU machine showed torch's
    allocations (which llama.cpp never makes): each row now names its kind, llama.cpp rows are RSS."""
    from types import SimpleNamespace

    import torch
    from test_sweep import fake_sweep

    from peftlab.inference.evaluation import eval_result
    from peftlab.inference.session import Scored, Source
    from peftlab.report.tables import summarize, table_rows

    fake_sweep(tmp_path, {"gpu": [(0.5, 0.9, 10, 3000, 60)], "cpu": [(0.5, 0.8, 10, 1024, 90)]})
    set_result(tmp_path / "gpu-s1", peak_memory_kind="cuda_max_allocated")
    header, rows = table_rows(summarize(tmp_path), "metrics_best")
    assert header[3] == "peak memory" and [r[3] for r in rows] == ["2.93 GiB GPU", "1.00 GiB RSS"]
    # the after-training table: every row its kind
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "result.json").write_text(
        json.dumps(
            {
                "kind": "eval",
                "status": "completed",
                "task": "classification",
                "method": "q8_0 (llamacpp)",
                "metric_for_best": "accuracy",
                "trainable_params": 0,
                "trainable_pct": 0.0,
                "total_params": None,
                "metrics_best": {"accuracy": 0.8},
                "peak_memory_mb": 512.0,
                "peak_memory_kind": "process_peak_rss",
                "source": {"kind": "export", "backend": "llamacpp"},
            }
        )
    )
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    sweep["runs"].append({"name": "ev", "group": "ev", "status": "completed"})
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    ev = summarize(tmp_path)["evaluations"]
    memory = ev["header"].index("peak memory")
    assert [r[memory] for r in ev["rows"]] == ["2.93 GiB GPU", "1.00 GiB RSS", "0.50 GiB RSS"]
    # a llama.cpp evaluation on a machine with a GPU is measured by the process's RSS
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 7 * 2**20)
    gguf = tmp_path / "model-q8_0.gguf"
    gguf.write_bytes(b"GGUF")
    cfg = load_config(None, [f"model={gguf}"])
    session = SimpleNamespace(
        cfg=cfg,
        source=Source("config"),
        backend="llamacpp",
        encoded={"validation": [1, 2]},
        prepared=None,
        model=None,
        shots=[],
    )
    result = eval_result(
        session, "validation", Scored({"accuracy": 1.0}, None, 1.0, 10), tmp_path / "e", 0.0, "accuracy"
    )
    assert result["peak_memory_kind"] == "process_peak_rss" and result["peak_memory_mb"] > 7


def evaluation(recorder, epoch: int, step: int, accuracy: float) -> None:
    """One epoch's evaluation as the Trainer reports it to the Recorder."""
    from types import SimpleNamespace

    state = SimpleNamespace(epoch=float(epoch), global_step=step, log_history=[])
    recorder.epoch_wall_s = 1.0  # on_epoch_end's
    metrics = {"eval_loss": 1 - accuracy, "eval_accuracy": accuracy, "eval_runtime": 0.1}
    recorder.on_evaluate(None, state, SimpleNamespace(should_training_stop=False), metrics=metrics, model="weights")


def test_after_a_resume_metrics_best_is_the_evaluation_the_saved_weights_scored(tmp_path):
    """Killed after epoch 3's evaluation saved the best weights but before the checkpoint after it: the resume
    forgot that evaluation, so metrics_best became epoch 1's, the weights stayed epoch 3's, and a redone epoch
    3 scoring a hair lower (GPU kernels, data order) never replaced them."""
    from peftlab.training.callbacks import Recorder

    lines = [(0, 0, 0.5), (1, 3, 0.7), (2, 6, 0.6), (3, 9, 0.8)]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        "".join(json.dumps({"epoch": e, "step": s, "accuracy": a, "train_time_s": 1.0}) + "\n" for e, s, a in lines)
    )
    checkpoint = tmp_path / "checkpoint-6"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 6}))
    on_disk = {"epoch": 3, "step": 9, "accuracy": 0.8, "train_time_s": 1.0}  # what the weights folder says it holds
    saves = []
    rec = Recorder(metrics, "accuracy", 0, True, lambda m, line: saves.append(line), checkpoint, saved=on_disk)
    evaluation(rec, 3, 9, 0.78)  # the redo scores lower: not better than the weights on disk
    summary = rec.summary()
    assert saves == [] and summary["metrics_best"] == on_disk and summary["best_epoch"] == 3
    assert summary["best_saved_before_resume"] is True
    evaluation(rec, 4, 12, 0.9)  # a better one replaces the weights, and is metrics_best
    assert [s["epoch"] for s in saves] == [4] and rec.summary()["metrics_best"]["accuracy"] == 0.9
    assert "best_saved_before_resume" not in rec.summary()


def test_the_weights_folder_names_the_evaluation_that_saved_it(base_config, tmp_path):
    assert main(["train", *base_config, "method=lora", "lora_rank=4", "epochs=2", "run_name=r"]) == 0
    run = tmp_path / "runs" / "r"
    result = json.loads((run / "result.json").read_text())
    assert json.loads((run / "adapter" / "peftlab_best_evaluation.json").read_text()) == result["metrics_best"]


def test_eval_with_on_bad_lines_skip_counts_the_unlabelled_rows(trained_run, sentiment, tmp_path, capsys):
    dev = write(tmp_path / "dev-nan.tsv", open(sentiment["dev"]).read() + "the plot film .\tNaN\n")
    assert main(["eval", str(trained_run), f"validation_file={dev}", "--out", str(tmp_path / "e0")]) == 2
    assert "row 34: label 'NaN' marks a missing value" in one_error(capsys)
    assert (
        main(["eval", str(trained_run), f"validation_file={dev}", "on_bad_lines=skip", "--out", str(tmp_path / "e")])
        == 0
    )
    result = json.loads((tmp_path / "e" / "result.json").read_text())
    assert result["n_evaluated"] == 32 and result["skipped_rows"]["count"] == 1
    assert result["skipped_rows"]["first"][0]["line"] == 34 and "skipped 1 bad row" in capsys.readouterr().err
