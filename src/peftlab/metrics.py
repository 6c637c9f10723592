"""Metric functions over plain label lists, computed with scikit-learn."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, matthews_corrcoef, precision_recall_fscore_support

# Metrics where lower is better; every other metric is maximised when picking the best epoch.
LOWER_IS_BETTER = {"loss"}


def compute_classification(y_true, y_pred, num_labels: int) -> dict[str, float]:
    """accuracy, precision/recall/F1 (binary on label 1 for two classes, else macro), macro P/R/F1, MCC."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(num_labels))
    macro = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    out = {"accuracy": float(accuracy_score(y_true, y_pred))}
    if num_labels == 2:
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=[1], average="binary",
                                                     pos_label=1, zero_division=0)
    else:
        p, r, f = macro[:3]
    out.update(precision=float(p), recall=float(r), f1=float(f),
               precision_macro=float(macro[0]), recall_macro=float(macro[1]), f1_macro=float(macro[2]),
               mcc=float(matthews_corrcoef(y_true, y_pred)))
    return out


def is_better(metric: str, new: float, old: float | None) -> bool:
    """Whether `new` improves on `old` for this metric (None = nothing yet)."""
    if old is None:
        return True
    return new < old if metric in LOWER_IS_BETTER else new > old


def compute_ranking(scores, y_true, k: int) -> dict[str, float]:
    """accuracy and MAP@k over option scores (rows: questions). With one right answer per question,
    MAP@k as Kaggle defines it is 1/rank of that answer when it is in the top k, else 0, averaged.
    Written out because scikit-learn has no top-k cutoff for it (label_ranking_average_precision_score
    is the k = all case, which the tests compare against). Ties keep option order, as argmax does."""
    y_true = np.asarray(y_true)
    rank = np.argwhere(rank_options(scores) == y_true[:, None])[:, 1] + 1  # 1 = best
    out = {"accuracy": float(np.mean(rank == 1))}
    for kk in sorted({3, k}):
        out[f"map@{kk}"] = float(np.mean(np.where(rank <= kk, 1.0 / rank, 0.0)))
    return out


def rank_options(scores) -> np.ndarray:
    """Option indices per row, best first (stable: equal scores keep option order)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), axis=-1, kind="stable")
