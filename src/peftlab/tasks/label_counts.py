"""How often each label (or multiple choice's answer label) occurs in the training split: stored in
result.json as `label_counts_train`, so the report's majority-class baseline is the one a user would get
by always answering the training split's most frequent label, not one chosen by looking at the scored split."""

from __future__ import annotations

from collections import Counter

from peftlab.tasks.choices import Choice


def count_train_labels(prepared) -> dict[str, int] | None:
    """{label: count} over the training split, most frequent first; None for tasks without one label per
    example (QA, NER, SFT). Reads the Prepared shapes of classification (all ways) and multiple choice."""
    rows = getattr(prepared, "rows", None) or getattr(prepared, "examples", None)
    items = rows.get("train") if isinstance(rows, dict) else None
    items = getattr(items, "questions", items)  # mc_generate: the Choices behind its Conversations
    if not items:
        return None
    labels = getattr(prepared, "labels", None)
    counts: Counter = Counter()
    for item in items:
        if isinstance(item, tuple) and len(item) == 3 and labels:  # (text, pair, label index)
            counts[labels[item[2]]] += 1
        elif isinstance(item, Choice):
            counts[(labels or item.labels)[item.answer]] += 1
        else:
            return None
    return dict(counts.most_common())
