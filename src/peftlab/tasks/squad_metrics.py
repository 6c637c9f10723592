"""SQuAD 1.1/2.0 scoring, as the official evaluate-v2.0.py script does it.

Written by hand because no pinned package ships it (HF `evaluate` is not a dependency and
transformers 5 dropped transformers.data.metrics.squad_metrics). The normalisation, the token F1,
the max over gold answers, the no-answer rule (an empty gold or prediction scores 1 only when both
are empty) and the threshold search follow that script line by line. Scores are fractions (0-1)
like every other peftlab metric; the official script prints them times 100. The official EM is
called exact_match here (the name peftlab gives exact match in every task, as Hugging Face evaluate does).
"""

from __future__ import annotations

import collections
import re
import string

ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in PUNCT)
    return " ".join(ARTICLES.sub(" ", s).split())


def overlap(gold: str, pred: str) -> tuple[float, float, float]:
    """Token precision, recall and F1 of one prediction against one gold answer."""
    g, p = normalize_answer(gold).split(), normalize_answer(pred).split()
    if not g or not p:  # no-answer: right only when both are empty
        return (float(g == p),) * 3
    same = sum((collections.Counter(g) & collections.Counter(p)).values())
    if same == 0:
        return 0.0, 0.0, 0.0
    precision, recall = same / len(p), same / len(g)
    return precision, recall, 2 * precision * recall / (precision + recall)


def gold_texts(answers: list[str]) -> list[str]:
    """The official script's gold list: answers that normalise to something, else [''] (no answer)."""
    return [a for a in answers if normalize_answer(a)] or [""]


def score(golds: list[str], pred: str) -> dict[str, float]:
    """exact_match, f1 (max over golds) and the precision/recall of the gold that gives the best F1."""
    golds = gold_texts(golds)
    exact = max(float(normalize_answer(g) == normalize_answer(pred)) for g in golds)
    precision, recall, f1 = max((overlap(g, pred) for g in golds), key=lambda t: t[2])
    return {"exact_match": exact, "f1": f1, "precision": precision, "recall": recall}


def aggregate(golds: list[list[str]], preds: list[str]) -> dict[str, float]:
    """Averages over questions: exact_match, f1 (= the official EM/F1), accuracy (= exact_match), precision,
    recall, and the HasAns_/NoAns_ breakdown with counts."""
    rows = [score(g, p) for g, p in zip(golds, preds)]
    has = [gold_texts(g) != [""] for g in golds]
    mean = lambda key, keep: sum(r[key] for r, k in zip(rows, keep) if k) / max(1, sum(keep))
    out = {k: mean(k, [True] * len(rows)) for k in ("exact_match", "f1", "precision", "recall")}
    out["accuracy"] = out["exact_match"]
    for name, keep in (("HasAns", has), ("NoAns", [not h for h in has])):
        if any(keep):
            out.update(
                {
                    f"{name}_exact_match": mean("exact_match", keep),
                    f"{name}_f1": mean("f1", keep),
                    f"{name}_total": float(sum(keep)),
                }
            )
    return out


def best_threshold(golds: list[list[str]], preds: list[str], na_scores: list[float]) -> tuple[float, float]:
    """The official find_best_thresh for F1: `preds` are the best non-null answers, `na_scores` how much
    more the model believes in no answer (answer is null when na_score > threshold). Returns
    (best F1, threshold). Starts from 'every answer null', then admits answers in order of na_score.
    The official script starts at threshold 0.0 for probabilities; with unbounded scores the
    all-null start is any value below them all."""
    f1 = [score(g, p)["f1"] for g, p in zip(golds, preds)]
    has = [gold_texts(g) != [""] for g in golds]
    current = best = float(sum(not h for h in has))
    threshold = min(na_scores) - 1.0 if na_scores else 0.0
    for i in sorted(range(len(golds)), key=lambda i: na_scores[i]):
        current += f1[i] if has[i] else (-1.0 if preds[i] else 0.0)
        if current > best:
            best, threshold = current, na_scores[i]
    return best / max(1, len(golds)), threshold
