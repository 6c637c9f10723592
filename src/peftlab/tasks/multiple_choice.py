"""Multiple choice: a question, 2-8 answer options, one of them right (SciQ, ARC, OpenBookQA, the
Kaggle LLM Science Exam, or any CSV/JSON with a question, option columns and an answer).

Layouts are recognised from the columns, or named with question_column / option_columns /
answer_column:
  letter columns   prompt|question, A, B, C, ... , answer          (Kaggle science exam)
  SciQ             question, correct_answer, distractor1..3        (options shuffled, seeded)
  choices          question|question_stem, choices, answerKey|answer|label, where choices is
                   {text: [...], label: [...]} (HF ARC / OpenBookQA), [{text, label}, ...] or [text, ...]
  nested           question: {stem, choices: [{text, label}]}, answerKey   (ARC / OBQA .jsonl)
The answer may be an option label (A, or ARC's 1), a 0-based index, or the option's text.

Heads (mc_head): likelihood (a causal LM's log-likelihood of each option after the prompt) or
classifier (a learnt score per (question, option) sequence), see choices.py; or generate (SFT on the
right option's letter, mc_generate.py, which reads the questions through this module). Metrics:
accuracy and MAP@k (map_k, Kaggle's MAP@3 by default); the predictions file ranks the top k options
per question.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from peftlab.data.detect import QUESTION_KEYS
from peftlab.data.formats import Split
from peftlab.errors import UserError
from peftlab.runs.rundir import write_jsonl
from peftlab.tasks import choices
from peftlab.tasks.choices import Choice
from peftlab.tasks.metrics import compute_ranking, rank_options

TASK_TYPE = "SEQ_CLS"  # peft: keeps a `score`/`classifier` head trainable; option scores are class logits
TOKEN_LEVEL_LOSS = False  # cross-entropy over options: a mean per question
DEFAULT_METRIC = "map@3"
METRICS = ("accuracy", *(f"map@{k}" for k in range(1, 9)), "loss")
HEADS = ("likelihood", "classifier", "generate")
MAX_OPTIONS = 8
DEFAULT_TEMPLATE = "Question: {question}\nAnswer:"
CONTEXT_TEMPLATE = "{context}\nQuestion: {question}\nAnswer:"


@dataclass
class Prepared:
    examples: dict[str, list[Choice]]
    notes: dict = field(default_factory=dict)


# ---------------------------------------------------------------- layouts


def letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def parse_choices(value) -> tuple[list[str], list[str]]:
    """HF {text, label} dict, a list of {text, label} dicts, or a list of texts -> (texts, labels)."""
    if isinstance(value, dict) and "text" in value:
        texts = list(value["text"])
        return texts, [str(l) for l in value.get("label") or letters(len(texts))]
    if isinstance(value, list) and value and all(isinstance(v, dict) and "text" in v for v in value):
        return [v["text"] for v in value], [str(v.get("label", l)) for v, l in zip(value, letters(len(value)))]
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return [str(v) for v in value], letters(len(value))
    raise ValueError("expected {text: [...], label: [...]}, a list of {text, label} objects, or a list of texts")


def first_of(cols, names) -> str:
    return next((n for n in names if n in cols), "")


def detect_layout(cols: list[str], data) -> dict:
    """Which columns hold the question, the options and the answer (explicit keys win)."""
    question = data.question_column or first_of(cols, QUESTION_KEYS)
    answer = data.answer_column or first_of(cols, ("answer", "answerKey", "label", "correct_answer"))
    if data.option_columns:
        return {"kind": "columns", "question": question, "options": list(data.option_columns), "answer": answer}
    if "correct_answer" in cols and "distractor1" in cols:
        return {
            "kind": "sciq",
            "question": question,
            "answer": data.answer_column or "correct_answer",
            "options": sorted(c for c in cols if c.startswith("distractor")),
        }
    if first_of(cols, ("choices", "options")):
        return {
            "kind": "choices",
            "question": question,
            "options": first_of(cols, ("choices", "options")),
            "answer": data.answer_column or first_of(cols, ("answerKey", "answer", "label")),
        }
    abc = [l for l in letters(MAX_OPTIONS) if l in cols]
    if len(abc) >= 2 and abc == letters(len(abc)):
        return {"kind": "columns", "question": question, "options": abc, "answer": answer}
    if question == "question" and answer == "answerKey":  # ARC / OpenBookQA .jsonl: choices inside question
        return {"kind": "nested", "question": question, "answer": answer}
    return {"kind": None}


def check_layout(layout: dict, split: Split) -> None:
    cols = list(split.records[0])
    if layout["kind"] is None:
        raise UserError(
            f"{split.source}: cannot tell the multiple-choice layout from the columns "
            f"({', '.join(map(str, cols))}); set `question_column:`, `option_columns:` and `answer_column:`"
        )
    options = layout.get("options", [])
    named = [("question_column", layout["question"]), ("answer_column", layout["answer"])] + [
        ("option_columns", c) for c in (options if isinstance(options, list) else [options])
    ]
    for key, col in named:
        if not col or col not in cols:
            raise UserError(
                f"{split.source}: column '{col}' not found (columns: {', '.join(map(str, cols))}); "
                f"set `{key}:` to one of them"
            )


def read_row(rec: dict, layout: dict, where: str, rng: random.Random) -> tuple[str, list[str], list[str], object]:
    """-> (question, option texts, option labels, raw answer)."""
    kind, question, answer = layout["kind"], rec.get(layout["question"]), rec.get(layout["answer"])
    if kind == "nested":
        if not isinstance(question, dict) or "stem" not in question or "choices" not in question:
            raise UserError(f"{where}: field '{layout['question']}': expected {{stem, choices}}; fix the row")
        question, value = question["stem"], question["choices"]
    elif kind == "choices":
        value = rec.get(layout["options"])
    if kind in ("nested", "choices"):
        try:
            texts, labels = parse_choices(value)
        except ValueError as e:
            raise UserError(f"{where}: field '{layout.get('options', 'question.choices')}': {e}; fix the row") from None
    elif kind == "sciq":  # the right answer comes first in the file: shuffle, or position gives it away
        given = [answer] + [rec.get(c) for c in layout["options"]]
        order = list(range(len(given)))
        rng.shuffle(order)
        texts, labels = [given[i] for i in order], letters(len(given))
        answer = labels[order.index(0)]
    else:
        texts, labels = [rec.get(c) for c in layout["options"]], list(layout["options"])
    if question is None or str(question).strip() == "":
        raise UserError(f"{where}: field '{layout['question']}' is empty; fix or remove the row")
    return str(question), ["" if t is None else str(t) for t in texts], labels, answer


def answer_index(answer, texts: list[str], labels: list[str], where: str, field_name: str) -> int:
    """An option label, else a 0-based index, else an option's exact text."""
    value = str(int(answer) if isinstance(answer, float) and answer.is_integer() else answer).strip()
    if value in labels:
        return labels.index(value)
    upper = [l.upper() for l in labels]
    if value.upper() in upper:
        return upper.index(value.upper())
    if value.isdigit() and int(value) < len(texts):
        return int(value)
    stripped = [t.strip() for t in texts]
    if value and value in stripped:
        return stripped.index(value)
    raise UserError(
        f"{where}: field '{field_name}': answer '{value}' is not among options {', '.join(labels)} "
        f"(nor a 0-based index 0-{len(texts) - 1} or an option's text); fix the row"
    )


def read_split(split: Split, cfg, notes: dict, templates=(DEFAULT_TEMPLATE, CONTEXT_TEMPLATE)) -> list[Choice]:
    """The split's questions; the prompt is prompt_template, else templates[1] with a context column, else
    templates[0], filled with {question} {context} {options} ("A. text" lines) and {letters} ("A, B, C")."""
    data = cfg.data
    layout = detect_layout(list(split.records[0]), data)
    check_layout(layout, split)
    template = cfg.task.prompt_template or templates[1 if data.context_column else 0]
    out = []
    for rec, row in zip(split.records, split.rows):
        where = f"{split.source}: row {row}"
        rng = random.Random(cfg.train.seed * 1_000_003 + row)
        question, texts, labels, answer = read_row(rec, layout, where, rng)
        gold = answer_index(answer, texts, labels, where, layout["answer"])
        if not texts[gold].strip():
            raise UserError(f"{where}: the answer {labels[gold]} is an empty option; fix or remove the row")
        keep = [i for i, t in enumerate(texts) if t.strip()]  # a blank option is no option (a few rows have one)
        notes["empty_options_dropped"] += len(texts) - len(keep)
        if not 2 <= len(keep) <= MAX_OPTIONS:
            raise UserError(f"{where}: {len(keep)} non-empty options; multiple choice needs 2 to {MAX_OPTIONS}")
        context = str(rec.get(data.context_column) or "") if data.context_column else ""
        fields = {
            "question": question.strip(),
            "context": context.strip(),
            "options": "\n".join(f"{labels[i]}. {texts[i].strip()}" for i in keep),
            "letters": ", ".join(labels[i] for i in keep),
        }
        out.append(
            Choice(
                choices.fill_template(template, fields, "multiple_choice"),
                [texts[i].strip() for i in keep],
                keep.index(gold),
                [labels[i] for i in keep],
                {"question": question.strip()},
            )
        )
    return out


def check_settings(cfg) -> None:
    """The settings every head shares, checked before anything is read."""
    task = cfg.task
    if task.mc_head not in HEADS:
        raise UserError(f"mc_head: '{task.mc_head}' is not one of {', '.join(HEADS)}")
    if task.length_norm not in choices.NORMS:
        raise UserError(f"length_norm: '{task.length_norm}' is not one of {', '.join(choices.NORMS)}")
    if not 1 <= task.map_k <= MAX_OPTIONS:
        raise UserError(f"map_k: {task.map_k} must be between 1 and {MAX_OPTIONS}")
    best = cfg.eval.metric_for_best
    if best.startswith("map@") and best not in ("map@3", f"map@{task.map_k}"):
        raise UserError(f"metric_for_best: '{best}' is not computed; set map_k={best[4:]} or pick map@{task.map_k}")


def prepare(splits: dict[str, Split], cfg) -> Prepared:
    task = cfg.task
    check_settings(cfg)
    notes = {"mc_head": task.mc_head, "map_k": task.map_k, "empty_options_dropped": 0}
    if task.mc_head == "likelihood":
        notes["length_norm"] = task.length_norm
    return Prepared({name: read_split(split, cfg, notes) for name, split in splits.items()}, notes)


def encode(examples: list[Choice], tokenizer, cfg):
    head = cfg.task.mc_head == "classifier"
    return choices.encode_choices(examples, tokenizer, cfg.task.max_length, head, cfg.task.length_norm)


def build_model(resolved, prepared: Prepared, cfg, tokenizer):
    head = cfg.task.mc_head == "classifier"
    choices.check_method(cfg, three_d=True, head=head)
    if head:
        model, pooling = choices.load_classifier_model(resolved, cfg, tokenizer)
        return model, {"pooling": pooling}
    model = choices.load_likelihood_model(resolved, cfg)
    return model, {"option_scoring": choices.option_scoring(model, cfg)}


def build_collator(tokenizer, cfg):
    return choices.collate(tokenizer)


def build_compute_metrics(prepared: Prepared, split: str, env):
    k = env.cfg.task.map_k

    def compute_metrics(eval_pred):
        scores = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        return compute_ranking(scores, eval_pred.label_ids, k)

    return compute_metrics


def prediction_row(c: Choice, scores: np.ndarray, k: int) -> dict:
    """One question's predictions line: options, answer, prediction, the top k ranked, probabilities."""
    s = scores[: len(c.options)]
    order, probs = rank_options(s[None])[0], choices.softmax(s)
    return {
        "question": c.meta["question"],
        "options": dict(zip(c.labels, c.options)),
        "answer": c.labels[c.answer],
        "prediction": c.labels[order[0]],
        "top_k": [c.labels[i] for i in order[:k]],
        "probabilities": {l: round(float(p), 6) for l, p in zip(c.labels, probs)},
    }


def write_predictions(path: Path, prepared: Prepared, split: str, scores: np.ndarray, env) -> None:
    """One JSON line per question (prediction_row)."""
    k = env.cfg.task.map_k
    write_jsonl(path, [prediction_row(c, s, k) for c, s in zip(prepared.examples[split], scores)])
