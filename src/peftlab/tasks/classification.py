"""Sequence classification: single sentences or sentence pairs, labels as strings or ints.

Encoders get transformers' *ForSequenceClassification head (with a choice of [CLS] pooler or mean
pooling); decoder LLMs get the last-token score head, with the pad token taken care of.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peftlab.data.formats import MISSING_SHOWN, Split, is_missing, label_key, label_kind
from peftlab.data.mixing import reading_key
from peftlab.errors import UserError
from peftlab.models.loading import load_for_classification
from peftlab.runs.rundir import write_jsonl
from peftlab.tasks.metrics import compute_classification

TASK_TYPE = "SEQ_CLS"
# The head's loss is already a mean over examples: the Trainer must divide it by the
# gradient-accumulation steps and must not rescale it by token counts across devices
# (that treatment is for token-summed LM losses; see build_trainer).
TOKEN_LEVEL_LOSS = False
DEFAULT_METRIC = "accuracy"
REPORT_METRICS = ("accuracy", "f1", "precision", "recall", "mcc")  # the sweep report's columns
METRICS = ("accuracy", "precision", "recall", "f1", "precision_macro", "recall_macro", "f1_macro", "mcc", "loss")


@dataclass
class Prepared:
    labels: list[str]  # index -> label name
    examples: dict[str, list[tuple[str, str | None, int]]]  # split -> (text, pair, label index)


def sort_labels(labels: set[str]) -> list[str]:
    ints = all(l.lstrip("-").isdigit() for l in labels)
    return sorted(labels, key=int) if ints else sorted(labels)


def check_columns(split: Split, names: list[str]) -> None:
    have = list(split.records[0])
    for name, key in names:
        if name not in split.records[0]:
            raise UserError(
                f"{split.source}: column '{name}' not found (columns: {', '.join(map(str, have))}); "
                f"set `{key}:` to one of them"
                + (
                    ""
                    if split.source.endswith((".json", ".jsonl"))
                    else ", or name the columns with `columns:` if the file has no header"
                )
            )


def check_types(source: str, row: int, rec: dict, data) -> None:
    """JSON rows can hold anything: texts must be text, a label one value (not a list read as "['neg']")."""
    for col in (data.text_column, data.text_pair_column):
        if col and rec.get(col) is not None and not isinstance(rec[col], str):
            raise UserError(
                f"{source}: row {row}: column '{col}' must be text, got {type(rec[col]).__name__} "
                f"({rec[col]!r}); fix the row or point `text_column:` at the text"
            )
    label = rec[data.label_column]
    if not isinstance(label, (str, int, float, bool)):
        raise UserError(
            f"{source}: row {row}: label must be text or a number, got {type(label).__name__} "
            f"({label!r}); one label per row, fix the row"
        )


def leave_out_unlabelled(split: Split, data, skipped: list) -> None:
    """A row whose label is a missing-value marker (NaN, empty, null, ...: what pandas writes for an
    empty cell) is refused naming its row, or, with `on_bad_lines: skip`, left out of the split and
    noted in `skipped` (result.json's skipped_rows). A marker listed in label_names is a label."""
    check_columns(split, [(data.label_column, "label_column")])
    named = {label_key(n).lower() for n in data.label_names}
    keep = []
    for i, (rec, row) in enumerate(zip(split.records, split.rows)):
        label = rec.get(data.label_column)
        if not is_missing(label) or label_key(label).lower() in named:
            keep.append(i)
            continue
        if reading_key(data, row, "on_bad_lines") != "skip":
            way_out = "set `on_bad_lines: skip` to leave such rows out (counted)"
            if label is None or str(label).strip() == "":
                raise UserError(f"{split.source}: row {row}: empty text or label; fix or remove the row, or {way_out}")
            raise UserError(
                f"{split.source}: row {row}: label {label!r} marks a missing value ({MISSING_SHOWN}), not a "
                f"class; fill it in or remove the row, {way_out}, or list it in `label_names:` if it is a real label"
            )
        skipped.append(
            {"file": getattr(row, "file", split.source), "line": int(row), "reason": f"missing label {label!r}"}
        )
    if not keep:
        raise UserError(
            f"{split.source}: every row's label in column '{data.label_column}' is missing ({MISSING_SHOWN}); "
            f"is `label_column:` the right column?"
        )
    if len(keep) < len(split.records):  # in place: what reads the split later (record_mix) counts what is used
        split.records, split.rows = [split.records[i] for i in keep], [split.rows[i] for i in keep]


def read_split(split: Split, data) -> list[tuple[str, str | None, str]]:
    wanted = [(data.text_column, "text_column"), (data.label_column, "label_column")]
    if data.text_pair_column:
        wanted.append((data.text_pair_column, "text_pair_column"))
    check_columns(split, wanted)
    out = []
    first = {}  # a row of each kind of label value: numbers and names in one column are two label sets
    for rec, row in zip(split.records, split.rows):
        text, label = rec.get(data.text_column), rec.get(data.label_column)
        if text is None or label is None or label_key(label) == "":
            raise UserError(f"{split.source}: row {row}: empty text or label; fix or remove the row")
        check_types(split.source, row, rec, data)
        first.setdefault(label_kind(label), (row, label))
        if len(first) > 1:
            (r1, l1), (r2, l2) = first.values()
            raise UserError(
                f"{split.source}: column '{data.label_column}' mixes kinds of labels: row {r1} has "
                f'{l1!r}, row {r2} has {l2!r} (1 and "pos" would be two different labels); write every '
                f"label the same way: names, or numbers (with `label_names:` to name them)"
            )
        pair = str(rec.get(data.text_pair_column) or "") if data.text_pair_column else None
        out.append((str(text), pair, label_key(label)))
    return out


def prepare(splits: dict[str, Split], cfg) -> Prepared:
    """Check columns, fix the label order, and refuse labels that training never shows."""
    data = cfg.data
    for split in splits.values():
        leave_out_unlabelled(split, data, splits["train"].skipped)
    raw = {name: read_split(split, data) for name, split in splits.items()}
    seen = {label for _, _, label in raw["train"]}
    labels = [str(l) for l in data.label_names] or sort_labels(seen)
    if len(labels) < 2:
        raise UserError(
            f"{splits['train'].source}: only one label ({labels[0]}) in the training data; "
            f"classification needs at least two"
        )
    index = {l: i for i, l in enumerate(labels)}
    examples = {}
    for name, rows in raw.items():
        for (_, _, label), row in zip(rows, splits[name].rows):
            if label not in index:
                hint = "never seen in train_file" if not data.label_names else "not in label_names"
                raise UserError(
                    f"{splits[name].source}: row {row}: label '{label}' {hint} "
                    f"(labels: {', '.join(labels)}); fix the row or set `label_names:`"
                )
        examples[name] = [(t, p, index[l]) for t, p, l in rows]
    return Prepared(labels, examples)


def encode(examples, tokenizer, cfg):
    """Tokenize (text, pair, label) triples into a datasets.Dataset with `labels`."""
    import datasets

    texts = [t for t, _, _ in examples]
    pairs = [p for _, p, _ in examples] if examples and examples[0][1] is not None else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=cfg.task.max_length)
    enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    enc["labels"] = [l for _, _, l in examples]
    return datasets.Dataset.from_dict(enc)


def build_model(resolved, prepared: Prepared, cfg, tokenizer):
    model_cfg = cfg.model
    model, pooling = load_for_classification(
        resolved,
        prepared.labels,
        model_cfg.pooling,
        model_cfg.dtype,
        tokenizer.pad_token_id,
        model_cfg.trust_remote_code,
    )
    return model, {"pooling": pooling}


def build_collator(tokenizer, cfg):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


def build_compute_metrics(prepared: Prepared, split: str, env):
    n = len(prepared.labels)

    def compute_metrics(eval_pred):
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        return compute_classification(eval_pred.label_ids, np.argmax(logits, axis=-1), n)

    return compute_metrics


def write_predictions(path: Path, prepared: Prepared, split: str, logits: np.ndarray, env) -> None:
    """One JSON line per example: text, pair, gold label, predicted label, probabilities."""
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    rows = []
    for (text, pair, gold), p in zip(prepared.examples[split], probs):
        row = {
            "text": text,
            "label": prepared.labels[gold],
            "prediction": prepared.labels[int(p.argmax())],
            "probabilities": {l: round(float(x), 6) for l, x in zip(prepared.labels, p)},
        }
        if pair is not None:
            row["text_pair"] = pair
        rows.append(row)
    write_jsonl(path, rows)
