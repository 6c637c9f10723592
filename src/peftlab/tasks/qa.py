"""Extractive question answering (SQuAD 1.1 and 2.0): predict the answer's start and end token.

A context longer than max_length is cut into overlapping windows (the tokenizer's only_second
truncation with a stride); each window is a training example whose target is the answer's tokens,
or the first token (CLS) when the answer is not inside it or the question has none. Answers are
chosen per question across its windows, as transformers' run_qa example does: the best span among
the top n_best starts x ends, against the null score (CLS start + end logits); SQuAD 2.0 answers
"no answer" when the null score beats the span by more than a threshold tuned on the validation
split (the official best_f1_thresh), which the test split then reuses; the validation split's own
scores are cross-fitted (see decide), so no question picks its own threshold. Scoring: squad_metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import softmax

from peftlab.data.formats import Split
from peftlab.errors import UserError
from peftlab.models.loading import load_pretrained
from peftlab.models.methods import method_of
from peftlab.runs.rundir import write_jsonl
from peftlab.tasks.squad_metrics import aggregate, best_threshold, score

TASK_TYPE = "QUESTION_ANS"
TOKEN_LEVEL_LOSS = False  # the QA head's loss is a mean over windows
LABEL_NAMES = ["start_positions", "end_positions"]
DEFAULT_METRIC = "f1"
METRICS = (
    "f1",
    "exact_match",
    "accuracy",
    "precision",
    "recall",
    "HasAns_f1",
    "HasAns_exact_match",
    "NoAns_f1",
    "NoAns_exact_match",
    "span_f1",
    "loss",
)
# the sweep report's columns after f1: the answerable and unanswerable halves, and span_f1, the best span's F1 on
# the answerable questions whatever the null decision: the span skill a run has learned while answering nothing
# still scores best (SQuAD 2.0 on a small sample), which f1 alone hides
REPORT_METRICS = ("exact_match", "HasAns_f1", "NoAns_f1", "span_f1")
REPORT_NOTE = (
    "SQuAD 2.0: f1/exact_match decide 'no answer' with a threshold cross-fitted on validation (each half of "
    "the questions uses the threshold tuned on the other half); f1_threshold0 is the plain rule, "
    "f1_tuned_in_sample the official best_f1 (tuned on the same rows: an upper bound)."
)
FIELDS = "id, question, context, answers {text: [...], answer_start: [...]} (and is_impossible for SQuAD 2.0)"


@dataclass
class Question:
    id: str
    question: str
    context: str
    answers: list[str]  # gold texts; empty when the question has no answer
    starts: list[int]  # their character offsets in the context


@dataclass
class Windows:
    """The tokenized windows of one split: model inputs, and what maps logits back to text."""

    inputs: dict  # input_ids, attention_mask (token_type_ids), start/end_positions
    example: list[int]  # window -> index of its question
    offsets: list[list]  # window -> per token (char start, char end) in the context, or None


@dataclass
class Prepared:
    examples: dict[str, list[Question]]
    notes: dict
    with_null: bool  # SQuAD 2.0: some questions have no answer
    thresholds: dict[str, float] = field(default_factory=dict)  # split -> null threshold in use
    windows: dict[str, Windows] = field(default_factory=dict)  # split -> cached windows


# ---------------------------------------------------------------- reading and checking


def answer_lists(answers, where: str) -> tuple[list, list]:
    """HF layout {text: [...], answer_start: [...]} or a list of {text, answer_start} -> (texts, starts)."""
    if isinstance(answers, list) and all(isinstance(a, dict) for a in answers):
        return [a.get("text") for a in answers], [a.get("answer_start") for a in answers]
    if (
        isinstance(answers, dict)
        and isinstance(answers.get("text"), list)
        and isinstance(answers.get("answer_start"), list)
        and len(answers["text"]) == len(answers["answer_start"])
    ):
        return answers["text"], answers["answer_start"]
    raise UserError(
        f'{where}: field \'answers\' must be {{"text": [...], "answer_start": [...]}} of equal length '
        f"(or a list of {{text, answer_start}}), got {str(answers)[:80]}"
    )


def read_question(rec: dict, where: str) -> Question:
    missing = [k for k in ("question", "context", "answers") if k not in rec]
    if missing:
        raise UserError(f"{where}: field(s) {', '.join(missing)} missing; QA rows need {FIELDS}")
    question, context = rec["question"], rec["context"]
    for name, value in (("question", question), ("context", context)):
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{where}: field '{name}' is empty or not text; fix or remove the question")
    texts, starts = answer_lists(rec["answers"], where)
    if bool(rec.get("is_impossible", not texts)):
        return Question(str(rec.get("id")), question, context, [], [])
    if not texts:
        raise UserError(f"{where}: no answers but is_impossible is false; give answers or set is_impossible: true")
    for j, (text, start) in enumerate(zip(texts, starts)):
        if not isinstance(text, str) or not text or not isinstance(start, int) or start < 0:
            raise UserError(
                f"{where}: answers[{j}] needs a non-empty text and an integer answer_start >= 0, "
                f"got text={text!r}, answer_start={start!r}"
            )
        if start + len(text) > len(context):
            raise UserError(
                f"{where}: answers[{j}]: answer_start={start} puts {text!r} past the end of the "
                f"context ({len(context)} characters); fix answer_start"
            )
        if context[start : start + len(text)] != text:
            raise UserError(
                f"{where}: answers[{j}]: the context at answer_start={start} reads "
                f"{context[start : start + len(text)]!r}, not the answer {text!r}; fix answer_start"
            )
    return Question(str(rec.get("id")), question, context, list(texts), list(starts))


def read_split(split: Split) -> list[Question]:
    out, seen = [], {}
    for rec, row in zip(split.records, split.rows):
        qid = rec.get("id", row)
        where = f"{split.source}: row {row} (question id {qid})"
        if str(qid) in seen:
            raise UserError(f"{where}: id already used by row {seen[str(qid)]}; question ids must be unique")
        seen[str(qid)] = row
        out.append(read_question({"id": qid, **rec}, where))
    return out


def prepare(splits: dict[str, Split], cfg) -> Prepared:
    """Check every question (fields, answer offsets, unique ids) and the QA settings."""
    examples = {name: read_split(split) for name, split in splits.items()}
    unanswerable = {name: sum(not q.answers for q in qs) for name, qs in examples.items()}
    if unanswerable["train"] == len(examples["train"]):
        raise UserError(f"{splits['train'].source}: no question in the training data has an answer")
    t = cfg.task
    if t.n_best < 1 or t.max_answer_length < 1 or t.doc_stride < 0:
        raise UserError(
            f"n_best ({t.n_best}) and max_answer_length ({t.max_answer_length}) must be at least 1, "
            f"doc_stride ({t.doc_stride}) at least 0"
        )
    metric, val = cfg.eval.metric_for_best, examples.get("validation", [])  # predict has no validation split
    if metric.startswith(("HasAns", "NoAns")) and not any(bool(q.answers) == metric.startswith("HasAns") for q in val):
        raise UserError(f"metric_for_best: {metric}, but the validation split has no such questions; use f1")
    notes = {"qa_questions": {n: len(qs) for n, qs in examples.items()}, "qa_unanswerable": unanswerable}
    return Prepared(examples, notes, with_null=any(unanswerable.values()))


# ---------------------------------------------------------------- windows


def stride_of(cfg) -> int:
    return cfg.task.doc_stride or cfg.task.max_length // 3


def check_room(questions: list[Question], tokenizer, cfg) -> None:
    """Every window needs room for more context tokens than the stride; name the longest question if not."""
    if not tokenizer.is_fast:
        raise UserError("qa: the tokenizer must be a fast (Rust) tokenizer, which gives the character offsets")
    lengths = [
        len(ids) for ids in tokenizer([q.question.lstrip() for q in questions], add_special_tokens=False)["input_ids"]
    ]
    i = int(np.argmax(lengths))
    room = cfg.task.max_length - lengths[i] - tokenizer.num_special_tokens_to_add(pair=True)
    if room <= stride_of(cfg):
        raise UserError(
            f"qa: question id {questions[i].id} has {lengths[i]} tokens, which leaves {room} context tokens "
            f"per window with max_length={cfg.task.max_length}, not more than doc_stride={stride_of(cfg)}; "
            f"raise max_length or lower doc_stride"
        )


def token_span(offsets: list, start_char: int, end_char: int) -> tuple[int, int]:
    """First and last context token covering [start_char, end_char); (0, 0) when the window misses it."""
    ctx = [j for j, o in enumerate(offsets) if o is not None]
    if offsets[ctx[0]][0] > start_char or offsets[ctx[-1]][1] < end_char:
        return 0, 0
    start = next(j for j in reversed(ctx) if offsets[j][0] <= start_char)
    end = next(j for j in ctx if offsets[j][1] >= end_char)
    return start, end


def windows(questions: list[Question], tokenizer, cfg) -> Windows:
    check_room(questions, tokenizer, cfg)
    enc = tokenizer(
        [q.question.lstrip() for q in questions],
        [q.context for q in questions],
        truncation="only_second",
        max_length=cfg.task.max_length,
        stride=stride_of(cfg),
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    example, all_offsets, starts, ends = list(enc["overflow_to_sample_mapping"]), [], [], []
    for i, ex in enumerate(example):
        seq = enc.sequence_ids(i)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], seq)]
        q = questions[ex]
        span = token_span(offsets, q.starts[0], q.starts[0] + len(q.answers[0])) if q.answers else (0, 0)
        all_offsets.append(offsets)
        starts.append(span[0])
        ends.append(span[1])
    inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    return Windows({**inputs, "start_positions": starts, "end_positions": ends}, example, all_offsets)


def windows_of(prepared: Prepared, split: str, env) -> Windows:
    if split not in prepared.windows:
        prepared.windows[split] = windows(prepared.examples[split], env.tokenizer, env.cfg)
    return prepared.windows[split]


def encode(examples: list[Question], tokenizer, cfg):
    import datasets

    return datasets.Dataset.from_dict(windows(examples, tokenizer, cfg).inputs)


# ---------------------------------------------------------------- model


def build_model(resolved, prepared: Prepared, cfg, tokenizer):
    from transformers import AutoModelForQuestionAnswering

    method = cfg.method.method
    if method_of(method).prepends_tokens:
        raise UserError(
            f"method: {method} prepends virtual tokens, so peft's question-answering start/end logits "
            f"no longer line up with the input tokens; use lora, dora, ia3 or full"
        )
    model = load_pretrained(
        AutoModelForQuestionAnswering,
        resolved,
        cfg.model.dtype,
        cfg.model.trust_remote_code,
        "no question-answering head for this architecture",
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, {"doc_stride": stride_of(cfg)}


def build_collator(tokenizer, cfg):
    from transformers import DataCollatorWithPadding

    tokenizer.padding_side = "right"  # start/end positions count from the left: padding must go after
    return DataCollatorWithPadding(tokenizer)


# ---------------------------------------------------------------- answers


@dataclass
class Answers:
    best: list[str]  # best non-null span per question
    null_diff: list[float]  # null score minus best span score (inf when no valid span)
    null_prob: list[float]  # softmax weight of the null answer among null + n-best spans


def spans(start: np.ndarray, end: np.ndarray, offsets: list, n_best: int, max_len: int):
    """(score, char start, char end) of the n_best valid spans of one window: both ends in the context,
    end not before start, at most max_len tokens."""
    ctx = np.array([o is not None for o in offsets])
    s = np.where(ctx, start[: len(offsets)], -np.inf)
    e = np.where(ctx, end[: len(offsets)], -np.inf)
    k = min(n_best, int(ctx.sum()))
    st, en = np.argsort(-s, kind="stable")[:k], np.argsort(-e, kind="stable")[:k]
    scores = s[st][:, None] + e[en][None, :]
    length = en[None, :] - st[:, None]
    scores = np.where((length >= 0) & (length < max_len), scores, -np.inf)
    out = []
    for flat in np.argsort(-scores, axis=None, kind="stable")[:n_best]:
        i, j = divmod(int(flat), k)
        if np.isfinite(scores[i, j]):
            out.append((float(scores[i, j]), offsets[st[i]][0], offsets[en[j]][1]))
    return out


def best_answers(questions: list[Question], win: Windows, start_logits, end_logits, cfg) -> Answers:
    """Best span and null score per question across its windows (the null score is the smallest
    over the windows, as in transformers' run_qa postprocessing)."""
    null = [math.inf] * len(questions)
    cands: list[list] = [[] for _ in questions]
    for i, ex in enumerate(win.example):
        null[ex] = min(null[ex], float(start_logits[i][0] + end_logits[i][0]))
        cands[ex] += spans(start_logits[i], end_logits[i], win.offsets[i], cfg.task.n_best, cfg.task.max_answer_length)
    best, diff, prob = [], [], []
    for q, n, c in zip(questions, null, cands):
        c = sorted(c, reverse=True)[: cfg.task.n_best]
        best.append(q.context[c[0][1] : c[0][2]] if c else "")
        diff.append(n - c[0][0] if c else math.inf)
        prob.append(float(softmax(np.array([n] + [x[0] for x in c]))[0]))
    return Answers(best, diff, prob)


def logits_of(predictions) -> tuple[np.ndarray, np.ndarray]:
    start, end = predictions[:2]
    return np.asarray(start), np.asarray(end)


def decide(prepared: Prepared, split: str, answers: Answers) -> tuple[list[str], float | None]:
    """Final texts: a span, or '' (no answer) when null_diff exceeds the threshold. SQuAD 1.1 data
    never answers null. SQuAD 2.0 tunes the threshold (best F1, the official best_f1_thresh) on the
    validation split; the test split and `peftlab predict` apply that one value. On the split it is
    tuned on, a question's own gold must not pick its threshold (the official best_f1 does exactly
    that, and is optimistic), so its decisions are cross-fitted: each half of the questions (even /
    odd position) is decided with the threshold tuned on the other half."""
    if not prepared.with_null:
        return answers.best, None
    if not tunes_on(prepared, split):
        threshold = prepared.thresholds["validation"]
        return with_threshold(answers, threshold), threshold
    golds = [q.answers for q in prepared.examples[split]]
    prepared.thresholds[split] = best_threshold(golds, answers.best, answers.null_diff)[1]
    fold = [
        best_threshold(
            *([x[i] for i in range(len(golds)) if i % 2 != k] for x in (golds, answers.best, answers.null_diff))
        )[1]
        for k in (0, 1)
    ]
    return with_threshold(answers, [fold[i % 2] for i in range(len(golds))]), prepared.thresholds[split]


def tunes_on(prepared: Prepared, split: str) -> bool:
    """Whether the split's own rows tune the threshold: validation, or any split when no validation did."""
    return split == "validation" or "validation" not in prepared.thresholds


def with_threshold(answers: Answers, threshold) -> list[str]:
    """'' (no answer) where the null score beats the best span by more than the threshold (one value,
    or one per question), else the span."""
    per_row = threshold if isinstance(threshold, list) else [threshold] * len(answers.best)
    return ["" if d > t else b for b, d, t in zip(answers.best, answers.null_diff, per_row)]


def build_compute_metrics(prepared: Prepared, split: str, env):
    def compute_metrics(eval_pred):
        questions = prepared.examples[split]
        answers = best_answers(questions, windows_of(prepared, split, env), *logits_of(eval_pred.predictions), env.cfg)
        tuned_here = tunes_on(prepared, split)
        preds, threshold = decide(prepared, split, answers)
        golds = [q.answers for q in questions]
        metrics = aggregate(golds, preds)
        # span skill whatever the null decision: F1 of the best span on answerable questions
        # (the has_ans_f1 of transformers' find_best_thresh_v2)
        has = [i for i, q in enumerate(questions) if q.answers]
        metrics["span_f1"] = sum(score(golds[i], answers.best[i])["f1"] for i in has) / max(1, len(has))
        if threshold is not None:  # beside the headline: the plain rule (null when it beats the best span)
            metrics.update(null_threshold=threshold, f1_threshold0=aggregate(golds, with_threshold(answers, 0.0))["f1"])
            if tuned_here:  # and the official best_f1: the threshold tuned on these very rows, optimistic
                metrics["f1_tuned_in_sample"] = aggregate(golds, with_threshold(answers, threshold))["f1"]
        return metrics

    return compute_metrics


def write_predictions(path: Path, prepared: Prepared, split: str, predictions, env) -> None:
    """One JSON line per question: id, question, gold answers, prediction ('' = no answer), the best
    span, null score difference and null probability, exact_match and F1."""
    questions = prepared.examples[split]
    answers = best_answers(questions, windows_of(prepared, split, env), *logits_of(predictions), env.cfg)
    preds, _ = decide(prepared, split, answers)
    rows = []
    for q, pred, best, diff, prob in zip(questions, preds, answers.best, answers.null_diff, answers.null_prob):
        s = score(q.answers, pred)
        rows.append(
            {
                "id": q.id,
                "question": q.question,
                "answers": q.answers,
                "prediction": pred,
                "best_span": best,
                "null_score_diff": round(diff, 4) if math.isfinite(diff) else None,
                "null_prob": round(prob, 6),
                "exact_match": s["exact_match"],
                "f1": round(s["f1"], 4),
            }
        )
    write_jsonl(path, rows)
