"""Tasks: one module per task, each exposing the same plain functions.

A task module defines TASK_TYPE (peft task type), DEFAULT_METRIC, METRICS, TOKEN_LEVEL_LOSS, and
  prepare(splits, data_cfg) -> prepared data (labels, examples; validates columns and labels)
  encode(examples, tokenizer, max_length) -> datasets.Dataset of model inputs
  build_model(resolved, prepared, model_cfg, tokenizer) -> (model, notes dict)
  build_collator(tokenizer), build_compute_metrics(prepared), write_predictions(path, ...)
Adding a task is a new module and a row in TASKS; the training path does not change.
"""
from __future__ import annotations

from types import ModuleType

from ..errors import UserError, closest
from . import classification

TASKS: dict[str, ModuleType] = {"classification": classification}


def get_task(name: str) -> ModuleType:
    if name not in TASKS:
        raise UserError(f"task: unknown task '{name}'{closest(name, TASKS)}; available: {', '.join(TASKS)}")
    return TASKS[name]
