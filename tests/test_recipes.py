"""Every shipped recipe loads, its data reads and validates (no training here)."""
from pathlib import Path

import pytest

from peftlab.config import load_config
from peftlab.formats import load_splits
from peftlab.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    assert len(RECIPES) >= 5


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_and_its_data_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes name data relative to the project root, as `make demo` runs them
    cfg = load_config(path)
    splits = load_splits(cfg.data, cfg.train.seed)
    prepared = get_task(cfg.task.task, cfg.task.classify_by).prepare(splits, cfg)
    labels = getattr(prepared, "labels", None)  # tasks without labels (qa) have none
    assert labels is None or len(labels) >= 2
    assert all(len(ex) > 0 for ex in prepared.examples.values())
