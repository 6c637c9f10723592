"""`peftlab init`'s first half: read a data file and decide its task and columns, each decision with its
reason, and the warnings a user must see before training (tiny classes, missing labels, one class).

The file is read by the same readers a run uses (formats.read_records), so what is detected is what a
run will read. Every decision can be overruled: --task, --text-column, --label-column.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from peftlab.data.formats import NUMBER, detect_format, is_missing, label_key, read_records
from peftlab.errors import UserError

TASKS = ("classification", "ner", "qa", "sft", "multiple_choice")
LABEL_HINTS = ("label", "labels", "class", "category", "sentiment", "answer", "target", "stars", "rating", "score", "y")
ID_HINTS = ("id", "idx", "index", "guid", "uid")
QUESTION_KEYS = ("question", "prompt", "question_stem")  # also the multiple-choice task's own layout detection
OPTION_LETTERS = "ABCDEFGH"
MAX_CLASSES = 50  # more distinct values than this is no label column unless named so
TINY_CLASS = 5  # fewer rows than this in a class: warned
HEADER_CELL = 40  # a first-row cell longer than this, or a number, means the file has no header


@dataclass
class Detection:
    path: Path
    rows: int
    task: str
    settings: dict  # config keys (data and task sections) that read the file this way
    decisions: list[str] = field(default_factory=list)  # "what: value (why)"
    warnings: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # the text a model reads per row (for token lengths)
    sequences: int = 1  # sequences the model reads per row (multiple choice: one per option)


def sniff_table(text: str, delimiter: str) -> tuple[str, bool]:
    """(delimiter, has header) of csv-like text: the separator is the one of , tab ; | @ that splits the first
    lines into the same number of fields; a header row has only short cells that are not numbers. Not
    csv.Sniffer: it guesses from character frequencies and may pick a letter or a space on a few short lines,
    and its has_header() compares column types, which a text-and-label file does not tell apart."""
    lines = [line for line in text.splitlines()[:20] if line.strip()]
    if not delimiter:
        counts = {sep: [line.count(sep) for line in lines] for sep in (",", "\t", ";", "|", "@")}
        steady = [sep for sep, c in counts.items() if c and min(c) > 0 and len(set(c)) == 1]
        delimiter = steady[0] if steady else max(counts, key=lambda sep: min(counts[sep] or [0]))
    cells = lines[0].split(delimiter) if lines else []
    header = all(len(c.strip()) <= HEADER_CELL and not NUMBER.fullmatch(c.strip()) for c in cells)
    return delimiter, header


def looks_conll(text: str) -> bool:
    """Token-per-line data: blank lines between sentences, 2-4 whitespace-separated fields per line, the last one
    a tag from a small set (O, B-X, I-X, ...)."""
    lines = text.splitlines()[:2000]
    filled = [line.split() for line in lines if line.strip()]
    if not filled or len(filled) == len(lines):
        return False
    widths = Counter(len(f) for f in filled)
    width, count = widths.most_common(1)[0]
    tags = {f[-1] for f in filled if len(f) == width}
    iob = all(t == "O" or t[:2] in ("B-", "I-", "E-", "S-") for t in tags)
    return 2 <= width <= 4 and count >= 0.95 * len(filled) and iob and "O" in tags


def read_file(path: Path, data_format: str = "auto") -> tuple[list[dict], str, dict, list[str]]:
    """Records of the file, its format, the reading keys a config needs for them (those that differ from the
    defaults), and the decisions that chose them."""
    if not path.is_file():
        raise UserError(f"{path}: no such file; give a .csv, .tsv, .txt, .json, .jsonl or .conll file")
    raw = path.read_bytes()
    keys, decisions = {}, []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text, keys["encoding"] = raw.decode("latin-1"), "latin-1"
        decisions.append("encoding: latin-1 (the file is not valid UTF-8)")
    suffix = path.suffix.lower()
    fmt = data_format
    if fmt == "auto" and suffix in (".csv", ".tsv", ".txt") and looks_conll(text):
        fmt = "conll"
        decisions.append("format: conll (a token and its tag per line, blank lines between sentences)")
    elif fmt == "auto" and suffix in (".csv", ".tsv", ".txt"):
        default = "," if suffix == ".csv" else "\t"
        sep, header = sniff_table(text, "")
        fmt = "csv" if suffix == ".csv" else "tsv"
        if sep != default:
            keys["delimiter"] = sep
        if suffix == ".txt" and sep == ",":
            fmt, keys = "csv", {k: v for k, v in keys.items() if k != "delimiter"}
        if not header:
            keys["header"] = "false"
        shown = {",": "comma", "\t": "tab"}.get(sep, repr(sep))
        decisions.append(
            f"format: {fmt}, separated by {shown}, "
            + ("first row is the header" if header else "no header row (the first row holds long text or numbers)")
        )
    fmt = detect_format(path, fmt)
    if fmt != detect_format(path, "auto"):
        keys["data_format"] = fmt
    split = read_records(
        path,
        "DATA",
        fmt,
        keys.get("encoding", "utf-8"),
        keys.get("delimiter", ""),
        keys.get("header", "auto"),
        on_bad_lines="skip",
    )
    if split.skipped:
        keys["on_bad_lines"] = "skip"
        decisions.append(f"on_bad_lines: skip ({len(split.skipped)} rows have the wrong number of fields)")
    return split.records, fmt, keys, decisions


@dataclass
class Column:
    name: str
    values: list  # as read
    missing: int
    distinct: int
    numeric: bool  # every present value is a number
    length: float  # average characters of the present values

    @classmethod
    def of(cls, name: str, records: list[dict]) -> Column:
        values = [r.get(name) for r in records]
        present = [v for v in values if not is_missing(v)]
        texts = [label_key(v) for v in present if not isinstance(v, (list, dict))]
        numeric = bool(texts) and all(NUMBER.fullmatch(t) for t in texts)
        length = statistics.fmean(len(t) for t in texts) if texts else 0.0
        return cls(name, values, len(values) - len(present), len(set(texts)), numeric, length)


def pick_label(columns: dict[str, Column], rows: int, given: str) -> tuple[Column, str]:
    if given:
        if given not in columns:
            raise UserError(f"--label-column {given}: no such column; the columns are {', '.join(columns)}")
        return columns[given], "you chose it"
    scalar = [c for c in columns.values() if c.distinct >= 1 and c.name.lower() not in ID_HINTS]
    hinted = [c for c in scalar if c.name.lower() in LABEL_HINTS]
    if hinted:
        return hinted[0], f"{hinted[0].distinct} distinct values in {rows:,} rows; name hint"
    few = [c for c in scalar if 2 <= c.distinct <= min(MAX_CLASSES, max(2, rows // 3))]
    if not few:
        raise UserError(
            f"no label column found: no column has between 2 and {MAX_CLASSES} distinct values; "
            f"columns: {', '.join(columns)}. Give --label-column NAME"
        )
    # fewest values, a column with no gaps first; ties: the later column (labels tend to come last)
    best = min(few, key=lambda c: (c.missing > 0, c.distinct, -list(columns).index(c.name)))
    return best, f"{best.distinct} distinct values in {rows:,} rows: the fewest of any column"


def classification(records: list[dict], given_text: str, given_label: str, rows: int, det: Detection) -> None:
    columns = {name: Column.of(name, records) for name in records[0]}
    label, why = pick_label(columns, rows, given_label)
    if label.numeric and label.distinct > MAX_CLASSES:
        raise UserError(
            f"label column '{label.name}' holds {label.distinct:,} different numbers: a regression target, and "
            f"peftlab's tasks learn classes. Bin the numbers into classes in the file (e.g. low/mid/high), or give "
            f"--label-column for another column"
        )
    det.decisions.append(f"label column: {label.name} ({why})")
    texts = [c for c in columns.values() if c is not label and not c.numeric and c.name.lower() not in ID_HINTS]
    if given_text:
        if given_text not in columns:
            raise UserError(f"--text-column {given_text}: no such column; the columns are {', '.join(columns)}")
        text, why = columns[given_text], "you chose it"
    elif not texts:
        raise UserError(f"no text column found besides the label '{label.name}'; give --text-column NAME")
    else:
        text = max(texts, key=lambda c: c.length)
        why = f"the longest text: {text.length:.0f} characters on average"
    det.decisions.append(f"text column: {text.name} ({why})")
    det.settings.update(text_column=text.name, label_column=label.name)
    pair = [
        c
        for c in texts
        if c is not text and c.length >= max(10, 0.3 * text.length) and c.distinct >= 0.5 * (rows - c.missing)
    ]
    if pair and not given_text:
        first, second = sorted([text, pair[0]], key=lambda c: list(columns).index(c.name))
        det.settings.update(text_column=first.name, text_pair_column=second.name)
        det.decisions[-1] = f"text column: {first.name} (first of two long text columns)"
        det.decisions.append(
            f"second text column: {second.name} ({second.length:.0f} characters on average, mostly distinct): "
            f"sentence-pair classification"
        )
    shown = [c for c in (det.settings["text_column"], det.settings.get("text_pair_column")) if c]
    det.texts = [" ".join(str(r.get(c) or "") for c in shown) for r in records]
    check_labels(label, det)
    if columns[det.settings["text_column"]].missing:
        det.warnings.append(
            f"{columns[det.settings['text_column']].missing} rows have no text in '{det.settings['text_column']}'"
        )


def check_labels(label: Column, det: Detection) -> None:
    counts = Counter(label_key(v) for v in label.values if not is_missing(v))
    if len(counts) < 2:
        only = next(iter(counts), "(none)")
        raise UserError(
            f"label column '{label.name}' has one value ('{only}') in every labelled row: there is nothing to tell "
            f"apart. Give --label-column for the column that holds the classes, or add rows of the other classes"
        )
    shown = ", ".join(f"{k} {n}" for k, n in counts.most_common(8)) + (", ..." if len(counts) > 8 else "")
    det.decisions.append(f"labels: {len(counts)} classes ({shown})")
    small, big = min(counts.values()), max(counts.values())
    if len(counts) > 2 or small < 0.5 * big:
        det.settings["metric_for_best"] = "f1_macro"
        det.decisions.append(
            f"metric_for_best: f1_macro (the mean F1 over classes: with {len(counts)} classes of {small} to {big} "
            f"rows, accuracy would favour the largest class)"
        )
    if label.missing:
        det.settings["on_bad_lines"] = "skip"
        det.warnings.append(
            f"{label.missing} rows have no label in '{label.name}' (empty, NaN, NA, null...): they are left out "
            f"(on_bad_lines: skip) and counted in each run's result.json"
        )
    tiny = [f"{k} ({n})" for k, n in counts.items() if n < TINY_CLASS]
    if tiny:
        det.warnings.append(
            f"classes with fewer than {TINY_CLASS} rows: {', '.join(tiny[:10])}; a model cannot learn them and "
            f"validation may hold none of them: get more rows or merge them into another class"
        )
    if len(counts) > MAX_CLASSES:
        det.warnings.append(f"{len(counts)} classes: is '{label.name}' really the label?")


def options_of(keys: list[str]) -> list[str]:
    letters = [k for k in OPTION_LETTERS if k in keys]
    return letters if len(letters) >= 2 and letters == list(OPTION_LETTERS[: len(letters)]) else []


def guess_task(records: list[dict], fmt: str) -> tuple[str, str]:
    keys = list(records[0])
    if fmt == "conll":
        return "ner", "a token and its tag per line"
    if {"context", "question", "answers"} <= set(keys):
        return "qa", "context, question and answers fields (SQuAD layout)"
    if isinstance(records[0].get("tokens"), list) and ({"tags", "ner_tags"} & set(keys)):
        return "ner", "a list of tokens and a list of tags per row"
    if {"instruction", "output"} <= set(keys) or {"conversations"} & set(keys) or "messages" in keys:
        return "sft", "instruction/output (alpaca) or conversation fields: instruction tuning of a causal LM"
    question = next((k for k in QUESTION_KEYS if k in keys), "")
    if question and (options_of(keys) or "distractor1" in keys) and ("answer" in keys or "correct_answer" in keys):
        return "multiple_choice", f"a question ({question}), lettered options and an answer"
    return "classification", "rows of text with a label column"


def detect(
    path: str | Path, task: str = "", text_column: str = "", label_column: str = "", data_format: str = "auto"
) -> Detection:
    """What `peftlab init` decided about a data file, and why."""
    path = Path(path)
    records, fmt, keys, decisions = read_file(path, data_format)
    guessed, why = guess_task(records, fmt)
    if task and task not in TASKS:
        raise UserError(f"--task {task}: not one of {', '.join(TASKS)}")
    det = Detection(path, len(records), task or guessed, dict(keys), decisions)
    det.decisions.append(f"rows: {len(records):,}")
    det.decisions.append(f"task: {det.task} ({'you chose it' if task else why})")
    det.settings["task"] = det.task
    if det.task == "classification":
        classification(records, text_column, label_column, len(records), det)
    elif det.task == "multiple_choice":
        keys_ = list(records[0])
        question = next((k for k in QUESTION_KEYS if k in keys_), "")
        options = options_of(keys_)
        if options:
            det.settings.update(question_column=question, option_columns=options, answer_column="answer")
            det.decisions.append(f"question: {question}; options: {', '.join(options)}; answer: answer")
        option_keys = options or ["correct_answer"]
        det.sequences = len(options) or 4  # SciQ's layout: the answer and three distractors
        det.texts = [" ".join(str(r.get(k) or "") for k in (question, o)) for r in records for o in option_keys]
    elif det.task == "ner":
        det.texts = [" ".join(map(str, r.get("tokens") or [])) for r in records]
        tags = Counter(t for r in records for t in (r.get("tags") or r.get("ner_tags") or []))
        det.decisions.append(f"tags: {', '.join(f'{t} {n}' for t, n in tags.most_common(8))}")
    elif det.task == "qa":
        det.texts = [f"{r.get('question', '')} {r.get('context', '')}" for r in records]
    else:
        det.texts = [" ".join(str(v) for v in r.values() if isinstance(v, str)) for r in records]
    return det
