"""The task modules, one flat table: a row per task way, keyed by (task, way), where the way is the
value of the setting that picks it (classification: classify_by, multiple_choice: mc_head; "" for a
task with one way). What a task module provides is the contract in contract.py.
"""

from __future__ import annotations

from types import ModuleType

from peftlab.errors import UserError, closest
from peftlab.tasks import (
    classification,
    cls_generate,
    cls_likelihood,
    mc_generate,
    multiple_choice,
    ner,
    qa,
    sft,
)

WAYS: dict[tuple[str, str], ModuleType] = {
    ("classification", "head"): classification,
    ("classification", "generate"): cls_generate,  # an LLM generates the label word
    ("classification", "likelihood"): cls_likelihood,  # an LLM ranks the label words
    ("ner", ""): ner,
    ("multiple_choice", "likelihood"): multiple_choice,
    ("multiple_choice", "classifier"): multiple_choice,
    ("multiple_choice", "generate"): mc_generate,  # SFT on the answer's letter, not a scoring head
    ("qa", ""): qa,
    ("sft", ""): sft,
}
WAY_KEYS = {"classification": "classify_by", "multiple_choice": "mc_head"}  # the setting that picks the way


def first_ways() -> dict[str, ModuleType]:
    """Task name -> its first way's module, in table order: what speaks for a task known by name only
    (the report reads REPORT_METRICS and REPORT_NOTE of a run's task)."""
    tasks: dict[str, ModuleType] = {}
    for (task, _), module in WAYS.items():
        tasks.setdefault(task, module)
    return tasks


TASKS = first_ways()


def get_task(name: str, classify_by: str = "head", mc_head: str = "likelihood") -> ModuleType:
    """The module of a task way: the row of the task and the way its setting names."""
    if name not in TASKS:
        raise UserError(f"task: unknown task '{name}'{closest(name, TASKS)}; available: {', '.join(TASKS)}")
    key = WAY_KEYS.get(name)
    way = {"classify_by": classify_by, "mc_head": mc_head}[key] if key else ""
    if (name, way) not in WAYS:
        ways = [w for task, w in WAYS if task == name]
        raise UserError(f"{key}: '{way}' is not one of {', '.join(ways)}{closest(way, ways)}")
    return WAYS[name, way]


def task_of(cfg) -> ModuleType:
    """The task module a Config asks for."""
    return get_task(cfg.task.task, cfg.task.classify_by, cfg.task.mc_head)
