"""Classification with a causal LM by label likelihood (task: classification, classify_by: likelihood).

Each label has a verbalizer (label_words, default the label names). After an instruction prompt
the LM scores every verbalizer; the most likely label is the prediction, so no answer is ever
unparseable and an untuned model shows its real zero-shot accuracy (the epoch-0 evaluation).
When every verbalizer is one distinct token, one forward pass over the prompt reads them all from the
next-token distribution; otherwise each verbalizer's tokens are scored after the prompt (summed
log-probabilities, no length normalisation: verbalizers compete as whole answers). Training is
cross-entropy over the label scores, so LoRA and friends learn the ranking. Data, labels and
metrics are those of classification.py; the scoring model is shared with multiple choice (choices.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from peftlab.data.formats import Split
from peftlab.errors import UserError
from peftlab.tasks import choices, classification
from peftlab.tasks.choices import Choice
from peftlab.tasks.cls_generate import in_label_order

TASK_TYPE = "SEQ_CLS"
TOKEN_LEVEL_LOSS = False
DEFAULT_METRIC = classification.DEFAULT_METRIC
METRICS = classification.METRICS
DEFAULT_TEMPLATE = "{text}\nQuestion: which label fits this text: {labels}?\nAnswer:"
PAIR_TEMPLATE = "{text}\n{text_pair}\nQuestion: which label fits these texts: {labels}?\nAnswer:"


@dataclass
class Prepared:
    labels: list[str]
    words: list[str]  # verbalizer per label
    examples: dict[str, list[Choice]]
    notes: dict = field(default_factory=dict)


def verbalizers(cfg, labels: list[str]) -> list[str]:
    configured = in_label_order(labels, cfg.task.label_words)
    words = [str(w).split("|")[0].strip() for w in configured] or labels  # generate-style aliases: first word
    if len(words) != len(labels) or len(set(words)) != len(words) or not all(words):
        raise UserError(
            f"label_words: {len(cfg.task.label_words)} given for {len(labels)} labels "
            f"({', '.join(labels)}); give one distinct non-empty word per label, in that order"
        )
    return words


def prepare(splits: dict[str, Split], cfg) -> Prepared:
    plain = classification.prepare(splits, cfg)
    words = verbalizers(cfg, plain.labels)
    pair = bool(cfg.data.text_pair_column)
    template = cfg.task.prompt_template or (PAIR_TEMPLATE if pair else DEFAULT_TEMPLATE)
    examples = {}
    for name, rows in plain.examples.items():
        examples[name] = [
            Choice(
                choices.fill_template(
                    template, {"text": t, "text_pair": p or "", "labels": ", ".join(words)}, "classification"
                ),
                words,
                label,
                plain.labels,
                {"text": t, "text_pair": p},
            )
            for t, p, label in rows
        ]
    # result.json's label_words: {label: [word]}, the shape classify_by generate writes (its aliases in the list)
    return Prepared(
        plain.labels, words, examples, {"label_words": {label: [w] for label, w in zip(plain.labels, words)}}
    )


def encode(examples: list[Choice], tokenizer, cfg):
    if choices.single_token_ids(examples[0].options, tokenizer):
        return choices.encode_prompts(examples, tokenizer, cfg.task.max_length)
    return choices.encode_choices(examples, tokenizer, cfg.task.max_length, pairs=False)


def build_model(resolved, prepared: Prepared, cfg, tokenizer):
    ids = choices.single_token_ids(prepared.words, tokenizer)
    choices.check_method(cfg, three_d=ids is None, head=False)
    model = choices.load_likelihood_model(resolved, cfg, ids)
    if ids:
        return model, {"scoring": "next-token"}
    return model, {"scoring": "per-label sequences", "option_scoring": choices.option_scoring(model, cfg)}


def build_collator(tokenizer, cfg):
    return choices.collate(tokenizer)


def build_compute_metrics(prepared: Prepared, split: str, env):
    return classification.build_compute_metrics(prepared, split, env)


def write_predictions(path: Path, prepared: Prepared, split: str, logits, env) -> None:
    """The classification predictions file (text, label, prediction, probabilities over labels)."""
    rows = [(c.meta["text"], c.meta["text_pair"], c.answer) for c in prepared.examples[split]]
    classification.write_predictions(path, classification.Prepared(prepared.labels, {split: rows}), split, logits, env)
