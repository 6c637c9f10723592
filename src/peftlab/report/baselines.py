"""What a method must beat to have learned anything: scored on the same split, and where the baseline answers
item by item, on the same items (so each method gets a paired test against it).

classification: the majority class, the training split's most frequent label (result.json
`label_counts_train`), or where a run predates that record, the scored split's own most frequent label (said
so: a baseline that has seen the answers). multiple choice: the answer label most frequent in training, ranked
first on every question, and chance (the expected score of a random ranking). QA: answering nothing. SFT: the
untuned model (the epoch-0 evaluation, on the validation split, without per-item scores: not paired).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np

from peftlab.report.items import Items, metric_of


def baselines_of(items: Items | None, results: list[dict], columns: list[str], split: str) -> list[dict]:
    """[{name, kind, note, scores: {column: value}, items: Items | None}], for the table's task."""
    if items is not None and items.kind == "classification":
        return [majority(items, results, columns, split)]
    if items is not None and items.kind == "multiple_choice":
        return [majority(items, results, columns, split), chance(items, columns)]
    if items is not None and items.kind == "qa":
        return [no_answer(items, columns)]
    if results and results[0].get("task") == "sft":
        return [untuned(results, columns)]
    return []


def scores_of(items: Items, columns: list[str]) -> dict:
    everything = np.arange(items.n)[None, :]
    out = {}
    for c in columns:
        f, _ = metric_of(items, c)
        if f is not None:
            out[c] = float(f(everything)[0])
    return out


def majority_label(items: Items, results: list[dict]) -> tuple[str, str]:
    """(label, where it comes from): the training split's counts when a run recorded them."""
    counts = next((r["label_counts_train"] for r in results if r.get("label_counts_train")), None)
    if counts:
        label = max(counts, key=lambda k: counts[k])  # max keeps the first of equal counts: most_common's order
        share = counts[label] / sum(counts.values())
        return str(label), f"the training split's most frequent label ({share:.1%} of it)"
    label = Counter(items.gold).most_common(1)[0][0]
    return str(label), (
        "the scored split's own most frequent label: these runs' result.json has no label_counts_train (made "
        "by an older peftlab), so the baseline has seen the answers and is a little harder to beat than it should be"
    )


def majority(items: Items, results: list[dict], columns: list[str], split: str) -> dict:
    label, source = majority_label(items, results)
    if items.kind == "multiple_choice":
        base = ranked_by_frequency(items, label, results)
    else:
        base = replace(items, predicted=[label] * items.n, means={})
        base.means["accuracy"] = np.array([g == label for g in items.gold], dtype=float)
    share = float(np.mean([g == label for g in items.gold]))
    note = f"always answers '{label}', {source}; it is {share:.1%} of the {split} split"
    return {
        "name": "majority class",
        "kind": "majority",
        "label": label,
        "note": note,
        "scores": scores_of(base, columns),
        "items": base,
    }


def ranked_by_frequency(items: Items, label: str, results: list[dict]) -> Items:
    """Multiple choice's majority baseline: each question's options ranked by how often each label is the
    answer in training (`label` first), then in option order."""
    counts = next((r["label_counts_train"] for r in results if r.get("label_counts_train")), None)
    counts = counts or Counter(items.gold)
    ranks = []
    for gold, options in zip(items.gold, items.options):
        ranked = sorted(options, key=lambda o: (o != label, -counts.get(o, 0), options.index(o)))
        ranks.append(ranked.index(gold) + 1 if gold in ranked else len(ranked) + 1)
    ranks = np.array(ranks, dtype=float)
    means = {"accuracy": (ranks == 1).astype(float)}
    for k in range(1, 11):
        means[f"map@{k}"] = np.where(ranks <= k, 1.0 / ranks, 0.0)
    return replace(items, predicted=[label] * items.n, means=means)


def chance(items: Items, columns: list[str]) -> dict:
    """Expected scores of a uniformly random ranking of each question's options: accuracy 1/n, MAP@k the mean
    over ranks 1..min(k, n) of 1/rank, each with probability 1/n."""
    sizes = np.array([max(1, len(o)) for o in items.options], dtype=float)
    scores = {}
    for c in columns:
        if c == "accuracy":
            scores[c] = float(np.mean(1 / sizes))
        elif c.startswith("map@") and c[4:].isdigit():
            k = int(c[4:])
            scores[c] = float(np.mean([sum(1 / r for r in range(1, int(min(k, n)) + 1)) / n for n in sizes]))
    return {
        "name": "chance",
        "kind": "chance",
        "items": None,
        "scores": scores,
        "note": "a random ranking of each question's options: an expectation, no items to pair",
    }


def no_answer(items: Items, columns: list[str]) -> dict:
    """Every answer empty: right exactly on the unanswerable questions (SQuAD 2.0's scoring of '')."""
    from peftlab.tasks.squad_metrics import score

    per = [score(list(g), "") for g in items.gold]
    means = {k: np.array([p[k] for p in per], dtype=float) for k in ("exact_match", "f1")}
    means["accuracy"] = means["exact_match"]
    base = replace(items, means=means)
    share = float(means["exact_match"].mean())
    return {
        "name": "no answer",
        "kind": "no_answer",
        "items": base,
        "scores": scores_of(base, columns),
        "note": f"answers nothing to every question: right on the {share:.1%} that have no answer",
    }


def untuned(results: list[dict], columns: list[str]) -> dict:
    scores = {}
    for c in columns:
        vals = [r["metrics_epoch0"][c] for r in results if isinstance((r.get("metrics_epoch0") or {}).get(c), float)]
        if vals:
            scores[c] = float(np.mean(vals))
    return {
        "name": "untuned model",
        "kind": "epoch0",
        "items": None,
        "scores": scores,
        "note": "the model before any update (epoch 0, validation split; no per-item scores, so not paired)",
    }
