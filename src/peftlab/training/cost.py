"""What a run costs, as arithmetic: optimizer steps per epoch, the evaluation passes a run makes, the padded
tokens its batches hold, and a run's time from per-token rates measured by a probe (sweep/estimate.py).

No torch here: `peftlab init` (sweep/scaffold.py) and `peftlab sweep --estimate` share these rules with
`peftlab train`, which is what they predict. A run (train.train_run) evaluates the validation split once before
training (eval_at_start), then after every epoch, each time with the splits besides train/validation/test
(callbacks.ExtraSplits); then, with the best weights, predicts every split but train once more.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

SHUFFLES = 20  # random epochs drawn to average a shuffled epoch's padding over


def steps_per_epoch(rows: int, batch_size: int, grad_accum: int = 1, world: int = 1) -> int:
    """Optimizer steps in one epoch: the Trainer's rule (a last short batch is a step; accumulation rounds up)."""
    return max(1, math.ceil(math.ceil(rows / (batch_size * world)) / grad_accum))


def evaluations(epochs: int, eval_at_start: bool) -> int:
    """Evaluations of the validation split in a run that trains every epoch (no early stop)."""
    return epochs + (1 if eval_at_start else 0)


def example_tokens(input_ids, prompt_ids=()) -> int:
    """Tokens an example takes in a batch: its length, or for several sequences (multiple choice) their
    number times the longest (they are padded to one length), plus the prompt that likelihood scoring
    runs once for all of them (prompt_ids)."""
    if input_ids and isinstance(input_ids[0], (list, tuple)):
        return len(input_ids) * max(len(s) for s in input_ids) + len(prompt_ids)
    return len(input_ids)


def padded_tokens(lengths: list[int], batch_size: int) -> int:
    """Tokens of the batches of `lengths` in this order, each padded to its longest row (DataCollatorWithPadding):
    what an evaluation pass computes over."""
    return sum(len(chunk) * max(chunk) for chunk in chunks(lengths, batch_size))


def shuffled_padded_tokens(lengths: list[int], batch_size: int, seed: int = 0, grouped: bool = False) -> float:
    """The padded tokens of one shuffled training epoch, averaged over SHUFFLES random orders: the Trainer's own
    order is another random one. grouped (group_by_length): transformers' LengthGroupedSampler cuts the shuffled
    order into megabatches of 50 batches and sorts each by length, so rows of a batch are near in length."""
    if not lengths:
        return 0.0
    rng, order, total = random.Random(seed), list(lengths), 0
    for _ in range(SHUFFLES):
        rng.shuffle(order)
        megabatches = chunks(order, 50 * batch_size) if grouped else [order]
        total += sum(padded_tokens(sorted(m, reverse=True) if grouped else m, batch_size) for m in megabatches)
    return total / SHUFFLES


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size) if items[i : i + size]]


def eval_tokens(lengths: dict[str, list[int]], eval_batch_size: int, epochs: int, eval_at_start: bool) -> int:
    """Padded tokens of every evaluation pass of a run: each evaluation scores validation and the extra splits,
    and the end predicts every split but train."""
    passes = {s: len(v) for s, v in lengths.items() if s != "train"}
    per_eval = sum(padded_tokens(lengths[s], eval_batch_size) for s in passes if s not in ("test",))
    predict = sum(padded_tokens(lengths[s], eval_batch_size) for s in passes)
    return per_eval * evaluations(epochs, eval_at_start) + predict


@dataclass
class Rates:
    """What a probe measured: seconds per padded token of a training step and of an evaluation, and the seconds
    that do not grow with the data (loading the model and the data, saving weights and checkpoints)."""

    train_s_per_token: float
    eval_s_per_token: float
    fixed_s: float
    imports_s: float  # importing torch, transformers and peftlab: a sweep's next run does it ahead, at the same time


def fixed_seconds(wall_s: float, imports_s: float, train_s: float, eval_s: float) -> float:
    """A probe run's seconds left when its imports, its training steps and its evaluations are taken out."""
    return max(0.0, wall_s - imports_s - train_s - eval_s)


def predict_run(
    rates: Rates, lengths: dict[str, list[int]], t, e, world: int = 1, imports: bool = False, grouped: bool = False
) -> dict:
    """A run's predicted time per epoch and total time (seconds) on data of these token lengths, with training
    settings `t` (epochs, batch_size, grad_accum) and evaluation settings `e` (eval_batch_size, eval_at_start).
    imports: the run's process imports at its turn (a sweep's first run); later runs were started ahead.
    grouped: its training batches are length-grouped (train.group_by_length as the probe resolved it)."""
    train = lengths.get("train", [])
    epoch_tokens = shuffled_padded_tokens(train, t.batch_size * world, grouped=grouped)
    epoch_s = rates.train_s_per_token * epoch_tokens
    eval_s = rates.eval_s_per_token * eval_tokens(lengths, e.eval_batch_size, t.epochs, e.eval_at_start)
    run_s = rates.fixed_s + t.epochs * epoch_s + eval_s + (rates.imports_s if imports else 0.0)
    return {
        "steps_per_epoch": steps_per_epoch(len(train), t.batch_size, t.grad_accum, world),
        "time_per_epoch_s": round(epoch_s, 2),
        "eval_s": round(eval_s, 2),
        "run_s": round(run_s, 2),
    }
