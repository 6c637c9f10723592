"""A run's per-item predictions (predictions_<split>.jsonl) as arrays, and each metric as a function of a
set of item indices, so the paired bootstrap can score any resample of the items without the model.

Every metric is recomputed the way the task computes it over the whole split: classification from gold and
predicted labels (a confusion matrix per resample), multiple choice from the rank of the right option, QA
from the per-question exact_match/f1 the file holds, NER from per-sentence entity counts (seqeval's default
mode, as tasks/ner.py scores), SFT from per-item scores of the generated texts. A metric that is not a
function of per-item numbers (SFT's loss, corpus BLEU) has no function here, and the reason is said.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from peftlab.runs import layout
from peftlab.runs.rundir import UnreadableFile, read_jsonl

Metric = Callable[[np.ndarray], np.ndarray]  # item indices (resamples, items) -> one value per resample
NO_LABEL = "<no label>"  # an unparsed generated answer: wrong, a class of its own (as compute_classification)


@dataclass
class Items:
    """One run's scored items of one split."""

    kind: str  # classification, multiple_choice, qa, ner, sft
    keys: list[str]  # what each item is (its text and gold): two runs pair only on equal keys
    gold: list = field(default_factory=list)  # gold label (classification, multiple choice)
    predicted: list = field(default_factory=list)  # predicted label, NO_LABEL when unparsed
    labels: list[str] = field(default_factory=list)  # the label set, in the task's order
    means: dict[str, np.ndarray] = field(default_factory=dict)  # metrics that are a mean of per-item scores
    counts: dict[str, np.ndarray] = field(default_factory=dict)  # NER: per-sentence tp / pred / gold / words
    rows: list[dict] = field(default_factory=list)  # SFT: kept to score texts only when asked
    options: list[list[str]] = field(default_factory=list)  # multiple choice: each question's option labels

    @property
    def n(self) -> int:
        return len(self.keys)


def read_items(run_dir: Path | None, split: str, result: dict) -> tuple[Items | None, str]:
    """(Items, '') or (None, why not): the file is missing, empty, unreadable or of an unknown shape."""
    if run_dir is None:
        return None, "the run's folder is not known"
    path = Path(run_dir) / layout.predictions_file(split)
    try:
        rows = read_jsonl(path)
    except UnreadableFile as e:
        return None, str(e)
    if not rows:
        return None, f"{path.name} is missing or empty in {Path(run_dir).name}"
    for needs, build in READERS:
        if needs <= rows[0].keys():
            return build(rows, result), ""
    return None, f"{path}: rows of an unknown shape (keys {', '.join(sorted(rows[0]))})"


def key_of(*parts) -> str:
    return json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str)


def read_classification(rows: list[dict], result: dict) -> Items:
    gold = [str(r["label"]) for r in rows]
    predicted = [NO_LABEL if r.get("prediction") is None else str(r["prediction"]) for r in rows]
    labels = [str(x) for x in result.get("labels") or []] or sorted(set(gold))
    keys = [key_of(r.get("text"), r.get("text_pair"), r["label"]) for r in rows]
    return Items(
        "classification",
        keys,
        gold,
        predicted,
        labels,
        {"accuracy": np.array([g == p for g, p in zip(gold, predicted)], dtype=float)},
    )


def rank_of(row: dict) -> int:
    """1-based rank of the right option: its place in top_k, else in the probabilities' order (ties keep
    option order, as compute_ranking does)."""
    if row["answer"] in (row.get("top_k") or []):
        return row["top_k"].index(row["answer"]) + 1
    probs = row.get("probabilities") or {}
    order = sorted(probs, key=lambda k: -probs[k])  # sorted() is stable: equal scores keep option order
    return order.index(row["answer"]) + 1 if row["answer"] in order else len(probs) + 1


def read_multiple_choice(rows: list[dict], result: dict) -> Items:
    ranks = np.array([rank_of(r) for r in rows], dtype=float)
    means = {"accuracy": (ranks == 1).astype(float)}
    for k in range(1, 11):  # map@k as compute_ranking: 1/rank of the right option within the top k, else 0
        means[f"map@{k}"] = np.where(ranks <= k, 1.0 / ranks, 0.0)
    keys = [key_of(r.get("question"), r.get("options"), r["answer"]) for r in rows]
    options = [list(r.get("options") or r.get("probabilities") or {}) for r in rows]
    labels = sorted({lab for o in options for lab in o})
    gold, predicted = [r["answer"] for r in rows], [r["prediction"] for r in rows]
    return Items("multiple_choice", keys, gold, predicted, labels, means, options=options)


def read_qa(rows: list[dict], result: dict) -> Items:
    means = {k: np.array([float(r[k]) for r in rows]) for k in ("exact_match", "f1")}
    means["accuracy"] = means["exact_match"]  # QA's accuracy is its exact match (squad_metrics.aggregate)
    keys = [key_of(r.get("id"), r.get("question"), r.get("answers")) for r in rows]
    return Items("qa", keys, [r.get("answers") or [] for r in rows], means=means)


def read_ner(rows: list[dict], result: dict) -> Items:
    from seqeval.metrics.sequence_labeling import get_entities

    tp, n_pred, n_gold, right, words = [], [], [], [], []
    for r in rows:
        gold, pred = set(get_entities(list(r["tags"]))), set(get_entities(list(r["predicted"])))
        tp.append(len(gold & pred))
        n_pred.append(len(pred))
        n_gold.append(len(gold))
        right.append(sum(g == p for g, p in zip(r["tags"], r["predicted"])))
        words.append(len(r["tags"]))
    counts = {
        k: np.array(v, dtype=float)
        for k, v in zip(("tp", "pred", "gold", "right", "words"), (tp, n_pred, n_gold, right, words))
    }
    keys = [key_of(r["tokens"], r["tags"]) for r in rows]
    return Items("ner", keys, counts=counts)


def read_sft(rows: list[dict], result: dict) -> Items:
    return Items("sft", [key_of(r.get("prompt"), r.get("reference")) for r in rows], rows=rows)


READERS = (  # the first whose keys a row has reads the file
    ({"tokens", "tags", "predicted"}, read_ner),
    ({"answers", "prediction", "exact_match", "f1"}, read_qa),
    ({"options", "answer", "prediction"}, read_multiple_choice),
    ({"label", "prediction"}, read_classification),
    ({"reference", "generated"}, read_sft),
)


# -- metrics as functions of an index set -----------------------------------------------------------------

SFT_PER_ITEM = ("bleu4", "rouge1", "rouge2", "rougeL", "exact_match")  # compute_generation's per-item means


def metric_of(items: Items, name: str) -> tuple[Metric | None, str]:
    """(function of item indices, '') or (None, why this metric cannot be recomputed on resampled items)."""
    if items.kind == "classification":
        return classification_metric(items, name)
    if items.kind == "ner":
        return ner_metric(items, name)
    if items.kind == "sft" and name in SFT_PER_ITEM and name not in items.means:
        items.means.update(score_texts(items.rows))
    if name in items.means:
        scores = items.means[name]
        return (lambda idx: scores[idx].mean(axis=-1)), ""
    if items.kind == "sft":
        return None, (
            f"{name} is not a mean of per-item scores (the predictions hold generated texts; {', '.join(SFT_PER_ITEM)} "
            f"are recomputed from them per item, {name} is not)"
        )
    return None, f"the predictions of this {items.kind} task hold no per-item score for {name}"


def score_texts(rows: list[dict]) -> dict[str, np.ndarray]:
    """Each generated text's own scores (compute_generation of one pair): their mean is the task's metric."""
    from peftlab.tasks.metrics import compute_generation

    per = [compute_generation([str(r["generated"])], [str(r["reference"])]) for r in rows]
    return {k: np.array([p[k] for p in per], dtype=float) for k in SFT_PER_ITEM}


def label_indices(items: Items) -> tuple[np.ndarray, np.ndarray, int]:
    """Gold and predicted label indices; an unparsed or unknown prediction is index K (its own class)."""
    index = {lab: i for i, lab in enumerate(items.labels)}
    k = len(items.labels)
    gold = np.array([index.get(g, k) for g in items.gold])
    pred = np.array([index.get(p, k) for p in items.predicted])
    return gold, pred, k


def confusion(gold: np.ndarray, pred: np.ndarray, k1: int, idx: np.ndarray) -> np.ndarray:
    """(resamples, k1, k1) confusion matrices of the resampled items, by one bincount."""
    b = idx.shape[0]
    flat = (np.arange(b)[:, None] * k1 * k1 + gold[idx] * k1 + pred[idx]).ravel()
    return np.bincount(flat, minlength=b * k1 * k1).reshape(b, k1, k1).astype(float)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num/den, 0 where den is 0 (scikit-learn's and seqeval's zero_division=0)."""
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den != 0)


def classification_metric(items: Items, name: str) -> tuple[Metric | None, str]:
    """compute_classification's metrics from confusion matrices: binary scores of label 1 for two labels,
    macro over the labels otherwise; mcc is scikit-learn's multiclass formula over the matrix."""
    gold, pred, k = label_indices(items)
    binary = k == 2 and not name.endswith("_macro")
    base = name.removesuffix("_macro")
    if base not in ("accuracy", "precision", "recall", "f1", "mcc"):
        return None, f"{name} is not recomputed from gold and predicted labels"

    def compute(idx: np.ndarray) -> np.ndarray:
        c = confusion(gold, pred, k + 1, idx)
        if base == "accuracy":
            return np.trace(c, axis1=1, axis2=2) / idx.shape[1]
        if base == "mcc":
            t, p, s = c.sum(2), c.sum(1), c.sum((1, 2))
            hit = np.trace(c, axis1=1, axis2=2)
            cov = hit * s - (t * p).sum(1)
            den = np.sqrt((s**2 - (p * p).sum(1)) * (s**2 - (t * t).sum(1)))
            return ratio(cov, den)
        tp = np.diagonal(c, axis1=1, axis2=2)[:, :k]
        fp, fn = c.sum(1)[:, :k] - tp, c.sum(2)[:, :k] - tp
        per = {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn)}
        return per[base][:, 1] if binary else per[base].mean(1)

    return compute, ""


def ner_metric(items: Items, name: str) -> tuple[Metric | None, str]:
    """seqeval's micro entity scores (default mode) and word accuracy from per-sentence counts."""
    c = items.counts
    parts = {"precision": ("tp", "pred"), "recall": ("tp", "gold"), "accuracy": ("right", "words")}
    if name == "f1":
        return (lambda idx: ratio(2 * c["tp"][idx].sum(-1), (c["pred"][idx] + c["gold"][idx]).sum(-1))), ""
    if name in parts:
        num, den = parts[name]
        return (lambda idx: ratio(c[num][idx].sum(-1), c[den][idx].sum(-1))), ""
    return None, f"{name} is not recomputed from per-sentence entity counts (only f1, precision, recall, accuracy)"


def correct_of(items: Items) -> np.ndarray | None:
    """Per item, right (1) or wrong (0), for McNemar's test; None where the task has no such answer."""
    if items.kind in ("classification", "multiple_choice"):
        return np.array([g == p for g, p in zip(items.gold, items.predicted)], dtype=bool)
    if items.kind == "qa":
        return items.means["exact_match"] >= 1
    return None


def pairing_problem(a: Items, b: Items) -> str:
    """'' when the two runs scored the same items in the same order, else what differs."""
    if a.n != b.n:
        return f"{a.n} vs {b.n} items"
    if a.keys != b.keys:
        first = next(i for i, (x, y) in enumerate(zip(a.keys, b.keys)) if x != y)
        return f"item {first + 1} differs (text or gold label), so the items are not the same or not in the same order"
    return ""
