"""The report's verdict you can act on: the test split as headline, paired bootstrap intervals and McNemar on
the same items, baselines in every table, and the recommendation, on hand-made run folders (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from peftlab.report.items import Items, metric_of, read_items
from peftlab.report.paired import mcnemar_p, paired_bootstrap
from peftlab.report.tables import summarize, to_markdown
from peftlab.report.write import write_report
from peftlab.tasks.metrics import compute_classification, compute_ranking

LABELS = ["no", "yes"]


def classification_rows(gold: list[str], pred: list[str]) -> list[dict]:
    return [{"text": f"sentence {i}", "label": g, "prediction": p} for i, (g, p) in enumerate(zip(gold, pred))]


def write_run(folder: Path, name: str, rows_by_split: dict, *, params=10, t=10.0, counts=None, task="classification"):
    """A completed run folder: result.json (metrics computed from the rows), metrics.jsonl, predictions."""
    run = folder / name
    run.mkdir(parents=True)
    scores = {split: score_rows(rows) for split, rows in rows_by_split.items()}
    result = {
        "status": "completed",
        "run_name": name,
        "task": task,
        "model": "m",
        "method": name.split("-s")[0],
        "metric_for_best": "accuracy",
        "trainable_params": params,
        "total_params": 1000,
        "trainable_pct": params / 10,
        "peak_memory_mb": 1000.0,
        "time_per_epoch_s": t,
        "adapter_size_mb": 1.0,
        "best_epoch": 1,
        "labels": LABELS if task == "classification" else None,
        "metrics_epoch0": {"epoch": 0, "accuracy": 0.5},
        "metrics_best": {"epoch": 1, **scores["validation"]},
        **({"metrics_test": scores["test"]} if "test" in scores else {}),
        **({"label_counts_train": counts} if counts else {}),
    }
    (run / "result.json").write_text(json.dumps(result))
    (run / "metrics.jsonl").write_text(json.dumps(result["metrics_epoch0"]) + "\n")
    for split, rows in rows_by_split.items():
        (run / f"predictions_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def score_rows(rows: list[dict]) -> dict:
    if "options" in rows[0]:
        ranks = [[list(r["options"]).index(x) for x in r["top_k"]] for r in rows]
        scores = [
            [-ranks[i].index(j) if j in ranks[i] else -9 for j in range(len(r["options"]))] for i, r in enumerate(rows)
        ]
        return compute_ranking(scores, [list(r["options"]).index(r["answer"]) for r in rows], 3)
    gold = [LABELS.index(r["label"]) for r in rows]
    return compute_classification(gold, [LABELS.index(r["prediction"]) for r in rows], 2)


def write_sweep_json(folder: Path, names: list[str]) -> None:
    runs = [{"name": n, "group": n.split("-s")[0], "seed": 1, "status": "completed"} for n in names]
    (folder / "sweep.json").write_text(json.dumps({"name": folder.name, "runs": runs}))


def yes_no_sweep(tmp_path: Path, test: bool = True) -> Path:
    """The issue's example: a test split 64.7% 'yes' (647 of 1,000); full 0.650 and head 0.637 only look learned."""
    rng = np.random.default_rng(3)
    gold = np.array(["yes"] * 647 + ["no"] * 353)
    rng.shuffle(gold)

    def predict(right: int) -> list[str]:
        """'yes' everywhere (647 right), then 60 'no' items answered 'no' and enough 'yes' ones too for `right`."""
        pred = np.array(["yes"] * 1000)
        pred[rng.choice(np.flatnonzero(gold == "no"), 60, replace=False)] = "no"
        pred[rng.choice(np.flatnonzero(gold == "yes"), 60 - (right - 647), replace=False)] = "no"
        return list(pred)

    names = {"full": predict(650), "head": predict(637)}
    for name, pred in names.items():
        rows = classification_rows(list(gold), pred)
        split = {"validation": rows, **({"test": rows} if test else {})}
        write_run(tmp_path, name, split, params=1000 if name == "full" else 10, counts={"yes": 700, "no": 300})
    write_sweep_json(tmp_path, list(names))
    return tmp_path


def test_methods_that_do_not_beat_the_majority_class_are_told_so_first(tmp_path):
    s = summarize(yes_no_sweep(tmp_path))
    assert s["headline"]["split"] == "test"
    by = {r["group"]: r for r in s["groups"]}
    assert by["full"]["metrics_test"]["accuracy"]["mean"] == pytest.approx(0.650)
    assert by["head"]["metrics_test"]["accuracy"]["mean"] == pytest.approx(0.637)
    majority = s["baselines"][0]
    assert majority["label"] == "yes" and majority["scores"]["accuracy"] == pytest.approx(0.647)
    rec = s["recommendation"]
    assert rec["nothing_beats_baseline"] and rec["pick"] is None
    md = to_markdown(s)
    first = md.split("\n\n")[1]
    assert "Headline scores are the **test** split's" in first
    assert "**No method beats the majority class baseline**" in first and "0.647" in first
    assert "| *majority class* ('yes') |" in md
    assert "differences this small may be noise" not in md


def test_no_test_split_is_said_in_the_first_lines(tmp_path):
    md = to_markdown(summarize(yes_no_sweep(tmp_path, test=False)))
    first = md.split("\n\n")[1]
    assert "No test split" in first and "`test_file:`" in first and "`test_ratio:`" in first
    assert "## Result at best epoch" in md


def test_a_clear_winner_is_picked_with_its_interval_cost_and_cheaper_twin(tmp_path):
    rng = np.random.default_rng(0)
    gold = list(rng.choice(LABELS, size=400))
    flip = lambda p: [g if rng.random() < p else ("no" if g == "yes" else "yes") for g in gold]  # noqa: E731
    full = flip(0.9)
    swap = lambda g: "no" if g == "yes" else "yes"  # noqa: E731
    right, wrong = [i for i in range(400) if full[i] == gold[i]], [i for i in range(400) if full[i] != gold[i]]
    lora = list(full)
    for i in right[:6] + wrong[:4]:  # 6 items lost and 4 won against full: no test can tell these apart
        lora[i] = swap(lora[i])
    preds = {"full": full, "lora": lora, "head": flip(0.7)}
    for name, pred in preds.items():
        rows = classification_rows(gold, pred)
        write_run(
            tmp_path, name, {"validation": rows, "test": rows}, params={"full": 1000, "lora": 20, "head": 5}[name]
        )
    write_sweep_json(tmp_path, list(preds))
    s = summarize(tmp_path)
    rec, by = s["recommendation"], {r["group"]: r for r in s["groups"]}
    assert rec["pick"] == s["best"] == "full" and not rec["nothing_beats_baseline"]
    assert [t["group"] for t in rec["tied"]] == ["lora"]
    assert rec["cheapest"] == "lora"
    assert by["head"]["paired"]["vs_best"]["high"] < 0  # clearly worse: the interval excludes 0
    assert by["head"]["paired"]["mcnemar_vs_best"] < 0.001
    md, _ = write_report(tmp_path)
    assert md.split("\n\n")[1].count("**Pick ") == 1 and "The cheapest of those: **lora**" in md
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["recommendation"]["pick"] == rec["pick"]
    assert "McNemar" in (tmp_path / "report" / "report.html").read_text()


def test_runs_on_other_items_are_not_paired(tmp_path):
    gold = ["yes", "no"] * 50
    write_run(tmp_path, "a", {"validation": classification_rows(gold, gold), "test": classification_rows(gold, gold)})
    other = classification_rows(gold[::-1], gold[::-1])
    write_run(tmp_path, "b", {"validation": other, "test": other})
    write_sweep_json(tmp_path, ["a", "b"])
    s = summarize(tmp_path)
    by = {r["group"]: r for r in s["groups"]}
    assert "not paired with a" in by["b"]["paired"]["why"] and "vs_best" not in by["b"]["paired"]
    assert "No paired test for b: not paired with a: item 1 differs" in to_markdown(s)


def test_classification_metrics_recomputed_on_items_match_the_task(tmp_path):
    rng = np.random.default_rng(1)
    for labels in (LABELS, ["a", "b", "c"]):
        gold, pred = list(rng.choice(labels, 300)), list(rng.choice(labels, 300))
        pred[:5] = [None] * 5  # unparsed generated answers: wrong, a class of their own
        items = Items(
            "classification",
            [str(i) for i in range(300)],
            gold,
            ["<no label>" if p is None else p for p in pred],
            list(labels),
        )
        want = compute_classification(
            [labels.index(g) for g in gold], [-1 if p is None else labels.index(p) for p in pred], len(labels)
        )
        everything = np.arange(300)[None]
        for name in ("accuracy", "precision", "recall", "f1", "mcc", "f1_macro"):
            assert metric_of(items, name)[0](everything)[0] == pytest.approx(want[name]), (labels, name)


def test_multiple_choice_qa_and_ner_items(tmp_path):
    mc = [
        {
            "question": "q1",
            "options": {"A": "x", "B": "y", "C": "z"},
            "answer": "B",
            "prediction": "A",
            "top_k": ["A", "B", "C"],
        },
        {
            "question": "q2",
            "options": {"A": "x", "B": "y", "C": "z"},
            "answer": "A",
            "prediction": "A",
            "top_k": ["A", "C", "B"],
        },
    ]
    (tmp_path / "predictions_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc))
    items, _ = read_items(tmp_path, "test", {})
    every = np.arange(2)[None]
    assert metric_of(items, "accuracy")[0](every)[0] == 0.5 and metric_of(items, "map@3")[0](every)[0] == 0.75
    ner = [
        {"tokens": ["a", "b"], "tags": ["B-X", "O"], "predicted": ["B-X", "B-Y"]},
        {"tokens": ["c"], "tags": ["B-Y"], "predicted": ["O"]},
    ]
    (tmp_path / "predictions_validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ner))
    items, _ = read_items(tmp_path, "validation", {})
    from seqeval.metrics import f1_score

    want = f1_score([r["tags"] for r in ner], [r["predicted"] for r in ner])
    assert metric_of(items, "f1")[0](np.arange(2)[None])[0] == pytest.approx(want)


def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_items():
    a = np.array([1] * 10 + [0] * 2 + [1] * 50, dtype=bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 50, dtype=bool)
    from scipy.stats import binomtest

    assert mcnemar_p(a, b) == pytest.approx(binomtest(10, 12, 0.5).pvalue)
    assert mcnemar_p(a, a) == 1.0


def test_paired_intervals_cover_the_true_difference_95_percent_of_the_time():
    """400 simulated paired datasets of 300 items: A right with probability 0.80, B with 0.72, correlated
    through item difficulty; the true difference of accuracies is 0.08."""
    rng = np.random.default_rng(2024)
    covered, n = 0, 300
    for _ in range(400):
        easy = rng.random(n) < 0.5  # an easy item is more often right for both: the pairing matters
        a = rng.random(n) < np.where(easy, 0.95, 0.65)
        b = rng.random(n) < np.where(easy, 0.90, 0.54)
        fa, fb = (lambda idx, x=a: x[idx].mean(-1)), (lambda idx, x=b: x[idx].mean(-1))
        iv = paired_bootstrap([fa], [fb], n, n_resamples=400, seed=int(rng.integers(1 << 30)))
        covered += iv["low"] <= 0.08 <= iv["high"]
    assert 0.92 <= covered / 400 <= 0.98, covered


def test_several_seeds_resample_seeds_too():
    """Seeds that disagree widen the interval beyond what the items alone give."""
    rng = np.random.default_rng(5)
    n = 200
    base = rng.random(n) < 0.7
    seeds = [rng.random(n) < p for p in (0.6, 0.75, 0.9)]
    fs = [(lambda idx, x=x: x[idx].mean(-1)) for x in seeds]
    fb = [lambda idx: base[idx].mean(-1)]
    one = paired_bootstrap(fs[:1] * 3, fb, n)
    three = paired_bootstrap(fs, fb, n)
    assert three["high"] - three["low"] > one["high"] - one["low"]
    assert three["diff"] == pytest.approx(np.mean([x.mean() for x in seeds]) - base.mean())


def test_a_real_sweep_with_a_test_file_headlines_the_test_split(tmp_path, base_config, sentiment):
    """End to end on the tiny BERT: the runs store the training split's label counts, score the test file with
    their best weights, and the report ranks, tests and recommends on it."""
    from test_sweep import tiny_sweep

    from peftlab.cli import main

    config = [*base_config, f"test_file={sentiment['dev']}"]
    path = tiny_sweep(
        tmp_path, config, [{"name": "head", "method": "head", "lr": 1e-2}, {"method": "lora", "lora_rank": 4}]
    )
    assert main(["sweep", str(path)]) == 0
    folder = tmp_path / "sweeps" / "tiny"
    result = json.loads((folder / "head" / "result.json").read_text())
    assert sum(result["label_counts_train"].values()) == result["n_train"]
    s = json.loads((folder / "report" / "report.json").read_text())
    assert s["headline"]["split"] == "test" and s["baselines"][0]["name"] == "majority class"
    assert "training split's most frequent label" in s["baselines"][0]["note"]
    for row in s["groups"]:
        assert row["metrics_test"]["accuracy"]["mean"] == pytest.approx(
            json.loads((folder / row["group"] / "result.json").read_text())["metrics_test"]["accuracy"]
        )
        assert row["paired"]["n_items"] > 0 and "vs_baseline" in row["paired"]
    rec = s["recommendation"]
    assert rec["split"] == "test" and (rec["pick"] or rec["nothing_beats_baseline"])
    first = (folder / "report" / "report.md").read_text().split("\n\n")[1]
    assert "**test** split" in first and ("**Pick " in first or "No method beats" in first)


def test_qa_gets_the_no_answer_baseline_and_sft_the_untuned_model(tmp_path):
    qa = [
        {"id": str(i), "question": f"q{i}", "answers": [] if i % 2 else ["x"], "prediction": "" if i % 2 else "x"}
        for i in range(40)
    ]
    for r in qa:
        r["exact_match"] = r["f1"] = 1.0
    (tmp_path / "qa").mkdir()
    (tmp_path / "qa" / "predictions_validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    result = {
        "status": "completed",
        "task": "qa",
        "model": "m",
        "method": "lora",
        "metric_for_best": "f1",
        "trainable_params": 5,
        "total_params": 10,
        "trainable_pct": 50.0,
        "metrics_epoch0": {"f1": 0.2},
        "metrics_best": {"f1": 1.0, "exact_match": 1.0},
    }
    (tmp_path / "qa" / "result.json").write_text(json.dumps(result))
    s = summarize(tmp_path)
    assert s["baselines"][0]["name"] == "no answer" and s["baselines"][0]["scores"]["f1"] == pytest.approx(0.5)
    assert s["groups"][0]["paired"]["vs_baseline"]["diff"] == pytest.approx(0.5)
    assert s["recommendation"]["pick"] == "qa" and "No test split" in s["recommendation"]["lines"][0]

    sft = tmp_path / "sft"
    (sft / "a").mkdir(parents=True)
    rows = [
        {"prompt": f"p{i}", "reference": "the cat sat", "generated": "the cat sat" if i % 2 else "a dog"}
        for i in range(6)
    ]
    (sft / "a" / "predictions_validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = {"rougeL": 0.6, "loss": 1.0}
    (sft / "a" / "result.json").write_text(
        json.dumps(
            {
                **result,
                "task": "sft",
                "metric_for_best": "rougeL",
                "metrics_best": metrics,
                "metrics_epoch0": {"rougeL": 0.1},
            }
        )
    )
    s = summarize(sft)
    untuned = s["baselines"][0]  # the epoch-0 score as the report reads it (here on the old scale: /100)
    assert untuned["name"] == "untuned model"
    assert untuned["scores"]["rougeL"] == pytest.approx(s["groups"][0]["metrics_epoch0"]["rougeL"]["mean"])
    assert s["groups"][0]["paired"]["score"]["diff"] == pytest.approx(0.5)  # 3 of 6 texts equal the reference


def test_the_dashboards_sweep_page_opens_with_the_recommendation(tmp_path):
    """The sweep page's first block is the report's opening (no browser needed: the page as served)."""
    from starlette.testclient import TestClient

    from peftlab.ui.app import create_app

    yes_no_sweep(tmp_path / "runs" / "yn")
    response = TestClient(create_app(tmp_path / "runs"), base_url="http://127.0.0.1").get("/sweep/yn")
    assert response.status_code == 200
    page = response.text
    block = page[page.index('<ul id="recommendation">') :]
    assert "No method beats the majority class baseline" in block[: block.index("</ul>")]
    assert "**" not in block[: block.index("</ul>")]  # markdown's bold marks are not shown as text
