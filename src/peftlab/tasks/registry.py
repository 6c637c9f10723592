"""Tasks: one module per task, each exposing the same plain functions.

A task module defines TASK_TYPE (peft task type), DEFAULT_METRIC, METRICS (names the best epoch may
be picked by, "loss" included), TOKEN_LEVEL_LOSS (True when the model returns a token-summed LM loss),
and these functions; `cfg` is always the whole Config:
  prepare(splits, cfg) -> prepared: an object with `.examples` (split name -> list, one per example)
      and optionally `.labels` (list of label names) and `.notes` (dict merged into result.json,
      e.g. repaired BIO tags or truncated examples); validates columns and labels
  encode(examples, tokenizer, cfg) -> datasets.Dataset of model inputs (with `labels`, or the columns
      named by the optional LABEL_NAMES, e.g. QA's start_positions/end_positions)
  build_model(resolved, prepared, cfg, tokenizer) -> (model, notes dict)
  build_collator(tokenizer, cfg)
  build_compute_metrics(prepared, split, env) -> function(EvalPrediction) -> dict of metrics
      (called once per split evaluated; `env` is a TaskEnv: cfg, tokenizer and the live model, for
      tasks that score by generation or need the current weights)
  write_predictions(path, prepared, split, predictions, env)
Optional: REPORT_METRICS (the metric columns of the sweep report, in order); REPORT_NOTE (a caveat the
report prints under the best-epoch table, e.g. how QA's no-answer threshold was chosen);
Optional: LABEL_NAMES (the model's label arguments, default ["labels"]; the Trainer passes them to the
model and hands them to compute_metrics as label_ids, a tuple when several);
preprocess_logits(logits, labels) -> smaller tensor kept for compute_metrics (saves memory
when logits are vocabulary-sized).
Splits besides train / validation / test (e.g. `extra`, read from extra_eval_file) are prepared and
encoded like the others and scored at every evaluation through the same build_compute_metrics; their
metrics join the epoch's line prefixed with the split name (extra_loss, extra_rougeL).
Adding a task is a new module and a row in TASKS; the training path does not change.
`peftlab data check` uses the same hooks: prepare(), then encode() with max_length lifted to count
untruncated tokens (so encode must not pad to max_length; an example of one sequence per option counts
its longest), and the encoded `labels` that index `prepared.labels` (ints, or per-token lists with
-100 ignored) for the label distribution; a task whose labels are token ids instead defines
label_indices(prepared, split) -> list of label indices.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from peftlab.errors import UserError, closest
from peftlab.tasks import classification, cls_generate, cls_likelihood, mc_generate, multiple_choice, ner, qa, sft

@dataclass
class TaskEnv:
    """What a task's metrics and prediction writer may use besides the predictions."""
    cfg: Any          # the run's Config
    tokenizer: Any
    trainer: Any = None  # set once the Trainer exists; trainer.model is the live model
    generate: Any = None  # another backend's generation (llama.cpp): prompts' token ids -> answers' ids

    @property
    def model(self):
        return self.trainer.model


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
