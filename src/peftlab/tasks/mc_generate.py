"""Multiple choice by generating the answer's letter (task: multiple_choice, mc_head: generate): the
science-exam notebooks' "SFT that generates the letter".

Questions are read as for the other heads (multiple_choice.read_split: every layout, the same answer
checks), shown with their lettered options ("A. ..."), and trained as SFT whose answer is the right
option's label (A, B, ... or the data's own, e.g. ARC's 1-4). Evaluation generates an answer for each
of the split's first max_eval_generate questions and reads two things from that one pass:
  ranking      the log-probability of each option's label as the answer's first token (the model's
               raw next-token distribution after the prompt) ranks all options, so accuracy and MAP@k
               are those of the other heads, comparable row for row;
  generation   the generated text parsed for a label (see parse()): `generated_accuracy`, with answers
               naming no option counted wrong and reported as `unparsed` — the number a
               generate-and-parse evaluation gives, 0 for an untuned model that answers in words.
Every label's first answer token must differ (checked when a split is encoded, so `peftlab data check`
and training refuse it before anything runs), or the ranking could not tell the options apart.
Through llama.cpp (a .gguf model) the same pass runs there: greedy tokens, and the prompt's last
logits for the ranking.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from peftlab.errors import UserError
from peftlab.runs.rundir import write_jsonl
from peftlab.tasks import multiple_choice, sft
from peftlab.tasks.chat import Conversation, resolve_template
from peftlab.tasks.choices import Choice
from peftlab.tasks.cls_generate import normalize
from peftlab.tasks.metrics import compute_ranking

TASK_TYPE = sft.TASK_TYPE
TOKEN_LEVEL_LOSS, LM_LOSS = sft.TOKEN_LEVEL_LOSS, sft.LM_LOSS
DEFAULT_METRIC = multiple_choice.DEFAULT_METRIC
METRICS = (*multiple_choice.METRICS[:-1], "generated_accuracy", "loss")
DEFAULT_TEMPLATE = "{question}\n\n{options}\n\nAnswer with the letter of the right option ({letters})."
CONTEXT_TEMPLATE = "{context}\n\n" + DEFAULT_TEMPLATE

build_model, build_collator, preprocess_logits = sft.build_model, sft.build_collator, sft.preprocess_logits


class Questions(sft.Examples):
    """A split's Conversations (each answered by the right option's label) with the questions they
    were made of, as the other heads read them."""

    def __init__(self, questions: list[Choice], split: str, notes: dict):
        super().__init__([Conversation("", [(c.prompt, c.labels[c.answer])]) for c in questions], split, notes)
        self.questions = questions


@dataclass
class Prepared:
    examples: dict[str, Questions]
    notes: dict
    generated: dict = field(default_factory=dict)  # split -> prediction rows of its latest evaluation


def prepare(splits, cfg) -> Prepared:
    sft.check_settings(cfg)
    multiple_choice.check_settings(cfg)
    notes = {"mc_head": "generate", "map_k": cfg.task.map_k, "empty_options_dropped": 0}
    return Prepared(
        {
            name: Questions(
                multiple_choice.read_split(split, cfg, notes, (DEFAULT_TEMPLATE, CONTEXT_TEMPLATE)), name, notes
            )
            for name, split in splits.items()
        },
        notes,
    )


def labels_of(questions: list[Choice]) -> list[str]:
    return sorted({label for c in questions for label in c.labels})


def first_answer_tokens(labels: list[str], tokenizer, cfg) -> dict[str, int]:
    """Each label's first token as the template renders it as an answer; an error if two share one."""
    template = resolve_template(cfg.task.template, tokenizer)
    first = {
        label: sft.token_pairs(Conversation("", [("?", label)]), template, tokenizer)[-1][1][0] for label in labels
    }
    by_id = {}
    for label, tid in first.items():
        if by_id.setdefault(tid, label) != label:
            raise UserError(
                f"mc_head generate: option labels '{by_id[tid]}' and '{label}' begin with the same token "
                f"({tokenizer.convert_ids_to_tokens(tid)!r}), so the answer's first token cannot rank "
                f"them; relabel the options (A, B, C, ...) or use mc_head: likelihood"
            )
    return first


def encode(examples: Questions, tokenizer, cfg):
    """sft's encoding, once every option label of the split is known to begin with its own token."""
    first_answer_tokens(labels_of(examples.questions), tokenizer, cfg)
    return sft.encode(examples, tokenizer, cfg)


def label_indices(prepared: Prepared, split: str) -> list[str]:
    """Each question's right label (A, B, ...), for `peftlab data check`'s answer distribution (the
    encoded labels are answer tokens)."""
    return [c.labels[c.answer] for c in prepared.examples[split].questions]


def parse(text: str, choice: Choice) -> int | None:
    """The option an answer names: the earliest option label standing alone, case kept ("B", "(B)",
    "B.", "Answer: B"; not the B of "Because", nor the article "a" for A), else the earliest option
    text found as whole words (case, punctuation and spacing aside; the longer option on a tie)."""
    found = []
    for i, label in enumerate(choice.labels):
        m = re.search(rf"(?<![A-Za-z0-9]){re.escape(label)}(?![A-Za-z0-9])", text)
        if m:
            found.append((m.start(), i))
    if found:
        return min(found)[1]
    padded = f" {normalize(text)} "
    hits = [(padded.find(f" {normalize(o)} "), -len(o), i) for i, o in enumerate(choice.options) if normalize(o)]
    hits = [h for h in hits if h[0] >= 0]
    return min(hits)[2] if hits else None


def build_compute_metrics(prepared: Prepared, split: str, env):
    k = env.cfg.task.map_k

    def compute_metrics(eval_pred):
        questions = prepared.examples[split].questions
        first = first_answer_tokens(labels_of(questions), env.tokenizer, env.cfg)
        ids = sorted(set(first.values()))
        column = {label: ids.index(tid) for label, tid in first.items()}
        generated = sft.generate_split(prepared, split, env, ids)
        questions = questions[: len(generated)]
        width = max(len(c.options) for c in questions)
        scores = np.full((len(questions), width), -np.inf)
        for row, (c, g) in enumerate(zip(questions, generated)):
            scores[row, : len(c.options)] = [g["first_logprobs"][column[l]] for l in c.labels]
        out = compute_ranking(scores, [c.answer for c in questions], k)
        parsed = [parse(g["generated"], c) for c, g in zip(questions, generated)]
        out["generated_accuracy"] = float(np.mean([p == c.answer for p, c in zip(parsed, questions)]))
        out["unparsed"] = parsed.count(None)
        out["unparsed_ratio"] = out["unparsed"] / max(1, len(parsed))
        prepared.generated[split] = [
            prediction_row(c, s, g["generated"], p, k) for c, s, g, p in zip(questions, scores, generated, parsed)
        ]
        return out

    return compute_metrics


def prediction_row(c: Choice, scores: np.ndarray, generated: str, parsed: int | None, k: int) -> dict:
    """multiple_choice's line for the ranked letters, plus the generated text and the answer parsed from it."""
    return {
        **multiple_choice.prediction_row(c, scores, k),
        "generated": generated,
        "generated_prediction": None if parsed is None else c.labels[parsed],
    }


def write_predictions(path: Path, prepared: Prepared, split: str, predictions, env) -> None:
    """One line per question: options, answer, the ranked prediction and top k with the labels'
    probabilities, and the generated text with the option parsed from it (null: unparsed)."""
    write_jsonl(path, prepared.generated.get(split, []))
