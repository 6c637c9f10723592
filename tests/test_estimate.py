"""peftlab sweep --estimate: the prediction's arithmetic (steps, padding, evaluation passes, totals), the
command on the tiny BERT (prints per run and in total, writes estimate.json, runs nothing) and the report's
predicted-against-measured section after the sweep runs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml

from peftlab.cli import main
from peftlab.report.cost import cost_markdown, cost_section
from peftlab.report.tables import Run
from peftlab.training.cost import (
    Rates,
    eval_tokens,
    evaluations,
    example_tokens,
    fixed_seconds,
    padded_tokens,
    predict_run,
    shuffled_padded_tokens,
    steps_per_epoch,
)


def test_steps_per_epoch_follow_the_trainers_rule():
    assert steps_per_epoch(2000, 16) == 125
    assert steps_per_epoch(2001, 16) == 126  # a last short batch is a step
    assert steps_per_epoch(100, 8, grad_accum=4) == 4  # 13 batches, accumulated by 4, rounded up
    assert steps_per_epoch(100, 8, world=2) == 7
    assert steps_per_epoch(0, 16) == 1


def test_padding_per_batch_and_evaluation_passes():
    assert example_tokens([1, 2, 3]) == 3
    assert example_tokens([[1, 2], [1, 2, 3, 4]]) == 8  # two options padded to the longer
    assert example_tokens([[1, 2], [1, 2, 3, 4]], [5, 6, 7]) == 11  # and their shared prompt, once
    assert padded_tokens([2, 5, 3, 3, 1], 2) == 2 * 5 + 2 * 3 + 1 * 1
    assert shuffled_padded_tokens([4] * 10, 3) == 40  # one length: no padding, whatever the order
    assert padded_tokens([1, 9], 2) <= shuffled_padded_tokens([1, 9, 1, 9], 2) <= 4 * 9
    # length-grouped batches (one megabatch here): the rows sorted, so only the sorted order's padding
    assert shuffled_padded_tokens([1, 9, 1, 9], 2, grouped=True) == 9 + 9 + 1 + 1
    assert shuffled_padded_tokens([1, 9, 1, 9], 2, grouped=True) < shuffled_padded_tokens([1, 9, 1, 9], 2)
    assert evaluations(2, True) == 3 and evaluations(2, False) == 2
    lengths = {"train": [5] * 8, "validation": [4] * 4, "test": [2] * 4, "extra": [3] * 2}
    # validation and extra at each of 3 evaluations, then every split but train predicted once
    assert eval_tokens(lengths, 2, 2, True) == 3 * (16 + 6) + (16 + 8 + 6)


def test_a_runs_time_is_its_fixed_seconds_epochs_and_evaluations():
    rates = Rates(train_s_per_token=0.001, eval_s_per_token=0.0001, fixed_s=5.0, imports_s=7.0)
    lengths = {"train": [10] * 64, "validation": [10] * 20}
    t = SimpleNamespace(epochs=3, batch_size=16, grad_accum=1)
    e = SimpleNamespace(eval_batch_size=8, eval_at_start=True)
    p = predict_run(rates, lengths, t, e)
    assert p["steps_per_epoch"] == 4
    assert p["time_per_epoch_s"] == pytest.approx(0.64)  # 640 tokens at 1 ms
    assert p["eval_s"] == pytest.approx(0.0001 * 200 * 5)  # 4 evaluations + the prediction pass
    assert p["run_s"] == pytest.approx(5.0 + 3 * 0.64 + 0.1)
    assert predict_run(rates, lengths, t, e, imports=True)["run_s"] == pytest.approx(p["run_s"] + 7.0)
    assert fixed_seconds(30.0, 7.0, 10.0, 5.0) == 8.0 and fixed_seconds(10.0, 7.0, 10.0, 5.0) == 0.0


def test_the_report_sets_predicted_beside_measured(tmp_path):
    (tmp_path / "estimate.json").write_text(
        json.dumps(
            {
                "runs": {
                    "a": {"time_per_epoch_s": 10.0, "run_s": 40.0, "peak_memory_mb": 1000.0},
                    "b": {"time_per_epoch_s": 20.0, "run_s": 60.0, "peak_memory_mb": 1200.0},
                },
                "note": "n.",
            }
        )
    )
    timeline = {"process_started": 100.0, "finished": 150.0}
    result = {"time_per_epoch_s": 12.0, "peak_memory_mb": 1100.0, "timeline": timeline}
    runs = [Run("a", "a", None, "completed", result=result), Run("b", "b", None, "failed")]
    section = cost_section(tmp_path, runs)
    assert section["rows"][0] == ["a", "10.0", "12.0", "1.20", "40.0", "50.0", "1.25", "1,000", "1,100"]
    assert section["rows"][-1][:7] == ["total", "", "", "", "40.0", "50.0", "1.25"]  # completed runs only
    assert "## Predicted and measured cost" in cost_markdown(section)
    assert cost_section(tmp_path / "none", runs) is None


def test_sweep_estimate_prints_writes_and_runs_nothing_then_the_report_compares(tmp_path, base_config, capsys):
    config = dict(kv.split("=", 1) for kv in base_config)
    config.pop("output_dir")
    config.update(epochs=2)
    path = tmp_path / "tiny.yaml"
    body = {"name": "tiny", "output_dir": str(tmp_path / "sweeps"), "config": config}
    body["variants"] = [{"method": "lora", "lora_rank": 4}, {"method": "lora", "lora_rank": 8}, {"method": "head"}]
    path.write_text(yaml.safe_dump(body))
    folder = tmp_path / "sweeps" / "tiny"
    assert main(["sweep", str(path), "--estimate"]) == 0
    out = capsys.readouterr().out
    assert "3 runs with 2 probes" in out  # the LoRA ranks share one probe
    for name in ("lora-r4", "lora-r8", "head", "total"):
        assert any(line.strip().startswith(name) for line in out.splitlines()), out
    assert "nothing was run" in out
    assert sorted(p.name for p in folder.iterdir()) == ["estimate.json"]  # no run folder, no sweep.json
    estimate = json.loads((folder / "estimate.json").read_text())
    assert set(estimate["runs"]) == {"lora-r4", "lora-r8", "head"}
    assert estimate["runs"]["lora-r4"]["probe"] == "lora-r8"  # the shared probe trains the largest rank
    for r in estimate["runs"].values():
        assert r["time_per_epoch_s"] > 0 and r["run_s"] > r["time_per_epoch_s"] and r["peak_memory_mb"] > 0
    assert estimate["total"]["run_s"] == pytest.approx(sum(r["run_s"] for r in estimate["runs"].values()), abs=0.2)

    assert main(["sweep", str(path)]) == 0  # the sweep runs later; its report reads estimate.json
    md = (folder / "report" / "report.md").read_text()
    assert "## Predicted and measured cost" in md and "| lora-r4 |" in md and "| total |" in md
    report = json.loads((folder / "report" / "report.json").read_text())
    assert [row[0] for row in report["cost"]["rows"]] == ["lora-r4", "lora-r8", "head", "total"]
    assert "Predicted and measured cost" in (folder / "report" / "report.html").read_text()


def test_yes_without_estimate_is_refused(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"variants": [{"method": "full"}]}))
    assert main(["sweep", str(path), "--yes"]) == 2
    assert "--yes goes with --estimate" in capsys.readouterr().err
