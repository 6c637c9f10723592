"""Named-entity recognition as token classification: CoNLL / IOB2 column files or JSON tokens + tags.

Each word's tag goes on its first sub-token (tokenizer word_ids()); its other sub-tokens and the
special tokens get -100, which the loss ignores. Tags are IOB2: an I-X that continues no X entity
(after O, at the start, or after a B-Y/I-Y) is repaired to B-X and counted per split. Scores come from
seqeval: entity precision/recall/F1 (conlleval's default mode, and strict IOB2), per entity type, and
word accuracy. Encoders get transformers' *ForTokenClassification `classifier`, decoder LLMs its
`score` head (there each token sees only the words to its left).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peftlab.data.formats import Split, detect_format
from peftlab.errors import UserError
from peftlab.models.loading import load_for_token_classification
from peftlab.models.methods import method_of
from peftlab.runs.rundir import write_jsonl

TASK_TYPE = "TOKEN_CLS"
TOKEN_LEVEL_LOSS = False  # the head's loss is a mean over the batch's labelled tokens
DEFAULT_METRIC = "f1"
METRICS = (
    "f1",
    "precision",
    "recall",
    "f1_strict",
    "precision_strict",
    "recall_strict",
    "f1_macro",
    "accuracy",
    "loss",
)
IGNORE = -100


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[int]  # label index per word, after BIO repair
    kept: list[int] | None = None  # words that got a first sub-token (set by encode)


@dataclass
class Prepared:
    labels: list[str]  # index -> tag
    examples: dict[str, list[Sentence]]
    repairs: dict[str, int]  # split -> invalid I- tags turned into B-

    @property
    def notes(self) -> dict:
        """For result.json: BIO repairs, and words cut off by max_length (scored as predicted O)."""
        cut = {
            name: sum(len(s.tokens) - len(s.kept) for s in ex if s.kept is not None)
            for name, ex in self.examples.items()
        }
        return {"bio_repairs": self.repairs, "truncated_words": cut}


# ---------------------------------------------------------------- reading and checking the tags


def place(split: Split, k: int, i: int, conll: bool) -> str:
    """Where token i of record k is: file:line for column files (one token per line), else row and token."""
    return f"{split.source}:{split.rows[k] + i}" if conll else f"{split.source}: row {split.rows[k]}, token {i + 1}"


def columns_of(split: Split, data) -> tuple[str, str]:
    rec = split.records[0]
    tags = data.tags_column or ("ner_tags" if "ner_tags" in rec else "tags")
    for name, key in ((data.tokens_column, "tokens_column"), (tags, "tags_column")):
        if name not in rec:
            raise UserError(
                f"{split.source}: column '{name}' not found (columns: {', '.join(map(str, rec))}); set "
                f"`{key}:` to one of them, or data_format: conll for token-per-line CoNLL/IOB2 files"
            )
    return data.tokens_column, tags


def tag_name(value, names: list, where: str) -> str:
    """A tag as a string: ints index label_names; the result must be O, B-TYPE or I-TYPE."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if not names:
            raise UserError(
                f"{where}: tag {value} is a number; give the tag names in order with "
                f"`label_names: [O, B-PER, I-PER, ...]`"
            )
        if not 0 <= value < len(names):
            raise UserError(f"{where}: tag {value} is out of range for label_names ({len(names)} names)")
        value = names[value]
    tag = str(value).strip()
    if tag != "O" and not re.fullmatch(r"[BI]-\S+", tag):
        raise UserError(
            f"{where}: tag '{tag}' is not IOB2 (O, B-TYPE or I-TYPE); convert the tags, "
            f"or check the tag is the last column"
        )
    return tag


def read_split(split: Split, data, conll: bool) -> list[tuple[list[str], list[str]]]:
    """Records -> (words, tag strings), with every shape problem reported at its row."""
    tok_col, tag_col = columns_of(split, data)
    names = [str(n) for n in data.label_names]
    out = []
    for k, rec in enumerate(split.records):
        words, tags = rec.get(tok_col), rec.get(tag_col)
        where = place(split, k, 0, conll)
        if not isinstance(words, list) or not isinstance(tags, list):
            raise UserError(f"{where}: `{tok_col}` and `{tag_col}` must be lists (one entry per word)")
        if not words or len(words) != len(tags):
            raise UserError(f"{where}: {len(words)} words but {len(tags)} tags; each word needs one tag")
        out.append(
            ([str(w) for w in words], [tag_name(t, names, place(split, k, i, conll)) for i, t in enumerate(tags)])
        )
    return out


def repair_bio(tags: list[str]) -> tuple[list[str], int]:
    """I-X that continues no X entity (after O, first in the sentence, after B-Y/I-Y) becomes B-X.

    By hand: seqeval reads such tags leniently (default mode) or drops them (strict), but repairs nothing.
    """
    out, repaired, prev = [], 0, "O"
    for tag in tags:
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            tag, repaired = "B-" + tag[2:], repaired + 1
        out.append(tag)
        prev = tag
    return out, repaired


def label_set(seen: set[str], names: list[str]) -> list[str]:
    """label_names in their order, then O and the tags seen in train; each entity type gets both B- and I-."""
    types = {t[2:] for t in [*names, *seen] if t != "O"}
    rest = {"O"} | seen | {f"{p}-{t}" for t in types for p in "BI"}
    return list(dict.fromkeys(names)) + sorted(rest - set(names), key=lambda t: (t != "O", t[2:], t))


def prepare(splits: dict[str, Split], cfg) -> Prepared:
    """Read words and tags, repair invalid I- tags, fix the tag set from train, check the other splits."""
    data = cfg.data
    conll = {n: detect_format(Path(s.source), data.data_format) == "conll" for n, s in splits.items()}
    raw, repairs = {}, {}
    for name, split in splits.items():
        fixed = [(words, *repair_bio(tags)) for words, tags in read_split(split, data, conll[name])]
        raw[name], repairs[name] = [(w, t) for w, t, _ in fixed], sum(n for _, _, n in fixed)
    labels = label_set({t for _, tags in raw["train"] for t in tags}, [str(n) for n in data.label_names])
    index = {t: i for i, t in enumerate(labels)}
    examples = {}
    for name, rows in raw.items():
        for k, (_, tags) in enumerate(rows):
            for i, tag in enumerate(tags):
                if tag not in index:
                    raise UserError(
                        f"{place(splits[name], k, i, conll[name])}: tag '{tag}': entity type never seen "
                        f"in train_file (tags: {', '.join(labels)}); fix it or add it to `label_names:`"
                    )
        examples[name] = [Sentence(words, [index[t] for t in tags]) for words, tags in rows]
    if any(repairs.values()):
        print(
            "peftlab: repaired invalid BIO tags (I-X after O or after another type -> B-X): "
            + ", ".join(f"{name} {n}" for name, n in repairs.items()),
            flush=True,
        )
    return Prepared(labels, examples, repairs)


# ---------------------------------------------------------------- tokens and model


def spaced_words(tokenizer) -> bool:
    """Whether words need their leading space back to tokenize as in running text.

    Byte-level BPE (GPT-2, SmolLM2) marks a word start with the space before it; pre-split words
    have none, and transformers 5 ignores add_prefix_space for tokenizer.json tokenizers. So compare.
    """
    text = tokenizer("Cells express IL-2", add_special_tokens=False)["input_ids"]
    split = tokenizer(["Cells", "express", "IL-2"], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    spaced = tokenizer(["Cells", " express", " IL-2"], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    return split != text and spaced == text


def encode(examples: list[Sentence], tokenizer, cfg):
    """Words -> sub-tokens; the tag on each word's first sub-token, -100 elsewhere."""
    import datasets

    if not tokenizer.is_fast:
        raise UserError(f"task ner needs a fast tokenizer (word_ids), and {type(tokenizer).__name__} is not one")
    words = [s.tokens for s in examples]
    if spaced_words(tokenizer):
        words = [[w if i == 0 else " " + w for i, w in enumerate(ws)] for ws in words]
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=cfg.task.max_length)
    labels = []
    for k, sentence in enumerate(examples):
        row, prev, sentence.kept = [], None, []
        for w in enc.word_ids(k):
            first = w is not None and w != prev
            row.append(sentence.tags[w] if first else IGNORE)
            if first:
                sentence.kept.append(w)
            prev = w
        labels.append(row)
    cut = sum(len(s.kept) < len(s.tokens) for s in examples)
    if cut:
        print(
            f"peftlab: {cut} of {len(examples)} sentences are longer than max_length={cfg.task.max_length} "
            f"tokens; their cut-off words count as predicted O",
            flush=True,
        )
    enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    return datasets.Dataset.from_dict({**enc, "labels": labels})


def build_model(resolved, prepared: Prepared, cfg, tokenizer):
    m = cfg.model
    return load_for_token_classification(
        resolved, prepared.labels, m.dtype, tokenizer.pad_token_id, m.trust_remote_code
    ), {}


def build_collator(tokenizer, cfg):
    """Pads labels with -100; with prompt/p-tuning also prepends -100 for peft's virtual tokens,
    which come before the input and so lengthen the logits."""
    import torch.nn.functional as F
    from transformers import DataCollatorForTokenClassification

    collate = DataCollatorForTokenClassification(tokenizer)
    if not method_of(cfg.method.method).prepends_tokens:
        return collate
    n = cfg.method.num_virtual_tokens

    def collate_with_prompt(features):
        batch = collate(features)
        batch["labels"] = F.pad(batch["labels"], (n, 0), value=IGNORE)
        return batch

    return collate_with_prompt


# ---------------------------------------------------------------- scoring


def preprocess_logits(logits, labels):
    """Argmax per token, -100 where no word starts: what is left is one prediction per kept word."""
    import torch

    logits = logits[0] if isinstance(logits, tuple) else logits
    return torch.where(labels == IGNORE, IGNORE, logits.argmax(-1))


def word_tags(prepared: Prepared, split: str, predictions: np.ndarray) -> list[list[str]]:
    """Predicted tag per word; words cut off by max_length are O."""
    out = []
    for sentence, row in zip(prepared.examples[split], predictions):
        tags = ["O"] * len(sentence.tokens)
        for w, i in zip(sentence.kept, row[row != IGNORE], strict=True):
            tags[w] = prepared.labels[int(i)]
        out.append(tags)
    return out


def type_key(name: str) -> str:
    """An entity type as a metric-name suffix: cell_type -> cell_type, B-Org/x -> org_x."""
    return re.sub(r"\W+", "_", name).strip("_").lower()


def entity_metrics(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """seqeval entity P/R/F1 (micro over entities; default = conlleval-compatible, strict = IOB2),
    macro F1 and P/R/F1 per entity type, and word accuracy."""
    from seqeval.metrics import (
        accuracy_score,
        classification_report,
        f1_score,
        precision_score,
        recall_score,
    )
    from seqeval.scheme import IOB2

    strict = dict(mode="strict", scheme=IOB2, zero_division=0)
    out = {
        "precision": precision_score(gold, pred, zero_division=0),
        "recall": recall_score(gold, pred, zero_division=0),
        "f1": f1_score(gold, pred, zero_division=0),
        "precision_strict": precision_score(gold, pred, **strict),
        "recall_strict": recall_score(gold, pred, **strict),
        "f1_strict": f1_score(gold, pred, **strict),
        "f1_macro": f1_score(gold, pred, average="macro", zero_division=0),
        "accuracy": accuracy_score(gold, pred),
    }
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    for name, row in report.items():
        if not name.endswith(" avg"):
            for m in ("precision", "recall", "f1"):
                out[f"{m}_{type_key(name)}"] = row["f1-score" if m == "f1" else m]
    return {k: float(v) for k, v in out.items()}


def gold_tags(prepared: Prepared, split: str) -> list[list[str]]:
    return [[prepared.labels[t] for t in s.tags] for s in prepared.examples[split]]


def build_compute_metrics(prepared: Prepared, split: str, env):
    def compute_metrics(eval_pred):
        return entity_metrics(gold_tags(prepared, split), word_tags(prepared, split, eval_pred.predictions))

    return compute_metrics


def write_predictions(path: Path, prepared: Prepared, split: str, predictions: np.ndarray, env) -> None:
    """One JSON line per sentence: words, gold tags, predicted tags."""
    rows = [
        {"tokens": s.tokens, "tags": g, "predicted": p}
        for s, g, p in zip(
            prepared.examples[split], gold_tags(prepared, split), word_tags(prepared, split, predictions)
        )
    ]
    write_jsonl(path, rows)
