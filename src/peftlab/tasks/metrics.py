"""Metric functions over plain label lists (scikit-learn) and generated texts (sacrebleu, rouge-score)."""

from __future__ import annotations

import re

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    matthews_corrcoef,
    precision_recall_fscore_support,
)

# Metrics where lower is better; every other metric is maximised when picking the best epoch.
LOWER_IS_BETTER = {"loss"}


def compute_classification(y_true, y_pred, num_labels: int) -> dict[str, float]:
    """accuracy, precision/recall/F1 (binary on label 1 for two classes, else macro), macro P/R/F1, MCC.
    A prediction of -1 (no label) is wrong: a class of its own."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(num_labels))
    macro = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    out = {"accuracy": float(accuracy_score(y_true, y_pred))}
    if num_labels == 2:  # binary scores of label 1; "micro" over that one label equals average="binary"
        # and also admits the -1 predictions (unparsed answers) of classify_by=generate
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=[1], average="micro", zero_division=0)
    else:
        p, r, f = macro[:3]
    out.update(
        precision=float(p),
        recall=float(r),
        f1=float(f),
        precision_macro=float(macro[0]),
        recall_macro=float(macro[1]),
        f1_macro=float(macro[2]),
        mcc=float(matthews_corrcoef(y_true, y_pred)),
    )
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


# Chinese, Japanese and Korean script: such text has no spaces between words.
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


class JiebaWords:
    """A rouge-score tokenizer for CJK text: rouge-score's default keeps only [a-z0-9] and so deletes
    Chinese entirely; jieba segments it into words (punctuation and spaces dropped, Latin lowercased)."""

    def tokenize(self, text: str) -> list[str]:
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)
        return [w.lower() for w in jieba.cut(text) if re.search(r"\w", w)]


def compute_generation(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Scores of generated texts against one reference each, all fractions (0-1) like every peftlab metric.

    bleu4: mean sentence BLEU-4 (sacrebleu: exponential smoothing, effective order), the per-example
    mean LLaMA-Factory reports as bleu-4; bleu4_corpus: sacrebleu's corpus BLEU-4; rouge1/rouge2/rougeL:
    mean F1 from rouge-score; exact_match: answers equal to the reference after trimming and collapsing
    white space. A pair with CJK text uses sacrebleu's 'zh' tokenizer and jieba words for ROUGE.
    sacrebleu's scores are 0-100, so they are divided by 100 here.
    """
    import sacrebleu
    from rouge_score import rouge_scorer

    if not predictions:
        return {}
    kinds = ["rouge1", "rouge2", "rougeL"]
    scorers = {False: rouge_scorer.RougeScorer(kinds), True: rouge_scorer.RougeScorer(kinds, tokenizer=JiebaWords())}
    sums = dict.fromkeys(["bleu4", *kinds, "exact_match"], 0.0)
    for pred, ref in zip(predictions, references):
        cjk = bool(CJK.search(pred) or CJK.search(ref))
        sums["bleu4"] += sacrebleu.sentence_bleu(pred, [ref], tokenize="zh" if cjk else "13a").score / 100
        scores = scorers[cjk].score(ref, pred)
        for kind in kinds:
            sums[kind] += scores[kind].fmeasure
        sums["exact_match"] += float(" ".join(pred.split()) == " ".join(ref.split()))
    out = {k: v / len(predictions) for k, v in sums.items()}
    cjk = any(CJK.search(r) for r in references)
    out["bleu4_corpus"] = sacrebleu.corpus_bleu(predictions, [references], tokenize="zh" if cjk else "13a").score / 100
    return out
