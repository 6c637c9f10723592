"""One scale per metric, one name per thing: every metric a fraction (older 0-100 files read once on it),
exact match called exact_match, memory labelled RSS or GPU in MiB/GiB, a verdict without 1.0x comparisons,
Pareto labels that do not cover one another."""

from __future__ import annotations

import json

import pytest
from test_sweep import fake_sweep

from peftlab.report.summary import format_run_summary
from peftlab.report.tables import summarize, table_rows, verdict
from peftlab.runs import layout
from peftlab.runs.rundir import read_history, read_result, write_result
from peftlab.training.train import on_old_scale

OLD_SFT = {
    "status": "completed",
    "run_name": "old",
    "task": "sft",
    "model": "m",
    "method": "lora",
    "metric_for_best": "rougeL",
    "trainable_params": 10,
    "total_params": 1000,
    "trainable_pct": 1.0,
    "peak_memory_mb": 1024.0,
    "peak_memory_kind": "process_peak_rss",
    "time_per_epoch_s": 10.0,
    "adapter_size_mb": 1.0,
    "best_epoch": 1,
    # what an older peftlab wrote: generation scores 0-100 (the demo's "exact match 0.00 -> 64.06")
    "metrics_epoch0": {"epoch": 0, "rougeL": 19.8, "bleu4": 2.5, "exact_match": 0.0, "loss": 2.0},
    "metrics_best": {"epoch": 1, "rougeL": 64.1, "bleu4_corpus": 40.0, "exact_match": 64.0625, "extra_rougeL": 50.0},
    "metrics_test": {"rouge1": 70.0, "loss": 1.5},
}


def write_old(folder, result, lines):
    folder.mkdir(parents=True)
    (folder / layout.RESULT).write_text(json.dumps(result))
    (folder / layout.METRICS).write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_an_older_result_is_read_once_on_the_fraction_scale(tmp_path):
    write_old(tmp_path / "old", OLD_SFT, [OLD_SFT["metrics_epoch0"], OLD_SFT["metrics_best"]])
    result = read_result(tmp_path / "old")
    assert result["metric_scale"] == "fraction"
    assert result["metrics_epoch0"] == {"epoch": 0, "rougeL": 0.198, "bleu4": 0.025, "exact_match": 0.0, "loss": 2.0}
    assert result["metrics_best"] == pytest.approx(
        {"epoch": 1, "rougeL": 0.641, "bleu4_corpus": 0.4, "exact_match": 0.640625, "extra_rougeL": 0.5}
    )
    assert result["metrics_test"] == {"rouge1": 0.7, "loss": 1.5}  # loss is never rescaled
    assert [line["rougeL"] for line in read_history(tmp_path / "old")] == pytest.approx([0.198, 0.641])
    assert on_old_scale(tmp_path / "old")  # a resume would mix scales: train --resume refuses it
    from peftlab.api import RunResult  # the Python API reads it the same way, epochs included

    run = RunResult.from_folder(tmp_path / "old")
    assert [e["rougeL"] for e in run.epochs] == pytest.approx([0.198, 0.641])
    assert run.metrics["rougeL"] == pytest.approx(0.641)
    # written again (e.g. by export), it says its scale, and is not divided a second time
    (tmp_path / "again").mkdir()
    write_result(tmp_path / "again", result)
    assert json.loads((tmp_path / "again" / layout.RESULT).read_text())["metric_scale"] == "fraction"
    assert read_result(tmp_path / "again")["metrics_best"]["rougeL"] == pytest.approx(0.641)
    assert read_result(tmp_path / "old", upgrade=False)["metrics_best"]["rougeL"] == 64.1  # the file is untouched


def test_an_older_qa_result_calls_exact_match_exact(tmp_path):
    old = {
        "status": "completed",
        "task": "qa",
        "metric_for_best": "exact",
        "metrics_best": {"exact": 0.5, "f1": 0.6, "HasAns_exact": 0.4, "NoAns_exact": 1.0, "null_threshold": 2.0},
    }
    write_old(tmp_path / "qa", old, [old["metrics_best"]])
    result = read_result(tmp_path / "qa")
    assert result["metric_for_best"] == "exact_match"
    # QA's scores were fractions already: renamed, never divided
    assert result["metrics_best"] == {
        "exact_match": 0.5,
        "f1": 0.6,
        "HasAns_exact_match": 0.4,
        "NoAns_exact_match": 1.0,
        "null_threshold": 2.0,
    }
    assert read_history(tmp_path / "qa") == [result["metrics_best"]]


def test_a_result_written_today_is_read_as_written(tmp_path):
    (tmp_path / "new").mkdir()
    metrics = {"epoch": 1, "rougeL": 0.641, "exact_match": 0.5}
    write_result(tmp_path / "new", {**OLD_SFT, "metrics_best": metrics})
    (tmp_path / "new" / layout.METRICS).write_text(json.dumps(metrics) + "\n")
    assert read_result(tmp_path / "new")["metrics_best"] == metrics
    assert read_history(tmp_path / "new") == [metrics]
    assert not on_old_scale(tmp_path / "new")


def test_a_report_of_old_and_new_runs_has_one_scale(tmp_path):
    """A sweep reuses run folders of an older peftlab beside new ones: their rows must be comparable."""
    write_old(tmp_path / "old-s1", OLD_SFT, [OLD_SFT["metrics_epoch0"], OLD_SFT["metrics_best"]])
    (tmp_path / "new-s1").mkdir()
    new = {
        **OLD_SFT,
        "run_name": "new-s1",
        "metrics_epoch0": {"epoch": 0, "rougeL": 0.2, "loss": 2.0},
        "metrics_best": {"epoch": 1, "rougeL": 0.6},
    }
    write_result(tmp_path / "new-s1", new)
    runs = [{"name": n, "group": n[:3], "seed": 1, "status": "completed"} for n in ("old-s1", "new-s1")]
    (tmp_path / "sweep.json").write_text(json.dumps({"name": "s", "runs": runs}))
    s = summarize(tmp_path)
    by = {g["group"]: g["metrics_best"]["rougeL"]["mean"] for g in s["groups"]}
    assert by == pytest.approx({"old": 0.641, "new": 0.6})
    assert s["best"] == "old"


def test_every_memory_figure_names_its_kind_and_sizes_are_mib(tmp_path):
    fake_sweep(tmp_path, {"a": [(0.5, 0.9, 10, 2048, 60)], "b": [(0.5, 0.8, 10, 1024, 90)]})
    header, rows = table_rows(summarize(tmp_path), "metrics_best")
    assert header[3] == "peak memory" and [r[3] for r in rows] == ["2.00 GiB RSS", "1.00 GiB RSS"]
    assert [r[6] for r in rows] == ["1.0 MiB", "1.0 MiB"]
    result = {**OLD_SFT, "peak_memory_kind": "cuda_max_allocated"}
    text = format_run_summary(read_result_of(tmp_path, result))
    assert "peak memory 1024 MiB GPU" in text and "adapter 1.00 MiB" in text and " MB" not in text


def read_result_of(tmp_path, result):
    (tmp_path / "one").mkdir()
    write_result(tmp_path / "one", result)
    return read_result(tmp_path / "one")


def verdict_of(tmp_path, mems):
    """Two groups equally good (one seed each, within the tolerance): best 'a' and a cheaper 'b'."""
    fake_sweep(tmp_path, {"a": [(0.5, 0.90, 100, mems[0], 60)], "b": [(0.5, 0.89, 10, mems[1], 60)]})
    return "\n".join(verdict(summarize(tmp_path)))


def test_the_verdict_leaves_out_a_comparison_that_prints_1_0x(tmp_path):
    text = verdict_of(tmp_path, (1030, 1000))  # 1.03x: prints 1.0x, tells nothing
    assert "lowest peak memory" not in text and "1.0x" not in text
    assert "fewest trainable parameters: **b** (0.890 accuracy; a takes 10.0x that)" in text


def test_the_verdict_keeps_a_comparison_that_tells(tmp_path):
    text = verdict_of(tmp_path, (1100, 1000))  # 1.1x
    assert "lowest peak memory: **b** (0.890 accuracy; a takes 1.1x that)" in text
    # equal epochs: no "fastest epochs" line either
    assert "fastest epochs" not in text


def test_pareto_labels_of_nearly_equal_points_do_not_overlap(tmp_path):
    """The demo's lora-r8, dora-r8 and lora-r16 sit on one spot of the plot: their labels were printed on
    top of each other."""
    from peftlab.report.plots import pareto_figure
    from peftlab.report.tables import COSTS

    groups = {
        "lora-r8": [(0.5, 0.800, 1000, 1500, 60)],
        "dora-r8": [(0.5, 0.801, 1010, 1501, 61)],
        "lora-r16": [(0.5, 0.800, 1020, 1502, 60)],
        "full": [(0.5, 0.85, 100000, 3000, 120)],
        "head": [(0.5, 0.60, 10, 900, 20)],
    }
    fake_sweep(tmp_path, groups)
    fig = pareto_figure(summarize(tmp_path), COSTS)
    fig.tight_layout()  # as save() does before writing
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        texts = [t for t in ax.texts if t.get_text() in groups]
        assert sorted(t.get_text() for t in texts) == sorted(groups)
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
        for i, (name, box) in enumerate(boxes):
            for other, box2 in boxes[i + 1 :]:
                assert not box.overlaps(box2), f"{ax.get_xlabel()}: '{name}' covers '{other}'"
        # each label stays beside its point (its left edge a few pixels right of it) and covers no other point
        for t in texts:
            x, _ = ax.transData.transform(t.xy)
            box = t.get_window_extent(renderer)
            assert 0 <= box.x0 - x <= 10 or 0 <= x - box.x1 <= 10  # right of its point, or left of it
            for other in texts:
                if other is not t:
                    assert not box.contains(*ax.transData.transform(other.xy)), f"'{t.get_text()}' covers a point"


def test_metric_for_best_by_its_old_name_says_the_new_one():
    from peftlab.config.settings import load_config
    from peftlab.errors import UserError
    from peftlab.tasks import qa
    from peftlab.training.train import resolve_metric

    cfg = load_config(None, ["task=qa", "metric_for_best=exact"])
    with pytest.raises(UserError, match="metric_for_best: 'exact' is now called 'exact_match'"):
        resolve_metric(cfg, qa)
    assert resolve_metric(load_config(None, ["task=qa", "metric_for_best=exact_match"]), qa) == "exact_match"


def test_resume_refuses_an_older_folder_whose_epochs_are_on_another_scale(tmp_path):
    from peftlab.config.settings import load_config
    from peftlab.errors import UserError
    from peftlab.runs.rundir import write_yaml
    from peftlab.training.train import check_run_dir

    cfg = load_config(None, ["task=sft"])
    stopped = {**OLD_SFT, "status": "interrupted"}
    write_old(tmp_path / "old", stopped, [OLD_SFT["metrics_epoch0"]])
    write_yaml(tmp_path / "old" / layout.CONFIG, cfg.to_dict())
    with pytest.raises(UserError, match="started by an older peftlab whose metrics.jsonl scores are on another scale"):
        check_run_dir(tmp_path / "old", cfg, resume=True, overwrite=False)
    # a classification folder of the same age holds nothing that changed: it resumes
    write_old(tmp_path / "cls", {"status": "interrupted"}, [{"epoch": 0, "accuracy": 0.5, "loss": 0.7}])
    write_yaml(tmp_path / "cls" / layout.CONFIG, cfg.to_dict())
    assert check_run_dir(tmp_path / "cls", cfg, resume=True, overwrite=False) is None
