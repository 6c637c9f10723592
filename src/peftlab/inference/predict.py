"""`peftlab predict SOURCE INPUT`: unlabeled rows -> result_NAME.txt (one prediction per line, the label
only, in input order, in the label's own spelling) + predictions_NAME.jsonl (input, prediction, scores).

Rows go through the task's own reader, prompts and scorer (inference/session.py), batched: they are sorted by
length so that a batch pads little, and put back in input order on write. Gold columns may be
absent: a placeholder stands in for them so the task's reader accepts the row, and it is never
shown. `--answers FILE` grades the result lines against one gold answer per line.
"""

from __future__ import annotations

import json
from pathlib import Path

from peftlab.config.settings import Config
from peftlab.data.formats import Split, is_missing, label_key, read_records
from peftlab.data.splits import load_splits
from peftlab.errors import UserError
from peftlab.inference.session import open_session, read_source, score_split
from peftlab.runs import layout
from peftlab.runs.rundir import read_jsonl, write_jsonl, write_text
from peftlab.tasks.metrics import compute_classification

SPLIT = "predict"
GOLD_KEYS = ("label", "tags", "answers", "answer", "reference")  # the placeholders' echo in task rows


def placeholder_gold(cfg: Config, record: dict, labels: list[str] | None) -> dict:
    """The record with a stand-in gold value where the task's reader needs one and the input has none."""
    task, data = cfg.task.task, cfg.data
    rec = dict(record)
    if task == "classification" and is_missing(rec.get(data.label_column)):  # absent, or pandas' NaN
        rec[data.label_column] = (labels or [""])[0]
    elif task == "ner":
        tokens = rec.get(data.tokens_column)
        key = data.tags_column or ("ner_tags" if "ner_tags" in rec else "tags")
        if isinstance(tokens, list) and rec.get(key) is None:
            rec[key] = ["O"] * len(tokens)
    elif task == "qa" and not rec.get("answers"):
        context = str(rec.get("context") or "")
        rec["answers"] = {"text": [context[:1]], "answer_start": [0]} if context else {"text": [], "answer_start": []}
    elif task == "sft" and "instruction" in rec and rec.get("output") is None:
        rec["output"] = "?"  # the reader wants an answer; generation never sees it
    elif task == "multiple_choice":
        answer = data.answer_column or next((k for k in ("answer", "answerKey", "label") if k in rec), "answer")
        if rec.get(answer) in (None, ""):
            rec[answer] = 0
    return rec


def read_input(path: str, cfg: Config, limit: int, labels: list[str] | None) -> tuple[Split, list[int], list[dict]]:
    """The first `limit` rows, gold placeholders filled, sorted longest first; returns that split, per
    sorted position the row's input index, and the rows as read (input order)."""
    data = cfg.data
    split = read_records(path, "input", data.data_format, data.encoding, data.delimiter, data.header, data.columns)
    if limit < 0:
        raise UserError(f"--limit: must be 0 (all rows) or more, got {limit}")
    n = min(limit or len(split.records), len(split.records))
    records = [placeholder_gold(cfg, r, labels) for r in split.records[:n]]
    order = sorted(range(n), key=lambda i: -len(json.dumps(records[i], ensure_ascii=False, default=str)))
    sorted_split = Split([records[i] for i in order], split.source, [split.rows[i] for i in order], split.group)
    return sorted_split, order, split.records[:n]


def line_of(task: str, row: dict) -> str:
    """The prediction alone, for result_NAME.txt (one line)."""
    if task == "ner":
        value = " ".join(row["predicted"])
    elif task == "sft":
        value = row["generated"]
    else:
        value = row.get("prediction")
    return " ".join(str("" if value is None else value).split())  # one line: no newline inside an answer


def run_predict(
    spec: str,
    input_path: str,
    overrides: list[str],
    limit: int = 0,
    name: str = "",
    out: str = "",
    answers: str | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Predict; returns the lines to print."""
    cfg, source = read_source(spec, overrides)
    cfg.eval.max_eval_generate = 0  # every row gets its answer
    if name and any(sep in name for sep in layout.SEPARATORS):  # it names files in --out, nowhere else
        raise UserError(f"--name: '{name}' holds a path separator; it becomes result_NAME.txt in --out (use --out)")
    name = name or Path(input_path).stem
    out_dir = Path(out or ".")
    check_out_folder(out_dir, "--out")
    result_txt, result_jsonl = out_dir / layout.predict_answers(name), out_dir / layout.predictions_file(name)
    if not overwrite and (result_txt.exists() or result_jsonl.exists()):
        raise UserError(f"{result_txt} already exists; pass --overwrite or another --name")
    gold = read_answers(answers) if answers else None
    labels = source.result.get("labels") or [str(x) for x in cfg.data.label_names] or None
    if cfg.task.task == "classification" and not labels and not cfg.data.train_file:
        raise UserError(
            "label_names: predicting with an untrained model needs the label set; set label_names= "
            "(or train_file=, whose labels are used)"
        )
    # the training file gives few-shot examples, and the label set of an untrained model
    train = (
        load_splits(cfg.data, cfg.train.seed)["train"] if cfg.eval.shots or not labels and cfg.data.train_file else None
    )
    if cfg.task.task == "classification" and not labels:
        from peftlab.tasks.classification import sort_labels

        labels = sort_labels({label_key(v) for r in train.records if not is_missing(v := r.get(cfg.data.label_column))})
    split, order, originals = read_input(input_path, cfg, limit, labels)
    train = train or split
    if gold is not None and len(gold) != len(order):
        raise UserError(
            f"--answers {answers}: {len(gold)} lines for {len(order)} predicted rows "
            f"(--limit {limit or 'all'}); give one answer per predicted row, in input order"
        )
    if gold is not None and cfg.task.task == "classification":
        check_answer_labels(answers, gold, labels)  # before predicting: a bad answer file writes nothing
    session = open_session(cfg, source, {"train": train, SPLIT: split}, [SPLIT])
    keep_threshold(session)
    scored = score_split(session, SPLIT)
    rows = task_rows(session, scored.predictions, out_dir, name)
    restored, row_numbers = [None] * len(order), [0] * len(order)
    for position, index in enumerate(order):
        restored[index], row_numbers[index] = rows[position], split.rows[position]
    lines = [line_of(cfg.task.task, r) for r in restored]
    write_jsonl(
        result_jsonl,
        [
            {"row": number, "input": rec, **{k: v for k, v in row.items() if k not in GOLD_KEYS}, "prediction": line}
            for number, rec, line, row in zip(row_numbers, originals, lines, restored)
        ],
    )
    write_text(result_txt, "".join(line + "\n" for line in lines))
    n = len(lines)
    report = [
        f"predicted {n} rows in {scored.seconds:.1f} s ({n / scored.seconds:.1f} rows/s, batched, sorted "
        f"by length) -> {result_txt} (+ {result_jsonl.name})"
    ]
    if gold is not None:
        report += grade(lines, gold, labels if cfg.task.task == "classification" else None)
    return report


def keep_threshold(session) -> None:
    """QA: the no-answer threshold the run tuned on its validation data, never one fitted to placeholders."""
    thresholds = getattr(session.prepared, "thresholds", None)
    if thresholds is not None:
        best = session.source.result.get("metrics_best") or {}
        session.prepared.with_null = "null_threshold" in best  # SQuAD 2.0 runs abstain; 1.1 runs never do
        thresholds["validation"] = float(best.get("null_threshold", 0.0))


def task_rows(session, predictions, out_dir: Path, name: str) -> list[dict]:
    """The task's own prediction rows (written by its write_predictions, read back)."""
    tmp = out_dir / f".predictions_{name}.task.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)
    session.task.write_predictions(tmp, session.prepared, SPLIT, predictions, session.env)
    rows = read_jsonl(tmp)
    tmp.unlink()
    return rows


def read_answers(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--answers: file not found: {path}")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"--answers {path}: not UTF-8 text; save it as UTF-8, one answer per line") from None
    return [" ".join(line.split()) for line in text.splitlines()]


def check_out_folder(folder: Path, key: str) -> None:
    """An output folder that is, or lies inside, an existing file cannot be written: refused before any
    work, not when the first file is written after the whole evaluation."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        inside = "" if existing == folder else f" ({folder} would lie inside it)"
        raise UserError(f"{key} {folder}: {existing} is a file, not a folder{inside}; name a folder to write into")


def check_answer_labels(path: str, gold: list[str], labels: list[str] | None) -> None:
    """Every line of a classification answer file is one of the model's labels (with its line number)."""
    if not labels:
        return
    known = set(labels)
    bad = [(i, g) for i, g in enumerate(gold, 1) if g not in known]
    if bad:
        shown = ", ".join(f"line {i}: {g!r}" for i, g in bad[:3]) + (
            f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        )
        raise UserError(
            f"--answers {path}: {len(bad)} answers are not among the model's labels ({', '.join(labels)}): {shown}; "
            f"write one label per line, in the labels' own spelling"
        )


def grade(predicted: list[str], gold: list[str], labels: list[str] | None) -> list[str]:
    """Accuracy (exact line match) and, for labels, the classification metrics."""
    correct = sum(p == g for p, g in zip(predicted, gold))
    lines = [f"graded against {len(gold)} answers: accuracy {correct / max(1, len(gold)):.4f} ({correct}/{len(gold)})"]
    if labels:
        index = {l: i for i, l in enumerate(labels)}
        m = compute_classification([index[g] for g in gold], [index.get(p, -1) for p in predicted], len(labels))
        lines.append("  " + "   ".join(f"{k} {m[k]:.4f}" for k in ("accuracy", "f1", "precision", "recall", "mcc")))
    return lines
