"""The task modules by name: the module a Config's task (and its way: classify_by, mc_head) runs.
What a task module provides is the contract in contract.py.
"""
from __future__ import annotations

from types import ModuleType

from peftlab.errors import UserError, closest
from peftlab.tasks import classification, cls_generate, cls_likelihood, mc_generate, multiple_choice, ner, qa, sft


TASKS: dict[str, ModuleType] = {"classification": classification, "ner": ner, "multiple_choice": multiple_choice,
                               "qa": qa, "sft": sft}
# classification with an LLM can be done three ways (config `classify_by`), each its own module
CLASSIFY_BY: dict[str, ModuleType] = {"head": classification, "generate": cls_generate, "likelihood": cls_likelihood}


def get_task(name: str, classify_by: str = "head", mc_head: str = "likelihood") -> ModuleType:
    """The module of a task; classification by `classify_by`, multiple choice with mc_head generate
    (SFT on the answer's letter, not a scoring head) have their own."""
    if name not in TASKS:
        raise UserError(f"task: unknown task '{name}'{closest(name, TASKS)}; available: {', '.join(TASKS)}")
    if name == "classification":
        if classify_by not in CLASSIFY_BY:
            raise UserError(f"classify_by: '{classify_by}' is not one of {', '.join(CLASSIFY_BY)}"
                            f"{closest(classify_by, CLASSIFY_BY)}")
        return CLASSIFY_BY[classify_by]
    if name == "multiple_choice" and mc_head == "generate":
        return mc_generate
    return TASKS[name]


def task_of(cfg) -> ModuleType:
    """The task module a Config asks for."""
    return get_task(cfg.task.task, cfg.task.classify_by, cfg.task.mc_head)
