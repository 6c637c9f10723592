"""`peftlab init DATA`: what it detects in files it has never seen (odd column names, a pair TSV, JSONL
instructions, a CoNLL file, SQuAD JSON, multiple choice), the errors and warnings a user must see, the budget
arithmetic, the config and sweep it writes (loaded by the normal loaders), and that its sweep gives a report:
the users' own data in five minutes. The shipped example's sweep runs too."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import yaml
from conftest import sentence

from peftlab.cli import main
from peftlab.config.settings import load_config
from peftlab.data.detect import detect
from peftlab.errors import UserError
from peftlab.sweep.scaffold import Measure, parse_budget, size_sweep

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "financial-news"


def write_reviews(path: Path, n: int = 120, missing: int = 0) -> Path:
    """id, reviewer, review, stars: the label is `stars` (1 or 5, by the sentence's sentiment word)."""
    rng = random.Random(1)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "reviewer", "review", "stars"])
        for i in range(n):
            stars = "" if i < missing else ("5" if i % 2 else "1")
            w.writerow([1000 + i, f"user{i % 7}", sentence(rng, i % 2), stars])
    return path


def test_reviews_csv_with_odd_names(tmp_path):
    det = detect(write_reviews(tmp_path / "reviews.csv", missing=3))
    assert det.task == "classification"
    assert det.settings["text_column"] == "review" and det.settings["label_column"] == "stars"
    assert "text_pair_column" not in det.settings
    shown = "\n".join(det.decisions)
    assert "label column: stars (2 distinct values in 120 rows; name hint)" in shown
    assert "text column: review (the longest text" in shown
    # three rows have no label: left out and said so
    assert det.settings["on_bad_lines"] == "skip"
    assert any(w.startswith("3 rows have no label in 'stars'") for w in det.warnings)


def test_pair_tsv_label_by_cardinality(tmp_path):
    rng = random.Random(2)
    rows = ["premise\thypothesis\tverdict"]
    rows += [f"{sentence(rng, i % 2)}\t{sentence(rng, 1)} {i}\t{'same' if i % 2 else 'other'}" for i in range(60)]
    (tmp_path / "pairs.tsv").write_text("\n".join(rows) + "\n")
    det = detect(tmp_path / "pairs.tsv")
    assert (det.settings["text_column"], det.settings["text_pair_column"]) == ("premise", "hypothesis")
    assert det.settings["label_column"] == "verdict"
    assert "sentence-pair classification" in "\n".join(det.decisions)
    assert "data_format" not in det.settings  # a .tsv reads as tsv by default


def test_headerless_file_with_another_separator(tmp_path):
    rng = random.Random(3)
    lines = [
        f"{sentence(rng, i % 3 == 0)} and the rest of a long sentence@{['neg', 'pos', 'mid'][i % 3]}" for i in range(30)
    ]
    (tmp_path / "news.txt").write_text("\n".join(lines) + "\n")
    det = detect(tmp_path / "news.txt")
    assert det.settings["delimiter"] == "@" and det.settings["header"] == "false"
    assert (det.settings["text_column"], det.settings["label_column"]) == ("column0", "column1")
    assert det.settings["metric_for_best"] == "f1_macro"  # three classes


def test_other_tasks(tmp_path):
    sft = tmp_path / "chat.jsonl"
    sft.write_text("\n".join(json.dumps({"instruction": "say", "input": f"x{i}", "output": "good"}) for i in range(9)))
    assert detect(sft).task == "sft"
    conll = tmp_path / "ner.txt"  # a CoNLL file whose name does not say so
    conll.write_text("EU B-ORG\nrejects O\nGerman B-MISC\n\nPeter B-PER\nBlackburn I-PER\n\nBRUSSELS B-LOC\n")
    det = detect(conll)
    assert det.task == "ner" and det.settings["data_format"] == "conll" and det.rows == 3
    squad = tmp_path / "qa.json"
    qas = [{"id": "1", "question": "who?", "answers": [{"text": "Peter", "answer_start": 0}]}]
    squad.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "Peter ran.", "qas": qas}]}]}))
    assert detect(squad).task == "qa"
    mc = tmp_path / "exam.csv"
    mc.write_text("prompt,A,B,C,answer\nwhat?,a,b,c,B\nwhy?,d,e,f,A\n")
    det = detect(mc)
    assert det.task == "multiple_choice" and det.settings["option_columns"] == ["A", "B", "C"]
    assert det.sequences == 3  # the budget counts one sequence per option
    # --task overrides what was detected
    assert detect(mc, task="classification", text_column="prompt", label_column="answer").task == "classification"


def test_refusals_name_the_fix(tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("text,label\n" + "".join(f"a long enough sentence {i},pos\n" for i in range(10)))
    with pytest.raises(UserError, match="'label' has one value \\('pos'\\)"):
        detect(one)
    scores = tmp_path / "scores.csv"
    scores.write_text("text,score\n" + "".join(f"sentence number {i},{i * 0.37:.2f}\n" for i in range(80)))
    with pytest.raises(UserError, match="regression target"):
        detect(scores)
    with pytest.raises(UserError, match="--label-column nope: no such column"):
        detect(one, label_column="nope")
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("text,label\n" + "".join(f"sentence {i},{'a' if i < 40 else 'b'}\n" for i in range(42)))
    assert any("fewer than 5 rows: b (2)" in w for w in detect(tiny).warnings)


def test_budget_and_sizing():
    assert parse_budget("10m") == 600 and parse_budget("1h30m") == 5400 and parse_budget("90s") == 90
    assert parse_budget("45") == 45 * 60
    with pytest.raises(UserError, match="--budget soon"):
        parse_budget("soon")
    m = Measure(seconds_per_example=0.01, load_seconds=1.0, tokens=32, parameters=1)
    costs = [1.0, 0.3, 0.96, 0.96, 1.45]
    small = size_sweep(100_000, 1000, costs, m, 600)
    large = size_sweep(100_000, 1000, costs, m, 3600)
    assert 0 < small.max_samples < large.max_samples < 100_000  # more time, more rows
    assert small.seconds <= 600 and large.seconds <= 3600
    everything = size_sweep(300, 60, costs, m, 3600)  # all the rows fit: no sample, the most epochs
    assert everything.max_samples == 0 and everything.epochs == 5


@pytest.fixture
def same_peftlab(monkeypatch):
    """The sweep's `python -m peftlab train` children import this peftlab, whatever folder the test runs in (a
    relative PYTHONPATH would name another folder once the test changes its working folder)."""
    import peftlab

    monkeypatch.setenv("PYTHONPATH", str(Path(peftlab.__file__).resolve().parents[1]))


def init_lines(capsys, *args) -> tuple[int, str]:
    """Exit code and console (stdout, then stderr) of `peftlab init ARGS`."""
    code = main(["init", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_init_then_sweep_gives_a_report(tiny_bert, tmp_path, capsys, monkeypatch, same_peftlab):
    """The issue's done-when: init on a CSV never seen before, then peftlab sweep, gives a report."""
    monkeypatch.chdir(tmp_path)
    data = write_reviews(tmp_path / "my reviews.csv", n=80)
    code, out = init_lines(capsys, data.name, "--model", tiny_bert, "--budget", "40s")
    assert code == 0, out
    folder = tmp_path / "my_reviews"
    assert "label column: stars" in out and "estimate:" in out and "an estimate" in out.lower()
    assert f"next: peftlab sweep {folder.name}/sweep.yaml" in out
    cfg = load_config(folder / "config.yaml")
    assert (cfg.data.text_column, cfg.data.label_column, cfg.data.train_file) == ("review", "stars", "my reviews.csv")
    text = (folder / "config.yaml").read_text()
    assert "label_column: stars" in text and "# column with the label" in text  # commented from the help
    sweep = yaml.safe_load((folder / "sweep.yaml").read_text())
    assert [v["name"] for v in sweep["variants"]] == ["full", "head", "lora-r8", "lora-r16", "dora-r8"]
    # an existing config is not replaced without --force, and nothing is touched
    before = (folder / "sweep.yaml").read_bytes()
    code, out = init_lines(capsys, data, "--model", tiny_bert)
    assert code == 2 and "already holds config.yaml and sweep.yaml; give --force" in out
    # a failure (here: no such model) writes nothing
    code, out = init_lines(capsys, data, "--model", tmp_path / "no-model", "--out", tmp_path / "other")
    assert code == 2 and "no-model" in out and not (tmp_path / "other").exists()
    assert (folder / "sweep.yaml").read_bytes() == before
    assert main(["sweep", str(folder / "sweep.yaml"), "--output-dir", str(tmp_path / "runs")]) == 0
    report = json.loads((tmp_path / "runs" / "my_reviews" / "report" / "report.json").read_text())
    assert {r["name"]: r["status"] for r in report["runs"]} == dict.fromkeys(
        ["full", "head", "lora-r8", "lora-r16", "dora-r8"], "completed"
    )
    assert report["task"] == "classification"


@pytest.mark.parametrize("kind", ["pairs", "sft", "ner"])
def test_init_writes_a_loadable_config(kind, tiny_bert, tiny_llama, tmp_path, capsys):
    rng = random.Random(4)
    if kind == "pairs":
        data = tmp_path / "pairs.tsv"
        rows = [f"{sentence(rng, 1)} {i}\t{sentence(rng, 0)} {i}\t{'yes' if i % 2 else 'no'}" for i in range(40)]
        data.write_text("first\tsecond\tsame\n" + "\n".join(rows) + "\n")
    elif kind == "sft":
        data = tmp_path / "tips.jsonl"
        data.write_text(
            "\n".join(
                json.dumps({"instruction": "rate it", "input": sentence(rng, 1), "output": "good"}) for _ in range(30)
            )
        )
    else:
        data = tmp_path / "ner.conll"
        data.write_text("\n\n".join("the O\nmovie B-MISC\nwas O\ngood O" for _ in range(30)) + "\n")
    model = tiny_llama if kind == "sft" else tiny_bert
    more = []
    if kind == "pairs":  # a validation file of its own instead of a split
        (tmp_path / "dev.tsv").write_text("first\tsecond\tsame\n" + "\n".join(rows[:10]) + "\n")
        more = ["--validation", tmp_path / "dev.tsv"]
    code, out = init_lines(capsys, data, "--model", model, "--budget", "2m", "--out", tmp_path / "out", *more)
    assert code == 0, out
    cfg = load_config(tmp_path / "out" / "config.yaml")
    assert cfg.task.task == {"pairs": "classification", "sft": "sft", "ner": "ner"}[kind]
    if kind == "pairs":
        assert (cfg.data.text_column, cfg.data.text_pair_column, cfg.data.label_column) == ("first", "second", "same")
        assert cfg.data.validation_file == str(tmp_path / "dev.tsv") and "split off" not in out
    from peftlab.training.data_check import check

    assert "train" in check(cfg)  # the task's own reader takes the data as configured


def test_example_matches_its_data_and_its_sweep_runs(tiny_bert, tmp_path, monkeypatch, same_peftlab):
    """The shipped example: its config holds what detection decides for its CSV, and its sweep (the tiny BERT in
    place of the packaged model, and fewer rows, to stay short) gives a report."""
    monkeypatch.chdir(ROOT)  # the example's paths are relative to the repository
    config = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    flat = {k: v for section in config.values() for k, v in section.items()}
    det = detect(flat["train_file"])
    assert {k: flat[k] for k in det.settings if k != "task"} == {k: v for k, v in det.settings.items() if k != "task"}
    from peftlab.training.data_check import check

    assert "labels train: negative 38 (11.9%), neutral 198" in check(
        load_config(EXAMPLE / "config.yaml", [f"model={tiny_bert}"])
    )
    sweep = yaml.safe_load((EXAMPLE / "sweep.yaml").read_text())
    sweep["base"] = str(EXAMPLE / "config.yaml")
    sweep["config"] |= {"model": tiny_bert, "max_samples": 48, "max_eval_samples": 24, "epochs": 1, "max_length": 32}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    assert main(["sweep", str(tmp_path / "sweep.yaml"), "--output-dir", str(tmp_path / "runs")]) == 0
    report = json.loads((tmp_path / "runs" / sweep["name"] / "report" / "report.json").read_text())
    assert [r["status"] for r in report["runs"]] == ["completed"] * len(sweep["variants"]) == ["completed"] * 5
    assert report["metric"] == "f1_macro"
