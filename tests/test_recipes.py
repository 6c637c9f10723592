"""Every shipped recipe loads, its data reads and validates (no training here)."""

from pathlib import Path

import pytest

from peftlab.config.settings import load_config
from peftlab.data.splits import load_splits
from peftlab.tasks.registry import task_of

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    assert len(RECIPES) >= 5


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_and_its_data_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes name data relative to the project root, as `make demo` runs them
    cfg = load_config(path)
    splits = load_splits(cfg.data, cfg.train.seed)
    prepared = task_of(cfg).prepare(splits, cfg)
    labels = getattr(prepared, "labels", None)  # multiple choice and sft have none
    assert labels is None or len(labels) >= 2
    assert set(prepared.examples) >= {"train", "validation"}
    assert all(len(ex) > 0 for ex in prepared.examples.values())


SWEEPS = sorted((ROOT / "recipes" / "sweeps").glob("*.yaml"))


def test_there_are_sweeps():
    assert {p.stem for p in SWEEPS} >= {"demo-sst2-minilm", "sst2-minilm-methods", "mrpc-minilm-methods"}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_recipe_dry_runs(path, monkeypatch, capsys, tmp_path):
    from peftlab.cli import main
    from peftlab.sweep.load import load_sweep

    monkeypatch.chdir(ROOT)
    sweep = load_sweep(path, output_dir=str(tmp_path))
    assert len(sweep.runs) >= 2 and len({r.name for r in sweep.runs}) == len(sweep.runs)  # a comparison (quick: 2)
    first = sweep.runs[0].cfg
    splits = load_splits(first.data, first.train.seed)  # the data every run reads is there and valid
    assert task_of(first).prepare(splits, first).examples["train"]
    assert main(["sweep", str(path), "--dry-run", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(f"{r.name} " in out for r in sweep.runs)
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


STUDIES = sorted((ROOT / "recipes" / "studies").glob("*.yaml"))


def test_there_are_studies():
    assert {p.stem for p in STUDIES} >= {
        "encoder-three-tasks",
        "chat-llm-retention",
        "science-exam-mcq",
        "decoder-prompt-vs-lora",
        "glue-exam",
        "quantized-families",
    }


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_dry_runs_and_every_data_setup_validates(path, monkeypatch, capsys, tmp_path):
    """Every part plans, and the data of every distinct data/task setup among its runs reads and
    prepares for its task (a study's parts differ in task and data; its variants may too: the
    auxiliary-data rows of chat-llm-retention mix two files)."""
    from peftlab.cli import main
    from peftlab.sweep.load import load_sweep
    from peftlab.sweep.study import Study

    monkeypatch.chdir(ROOT)
    study = load_sweep(path, output_dir=str(tmp_path))  # a study across tasks, or one sweep
    sweeps = study.sweeps if isinstance(study, Study) else [study]
    assert path.read_text().startswith("# Study:")  # the header says what the original did
    setups = {}
    for sweep in sweeps:
        inside = tmp_path / study.name if isinstance(study, Study) else tmp_path
        assert len(sweep.runs) >= 2 and sweep.folder == inside / sweep.name
        for run in sweep.runs:
            d, t = run.cfg.data, run.cfg.task
            setups.setdefault(repr((d, t.task, t.classify_by, t.mc_head)), run.cfg)
    for cfg in setups.values():
        splits = load_splits(cfg.data, cfg.train.seed)
        prepared = task_of(cfg).prepare(splits, cfg)
        assert prepared.examples["train"] and prepared.examples["validation"]
    assert main(["sweep", str(path), "--dry-run", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(f"{r.name} " in out for s in sweeps for r in s.runs)
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
