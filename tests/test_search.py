"""`search:` in a sweep: each variant over a grid of settings (lr: auto picks a grid per method family),
trials planned as run folders, Optuna's pruner stopping the ones that fall behind, the report keeping
each variant's trial with the best validation score and listing every trial."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml
from test_sweep import tiny_sweep, write_sweep

from peftlab.cli import main
from peftlab.errors import UserError
from peftlab.models.method_types import LR_GRIDS
from peftlab.report.tables import summarize
from peftlab.report.write import write_report
from peftlab.runs import layout
from peftlab.sweep.load import load_sweep
from peftlab.sweep.search import SEARCH_FILE


def test_lr_auto_gives_each_variant_its_familys_grid_with_its_own_rate_first(tmp_path):
    path = write_sweep(
        tmp_path / "s.yaml",
        variants=[
            {"name": "full", "method": "full", "lr": 2.0e-5},
            {"name": "head", "method": "head"},
            {"method": "lora", "lora_rank": 8, "lr": 1.0e-3},  # not in the grid: the grid's order
            {"method": "prompt-tuning"},
        ],
        search={"lr": "auto"},
    )
    sweep = load_sweep(path)
    by_variant: dict = {}
    for run in sweep.runs:
        by_variant.setdefault(run.variant, []).append(run)
    assert list(by_variant) == ["full", "head", "lora-r8", "prompt-tuning"]
    full = [r.trial["lr"] for r in by_variant["full"]]
    assert full[0] == 2.0e-5 and sorted(full) == sorted(LR_GRIDS["full"])  # its own rate first
    assert [r.trial["lr"] for r in by_variant["head"]] == LR_GRIDS["head"]
    assert [r.trial["lr"] for r in by_variant["lora-r8"]] == LR_GRIDS["adapter"]
    assert [r.trial["lr"] for r in by_variant["prompt-tuning"]] == LR_GRIDS["prompt"]
    lora = by_variant["lora-r8"][1]
    assert (lora.name, lora.group, lora.cfg.train.lr) == ("lora-r8-lr0.0001", "lora-r8-lr0.0001", 1.0e-4)
    assert lora.space == {"lr": sorted(LR_GRIDS["adapter"], key=str)}
    assert lora.entry("pending")["trial"] == {"lr": 1.0e-4} and lora.entry("pending")["variant"] == "lora-r8"


def test_search_lists_and_seeds_cross(tmp_path):
    path = write_sweep(
        tmp_path / "s.yaml",
        variants=[{"method": "lora"}],
        grid={"seed": [1, 2]},
        search={"lr": [1e-4, 1e-3], "lora_rank": [4, 8], "pruner": "none"},
    )
    sweep = load_sweep(path)
    assert len(sweep.runs) == 8 and sweep.search.pruner == "none"
    # the list's order: the variant sets no lora_rank of its own (the default 8 it inherits is no choice)
    assert sweep.runs[0].name == "lora-lr0.0001-r4-s1" and sweep.runs[0].cfg.method.lora_rank == 4
    assert {r.variant for r in sweep.runs} == {"lora"}


@pytest.mark.parametrize(
    "search, message",
    [
        ({"lora_rank": "auto"}, "auto is for lr only"),
        ({"lr": "auto", "pruner": "halving"}, "is not one of"),
        ({"pruner": "none"}, "names no setting to search"),
        ({"lr": []}, "empty list"),
        ([1, 2], "must map config keys"),
        ({"lr": ["fast"]}, "lr"),
    ],
)
def test_bad_search_mappings_are_refused(tmp_path, search, message):
    path = write_sweep(tmp_path / "s.yaml", variants=[{"method": "lora"}], search=search)
    with pytest.raises(UserError, match=message):
        load_sweep(path)


def test_a_trial_behind_at_its_first_epoch_is_pruned_and_the_report_keeps_the_best(tmp_path, base_config):
    """The variant's own rate (5e-3) trains first; a rate of 1e-9 learns nothing, is behind it after epoch 1
    and is pruned there; the report's tables show the variant at 5e-3 and the search lists both."""
    path = tiny_sweep(
        tmp_path,
        base_config,
        [{"name": "lora", "method": "lora", "lr": 5e-3, "pooling": "mean"}],
        search={"lr": [5e-3, 1e-9]},
    )
    data = yaml.safe_load(path.read_text())
    data["config"].update(epochs=3, metric_for_best="loss")
    write_sweep(path, **data)
    assert main(["sweep", str(path)]) == 0
    folder = tmp_path / "sweeps" / "tiny"
    state = json.loads((folder / layout.SWEEP_STATE).read_text())
    entries = {e["name"]: e for e in state["runs"]}
    assert entries["lora-lr1e-09"]["pruned"]["epoch"] == 1 and "pruned" not in entries["lora-lr0.005"]
    pruned = json.loads((folder / "lora-lr1e-09" / layout.RESULT).read_text())
    assert pruned["status"] == "completed" and pruned["pruned"]["epoch"] == 1
    lines = [json.loads(x) for x in (folder / "lora-lr1e-09" / layout.METRICS).read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1]  # stopped after its first epoch
    assert not (folder / "lora-lr1e-09" / layout.predictions_file("validation")).exists()  # not the choice
    kept = json.loads((folder / "lora-lr0.005" / layout.RESULT).read_text())
    assert [x["epoch"] for x in map(json.loads, (folder / "lora-lr0.005" / layout.METRICS).open())] == [0, 1, 2, 3]

    study = optuna.load_study(study_name="lora", storage=f"sqlite:///{folder / SEARCH_FILE}")
    states = {t.user_attrs["run"]: t.state for t in study.trials}
    assert states == {"lora-lr0.005": optuna.trial.TrialState.COMPLETE, "lora-lr1e-09": optuna.trial.TrialState.PRUNED}
    assert study.best_trial.value == kept["metrics_best"]["loss"]

    s = summarize(folder)
    assert [g["group"] for g in s["groups"]] == ["lora"]  # the variant, at its chosen rate
    (record,) = s["search"]
    assert record["chosen_setting"] == {"lr": 5e-3}
    assert {t["group"]: t["status"] for t in record["trials"]} == {
        "lora-lr0.005": "completed",
        "lora-lr1e-09": "pruned",
    }
    md, _ = write_report(folder)
    assert "- lora: **lr 0.005**" in md and "lr 1e-09 pruned after epoch 1" in md
    assert md.index("lr 1e-09 pruned") < md.index("## ")  # in the report's first lines
    assert "## Search" in md and "pruned at epoch 1" in md
    page = (folder / layout.REPORT / layout.REPORT_HTML).read_text()
    assert "<h2>Search</h2>" in page and "pruned at epoch 1" in page

    assert main(["sweep", str(path)]) == 0  # again: both trials are done, nothing runs, nothing is asked
    assert len(optuna.load_study(study_name="lora", storage=f"sqlite:///{folder / SEARCH_FILE}").trials) == 2


def test_a_study_searches_in_every_part_and_a_part_may_search_its_own_way(tmp_path):
    path = write_sweep(
        tmp_path / "study.yaml",
        name="st",
        variants=[{"method": "lora"}],
        search={"lr": [1e-4, 1e-3]},
        parts=[{"name": "a"}, {"name": "b", "search": {"lr": "auto", "pruner": "none"}}],
    )
    a, b = load_sweep(path).sweeps
    assert [r.name for r in a.runs] == ["lora-lr0.0001", "lora-lr0.001"] and a.search.pruner == "successive-halving"
    assert [r.trial["lr"] for r in b.runs] == LR_GRIDS["adapter"] and b.search.pruner == "none"
    assert a.search.folder == a.folder and a.search.url.endswith(f"{a.folder.name}/{SEARCH_FILE}")


def test_trials_left_running_by_a_stopped_sweep_are_failed_when_it_starts_again(tmp_path):
    """A sweep stopped mid-trial (or a process started ahead and never used) leaves its Optuna trial running;
    the next sweep fails it, so a pruner never waits on it, and asks a new trial for the run it resumes."""
    from peftlab.sweep.search import load_study, settle_stale, tell, trial_spec

    path = write_sweep(tmp_path / "s.yaml", output_dir=str(tmp_path / "out"), variants=[{"method": "lora"}])
    data = yaml.safe_load(path.read_text()) | {"search": {"lr": [1e-4, 1e-3]}}
    sweep = load_sweep(write_sweep(path, **data))
    sweep.folder.mkdir(parents=True)
    first, second = sweep.runs
    spec = json.loads(trial_spec(sweep.search, first))
    assert trial_spec(sweep.search, first) == json.dumps(spec)  # asked once per run and sweep process
    tell(sweep.search, first, {"status": "completed", "metric_for_best": "accuracy", "metrics_best": {"accuracy": 0.8}})
    trial_spec(sweep.search, second)  # then the sweep is stopped: this trial stays running
    study = load_study(sweep.search, "lora", "accuracy", 1)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING]
    assert study.trials[0].params == {"lr": 1e-4} and study.trials[1].params == {"lr": 1e-3}
    settle_stale(sweep.search, sweep)
    assert [t.state for t in load_study(sweep.search, "lora", "accuracy", 1).trials][1] == optuna.trial.TrialState.FAIL
