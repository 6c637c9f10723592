"""Classification with a causal LM by generation (`classify_by: generate`).

Rows are read as for classification (same columns and label checks), turned into an instruction
("... Answer with one of: acceptable, unacceptable") whose answer is the label's word, and trained
as SFT on that word. Evaluation generates an answer and parses it tolerantly: case, punctuation and
white space do not matter, and the earliest label word (or alias) found as whole words wins.
Answers naming no label count as wrong (a class of their own) and are reported as `unparsed`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from peftlab.errors import UserError
from peftlab.runs.rundir import write_jsonl
from peftlab.tasks import classification, sft
from peftlab.tasks.chat import Conversation
from peftlab.tasks.metrics import compute_classification

TASK_TYPE = sft.TASK_TYPE
TOKEN_LEVEL_LOSS, LM_LOSS = sft.TOKEN_LEVEL_LOSS, sft.LM_LOSS
DEFAULT_METRIC = "accuracy"
METRICS = classification.METRICS
DEFAULT_INSTRUCTION = "Classify the text. Answer with one of: {choices}."

encode, build_model, build_collator, preprocess_logits = (
    sft.encode,
    sft.build_model,
    sft.build_collator,
    sft.preprocess_logits,
)


@dataclass
class Prepared:
    labels: list[str]
    words: list[list[str]]  # label index -> its words; the first is the trained answer
    rows: dict[str, list]  # split -> (text, pair, label index), as classification reads them
    examples: dict[str, sft.Examples]  # split -> Conversations
    notes: dict
    generated: dict = field(default_factory=dict)


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


def in_label_order(labels: list[str], configured) -> list[str]:
    """label_words as one entry per label, in label order. It is a list in that order, or (the shape
    `peftlab data convert` takes) a mapping {label: word}, or 'label=word' items from the command line
    (label_words=0=no,1=yes); a mapping must name every label and nothing else."""
    items = [str(e) for e in configured] if isinstance(configured, (list, tuple)) else []
    if items and all("=" in e for e in items):
        configured = {k.strip(): v.strip() for k, _, v in (e.partition("=") for e in items)}
    if not isinstance(configured, dict):
        return list(configured or [])
    unknown = [k for k in configured if k not in labels]
    missing = [label for label in labels if label not in configured]
    if unknown or missing:
        problems = [f"{', '.join(map(repr, unknown))} not among the labels"] if unknown else []
        problems += [f"no word for {', '.join(map(repr, missing))}"] if missing else []
        example = ", ".join(f"{label}: WORD" for label in labels[:3])
        raise UserError(
            f"label_words: {'; '.join(problems)} (the labels are {', '.join(labels)}); give one word per label, "
            f"e.g. {{{example}}}"
        )
    return [configured[label] for label in labels]


def label_words(labels: list[str], configured) -> list[list[str]]:
    """Words per label from `label_words` (in_label_order; aliases split by '|'), else the label names."""
    configured = in_label_order(labels, configured)
    if configured and len(configured) != len(labels):
        raise UserError(
            f"label_words: {len(configured)} entries for {len(labels)} labels ({', '.join(labels)}); "
            f"give one per label, in that order (aliases separated by '|')"
        )
    words = [[w.strip() for w in str(entry).split("|") if w.strip()] for entry in (configured or labels)]
    seen = {}
    for label, ws in zip(labels, words):
        if not ws or not all(normalize(w) for w in ws):
            raise UserError(f"label_words: label '{label}' needs a word with letters or digits, got {ws}")
        for w in ws:
            if seen.setdefault(normalize(w), label) != label:
                raise UserError(f"label_words: '{w}' is given for both '{seen[normalize(w)]}' and '{label}'")
    return words


def parse(text: str, words: list[list[str]]) -> int | None:
    """The label whose word occurs first in the answer (whole words; the longer word on a tie)."""
    padded = f" {normalize(text)} "
    best = None
    for index, ws in enumerate(words):
        for w in ws:
            pos = padded.find(f" {normalize(w)} ")
            if pos >= 0 and (best is None or (pos, -len(w)) < best[:2]):
                best = (pos, -len(w), index)
    return None if best is None else best[2]


def prepare(splits, cfg) -> Prepared:
    sft.check_settings(cfg)
    base = classification.prepare(splits, cfg)
    words = label_words(base.labels, cfg.task.label_words)
    instruction = (cfg.task.instruction or DEFAULT_INSTRUCTION).replace("{choices}", ", ".join(w[0] for w in words))
    notes = {"label_words": {label: ws for label, ws in zip(base.labels, words)}, "instruction": instruction}
    examples = {}
    for name, rows in base.examples.items():
        convs = [
            Conversation("", [(f"{instruction}\n\n{text}" + (f"\n{pair}" if pair else ""), words[y][0])])
            for text, pair, y in rows
        ]
        examples[name] = sft.Examples(convs, name, notes)
    return Prepared(base.labels, words, base.examples, examples, notes)


def label_indices(prepared: Prepared, split: str) -> list[int]:
    """Each example's label index, for `peftlab data check` (the encoded labels are answer tokens)."""
    return [y for _, _, y in prepared.rows[split]]


def build_compute_metrics(prepared: Prepared, split: str, env):
    def compute_metrics(eval_pred):
        generated = sft.generate_split(prepared, split, env)
        rows = prepared.rows[split][: len(generated)]
        parsed = [parse(g["generated"], prepared.words) for g in generated]
        out = compute_classification(
            [y for _, _, y in rows], [-1 if p is None else p for p in parsed], len(prepared.labels)
        )
        out["unparsed"] = parsed.count(None)
        out["unparsed_ratio"] = out["unparsed"] / max(1, len(parsed))
        prepared.generated[split] = [
            {
                "text": text,
                **({"text_pair": pair} if pair is not None else {}),
                "label": prepared.labels[y],
                "generated": g["generated"],
                "prediction": None if p is None else prepared.labels[p],
            }
            for (text, pair, y), g, p in zip(rows, generated, parsed)
        ]
        return out

    return compute_metrics


def write_predictions(path, prepared: Prepared, split: str, predictions, env) -> None:
    """text, gold label, generated answer and the label parsed from it (null: unparsed)."""
    write_jsonl(path, prepared.generated.get(split, []))
