"""Tasks: one module per task, each exposing the same plain functions.

A task module defines TASK_TYPE (peft task type), DEFAULT_METRIC, METRICS (names the best epoch may
be picked by, "loss" included), TOKEN_LEVEL_LOSS (True when the model returns a token-summed LM loss),
and these functions; `cfg` is always the whole Config:
  prepare(splits, cfg) -> prepared: an object with `.examples` (split name -> list, one per example)
      and optionally `.labels` (list of label names) and `.notes` (dict merged into result.json,
      e.g. repaired BIO tags or truncated examples); validates columns and labels
  encode(examples, tokenizer, cfg) -> datasets.Dataset of model inputs (with `labels`)
  build_model(resolved, prepared, cfg, tokenizer) -> (model, notes dict)
  build_collator(tokenizer, cfg)
  build_compute_metrics(prepared, split, env) -> function(EvalPrediction) -> dict of metrics
      (called once per split evaluated; `env` is a TaskEnv: cfg, tokenizer and the live model, for
      tasks that score by generation or need the current weights)
  write_predictions(path, prepared, split, predictions, env)
Optional: preprocess_logits(logits, labels) -> smaller tensor kept for compute_metrics (saves memory
when logits are vocabulary-sized).
Adding a task is a new module and a row in TASKS; the training path does not change.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..errors import UserError, closest
from . import classification, ner

@dataclass
class TaskEnv:
    """What a task's metrics and prediction writer may use besides the predictions."""
    cfg: Any          # the run's Config
    tokenizer: Any
    trainer: Any = None  # set once the Trainer exists; trainer.model is the live model

    @property
    def model(self):
        return self.trainer.model


TASKS: dict[str, ModuleType] = {"classification": classification, "ner": ner}
# classification with an LLM can be done three ways (config `classify_by`), each its own module
CLASSIFY_BY: dict[str, ModuleType] = {"head": classification}


def get_task(name: str, classify_by: str = "head") -> ModuleType:
    if name not in TASKS:
        raise UserError(f"task: unknown task '{name}'{closest(name, TASKS)}; available: {', '.join(TASKS)}")
    if name == "classification":
        if classify_by not in CLASSIFY_BY:
            raise UserError(f"classify_by: '{classify_by}' is not one of {', '.join(CLASSIFY_BY)}")
        return CLASSIFY_BY[classify_by]
    return TASKS[name]
