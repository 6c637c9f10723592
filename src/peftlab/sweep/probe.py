"""One probe of `peftlab sweep --estimate`, in a process of its own (its peak memory is then the run's kind):
`python -m peftlab.sweep.probe CONFIG.yaml FOLDER` trains the run's own config through `peftlab train`'s code
on a few batches of its data (PROBE_STEPS optimizer steps an epoch, 2 epochs, PROBE_EVAL_BATCHES evaluation
batches) into FOLDER, a temporary folder the caller deletes, then tokenises the run's full data to learn its
token lengths, and writes FOLDER/probe.json: what sweep/estimate.py predicts the run from.

Two epochs: the first step of a process is slow (lazy initialisation, the allocator), so the second epoch's
steps give the rate; the first's extra time counts among the run's fixed seconds, as it does in the run.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import peftlab
from peftlab.runs import layout
from peftlab.runs.rundir import read_jsonl

PROBE_STEPS = 4  # optimizer steps per probe epoch
PROBE_EPOCHS = 2
PROBE_EVAL_BATCHES = 3  # evaluation batches of each split the probe scores
PROBE_FILE = "probe.json"


def cut_config(cfg, folder: Path):
    """The run's config on a few batches, writing only into `folder`: nothing stops it early, keeps or tracks."""
    cut = copy.deepcopy(cfg)
    t, e = cut.train, cut.eval
    rows = t.batch_size * t.grad_accum * PROBE_STEPS
    cut.data.max_samples = min(cfg.data.max_samples or rows, rows)
    evals = e.eval_batch_size * PROBE_EVAL_BATCHES
    cut.data.max_eval_samples = min(cfg.data.max_eval_samples or evals, evals)
    t.epochs, t.output_dir, t.run_name = PROBE_EPOCHS, str(folder), "probe"
    t.report_to, t.keep_checkpoints, e.early_stopping_patience = "none", False, 0
    return cut


def split_lengths(cfg) -> dict[str, list[int]]:
    """Each split's examples' token counts, tokenised as `peftlab train` does (max_samples applied)."""
    from peftlab.data.splits import load_splits
    from peftlab.models.loading import load_tokenizer, resolve_model
    from peftlab.tasks.registry import task_of
    from peftlab.training.cost import example_tokens

    task = task_of(cfg)
    splits = load_splits(cfg.data, cfg.train.seed)
    tokenizer = load_tokenizer(resolve_model(cfg.model.model, cfg.model.cache_dir).path, cfg.model.trust_remote_code)
    prepared = task.prepare(splits, cfg)
    out = {}
    for name, examples in prepared.examples.items():
        encoded = task.encode(examples, tokenizer, cfg)
        prompts = encoded["prompt_ids"] if "prompt_ids" in encoded.column_names else [()] * len(encoded)
        out[name] = [example_tokens(ids, prompt) for ids, prompt in zip(encoded["input_ids"], prompts)]
    return out


def probe(config_path: str, folder: str) -> dict:
    """Train the cut config, then measure the full data; returns (and writes) probe.json's content."""
    from peftlab.config.settings import load_config
    from peftlab.training.train import run

    imports_s = time.time() - peftlab.PROCESS_STARTED  # torch, transformers, peftlab: what a warm start does ahead
    cfg = load_config(config_path)
    cut = cut_config(cfg, Path(folder))
    result = run(cut, overwrite=True)
    lines = read_jsonl(Path(folder) / cut.train.run_name / layout.METRICS)
    started = time.time()
    full = split_lengths(cfg)
    data_s = time.time() - started  # the full data's reading and tokenising, which the run does too
    out = {
        "imports_s": round(imports_s, 3),
        "wall_s": round(result["timeline"]["finished"] - result["timeline"]["process_started"], 3),
        "epoch_train_s": result["epoch_times_s"],
        "eval_s": {line["epoch"]: line["eval_time_s"] for line in lines},
        "peak_memory_mb": result["peak_memory_mb"],
        "peak_memory_kind": result["peak_memory_kind"],
        "group_by_length": result.get("group_by_length", False),
        "probe_lengths": split_lengths(cut),
        "lengths": full,
        "data_s": round(data_s, 3),
    }
    (Path(folder) / PROBE_FILE).write_text(json.dumps(out), encoding="utf-8")
    return out


if __name__ == "__main__":
    probe(sys.argv[1], sys.argv[2])
