"""`peftlab data check`: load a config's data and run the task's prepare() and encode() exactly as
`peftlab train` does (no model weights loaded), then print rows, label distribution and token-length
percentiles."""

from __future__ import annotations

import copy
from collections import Counter

from peftlab.data.formats import skipped_lines

MAX_LENGTH_LIFTED = 1_000_000  # `check` encodes with this max_length to see untruncated lengths


def percentiles(lengths: list[int]) -> dict[str, int]:
    """Nearest-rank percentiles: p90 = the smallest length that at least 90% of examples do not exceed."""
    import numpy as np

    qs = np.percentile(lengths, [50, 90, 99], method="inverted_cdf")
    return {"p50": int(qs[0]), "p90": int(qs[1]), "p99": int(qs[2]), "max": int(max(lengths))}


def label_counts(labels: list, names: list | None) -> Counter | None:
    """Counts of label names (or values), from the encoded labels: ints, or lists of ints with -100 ignored."""
    if not labels:
        return None
    if isinstance(labels[0], list):
        if not names:  # token ids of an LM target, not labels
            return None
        labels = [l for row in labels for l in row]
    labels = [l for l in labels if l != -100]
    return Counter(names[l] if names else l for l in labels)


def example_length(ids: list, prompt_ids: list = ()) -> int:
    """Tokens of one encoded example. A multiple-choice (or multi-token likelihood) example holds one
    sequence per option, after the prompt they share where that is kept apart (prompt_ids, likelihood
    scoring): its length is the longest option's, prompt included, which is what max_length cuts."""
    return len(prompt_ids) + max(map(len, ids)) if ids and isinstance(ids[0], list) else len(ids)


def label_ids(task, prepared, split: str, enc) -> list:
    """The encoded labels that index prepared.labels; a task whose `labels` are an answer's token ids
    (classify_by generate) names each example's label index through its own label_indices()."""
    from peftlab.tasks.contract import read_hook

    if label_indices := read_hook(task, "label_indices"):
        return label_indices(prepared, split)
    return enc["labels"] if "labels" in enc.column_names else []


def check(cfg) -> str:
    """Validate cfg's data as `peftlab train` would (no model weights loaded) and summarize it."""
    from peftlab.data.mixing import record_mix
    from peftlab.data.splits import load_splits
    from peftlab.models.loading import load_tokenizer, resolve_model
    from peftlab.tasks.registry import task_of

    task = task_of(cfg)
    splits = load_splits(cfg.data, cfg.train.seed)
    prepared = task.prepare(splits, cfg)
    tokenizer = load_tokenizer(resolve_model(cfg.model.model, cfg.model.cache_dir).path, cfg.model.trust_remote_code)
    lifted = copy.deepcopy(cfg)
    lifted.task.max_length = MAX_LENGTH_LIFTED
    limit = cfg.task.max_length
    names = getattr(prepared, "labels", None)
    lines = [
        f"task {cfg.task.task}, model {cfg.model.model}, max_length {limit}",
        "",
        "tokens per example (special tokens included):",
        f"{'split':<11}{'rows':>7}{'p50':>6}{'p90':>6}{'p99':>6}{'max':>6}  truncated  source",
    ]
    counts = {}
    for name, examples in prepared.examples.items():
        enc = task.encode(examples, tokenizer, lifted)
        prompts = enc["prompt_ids"] if "prompt_ids" in enc.column_names else [()] * len(enc)
        lengths = [example_length(ids, prompt) for ids, prompt in zip(enc["input_ids"], prompts)]
        p = percentiles(lengths)
        cut = sum(n > limit for n in lengths)
        lines.append(
            f"{name:<11}{len(examples):>7}{p['p50']:>6}{p['p90']:>6}{p['p99']:>6}{p['max']:>6}"
            f"  {cut:>4} ({cut / len(lengths):.1%})  {splits[name].source}"
        )
        counts[name] = label_counts(label_ids(task, prepared, name, enc), names)
    if any(counts.values()):
        lines.append("")
        for name, c in counts.items():
            total = sum(c.values())
            lines.append(
                f"labels {name}: "
                + ", ".join(
                    f"{k} {v} ({v / total:.1%})"
                    for k, v in (
                        sorted(c.items(), key=lambda kv: str(kv[0])) if not names else [(l, c[l]) for l in names]
                    )
                )
            )
    lines += skipped_lines(splits["train"].skipped)
    for part in record_mix(splits["train"]) or []:
        val = f", {part['validation']} to validation" if part["validation"] else ""
        lines.append(
            f"mix {cfg.data.mix}: {part['file']}: {part['rows_kept']} of {part['rows_read']} rows kept{val}, "
            f"{part['rows_used']} rows in training"
        )
    for key, value in getattr(prepared, "notes", {}).items():
        lines.append(f"note {key}: {value}")
    lines += [
        "",
        f"OK: the data validates for task {cfg.task.task} (tokens counted with {cfg.model.model}'s "
        f"tokenizer; truncated = longer than max_length {limit})",
    ]
    return "\n".join(lines)
