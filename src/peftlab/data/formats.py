"""Readers for data files -> plain records (list of dicts), and the train/validation split.

Every error names the file, the line or key, and what would fix it (UserError -> exit 2).
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from peftlab.data.catalog import package_path, resolve
from peftlab.errors import UserError

FORMATS = ("auto", "csv", "tsv", "json", "jsonl", "hf", "conll", "squad")
# token-per-line NER files: CoNLL-2003 (.conll), JNLPBA/BioNLP2004 (.iob2)
CONLL_SUFFIXES = (".conll", ".iob2", ".iob", ".bio")


@dataclass
class Split:
    records: list[dict]
    source: str  # file the records came from (for messages)
    rows: list[int]  # 1-based line/row number in that file of each record
    group: str = ""  # column whose rows belong together (SQuAD: title), what split_by: auto keeps together
    parts: list = field(default_factory=list)  # mixed training data: what each file gave (mixing.load_mixed)
    skipped: list = field(default_factory=list)  # on_bad_lines: skip: [{file, line, reason}] of rows left out


def label_key(value) -> str:
    """Labels compare as strings; integral floats (1.0 from JSON) count as ints."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


# What pandas, R and spreadsheets write for a value that is not there (pandas' own na_values, the common
# ones): in a label column each would otherwise become one more class ("labels: 0, 1, NaN").
MISSING_MARKERS = ("", "nan", "na", "n/a", "null", "none")
MISSING_SHOWN = "empty, NaN, NA, N/A, null, None"
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def is_missing(value) -> bool:
    """None, a float NaN (JSON's NaN), or text that is one of MISSING_MARKERS (any case)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING_MARKERS


def label_kind(value) -> str:
    """number | name | bool: a CSV cell "1" is a number as JSON's 1 is, so that 1 and "pos" in one column
    (two label sets, not one) are told apart in every format."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "number" if NUMBER.fullmatch(str(value).strip()) else "name"


def detect_format(path: Path, data_format: str) -> str:
    if data_format != "auto":
        if data_format not in FORMATS:
            raise UserError(f"data_format: '{data_format}' is not one of {', '.join(FORMATS)}")
        return data_format
    if path.is_dir():
        return "hf"
    suffix = path.suffix.lower()
    if suffix in CONLL_SUFFIXES:
        return "conll"
    return {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".json": "json", ".jsonl": "jsonl"}.get(suffix, "csv")


def decode(path: Path, encoding: str) -> str:
    """File text; undecodable bytes or a NUL raise a UserError with the line number and the fix."""
    raw = path.read_bytes()
    # a UTF-16 file starts with its byte-order mark; latin-1 would "decode" it into NUL-riddled text
    likely = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "latin-1"
    try:
        text = raw.decode(encoding).removeprefix("\ufeff")  # MRPC's TSVs start with a byte-order mark
    except LookupError:
        raise UserError(f"encoding: unknown text encoding '{encoding}' (for {path})") from None
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(
            f"{path}:{line}: bytes that are not valid {encoding} ({raw[e.start : e.start + 4]!r}); "
            f"set `encoding:` to the file's encoding, e.g. encoding: {likely}"
        ) from None
    if "\x00" in text:  # valid UTF-8, but no text file holds NUL: UTF-16 without a BOM, or binary data
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise UserError(
            f"{path}:{line}: a NUL byte (\\x00), which text never holds: is the file UTF-16 "
            f"(set `encoding: utf-16`) or not a text file? Remove the byte or convert the file"
        )
    return text


def read_rows(path: Path, text: str, delimiter: str, quoting: int) -> tuple[list, list[int], list[int]]:
    """Non-blank csv rows with the line each ends on and the line each starts on (they differ when a
    quoted field holds line ends); a csv error (a field over the size limit) names its line."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    rows, lines, firsts, end = [], [], [], 0
    try:
        for row in reader:
            first, end = end + 1, reader.line_num
            if row and any(cell.strip() for cell in row):
                rows.append(row)
                lines.append(end)
                firsts.append(first)
    except csv.Error as e:
        hint = (
            (
                f"a field longer than {csv.field_size_limit():,} characters: an unclosed quote, or the wrong "
                f"`delimiter:`? Fix the row"
            )
            if "field limit" in str(e)
            else f"{e}; fix the row"
        )
        raise UserError(f"{path}:{end + 1}: {hint}") from None
    return rows, lines, firsts


def read_table(
    path: Path, text: str, delimiter: str, header: str, columns: list, skipped: list | None = None
) -> tuple[list[dict], list[int]]:
    """csv/tsv text -> records; a row with the wrong number of fields is an error naming the line, or,
    given a `skipped` list (on_bad_lines: skip), left out and noted there."""
    quoting = csv.QUOTE_NONE if delimiter != "," else csv.QUOTE_MINIMAL  # GLUE TSVs hold stray quotes
    rows, lines, firsts = read_rows(path, text, delimiter, quoting)
    if not rows:
        raise UserError(f"{path}: the file is empty")
    use_header = header == "true" or (header == "auto" and not columns)
    names = list(columns) if columns else (rows[0] if use_header else [f"column{i}" for i in range(len(rows[0]))])
    if use_header:
        rows, lines, firsts = rows[1:], lines[1:], firsts[1:]
    if not rows:
        raise UserError(f"{path}: the file has a header but no data rows")
    records, kept = [], []
    for row, line, first in zip(rows, lines, firsts):
        if len(row) != len(names):
            message = field_count_message(path, len(row), names, line, first, delimiter)
            if skipped is None:
                raise UserError(message + ", or set `on_bad_lines: skip` to leave such rows out (counted)")
            skipped.append({"file": str(path), "line": first, "reason": message.split(": ", 1)[1].split(";")[0]})
            continue
        records.append(dict(zip(names, row)))
        kept.append(line)
    return records, kept


def field_count_message(path: Path, n: int, names: list, line: int, first: int, delimiter: str) -> str:
    if first < line:  # a quoted field ran over line ends: the quote, not the row's end, is the mistake
        return (
            f"{path}:{first}: a quoted field runs from here to line {line}, so the row has {n} "
            f"fields, not {len(names)}: is a quote left open? Close it, or set `delimiter:` if "
            f"this is not a comma-separated file"
        )
    sep = {"\t": "tab", ",": "comma"}.get(delimiter, repr(delimiter))
    return (
        f"{path}:{line}: {n} fields, expected {len(names)} ({', '.join(names)}) separated by "
        f"{sep}; fix the row, or set `delimiter:`/`columns:` to match the file"
    )


def is_squad(data) -> bool:
    """SQuAD's nested layout: {"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("data"), list)
        and bool(data["data"])
        and isinstance(data["data"][0], dict)
        and "paragraphs" in data["data"][0]
    )


def read_squad(path: Path, data) -> tuple[list[dict], list[int]]:
    """SQuAD 1.1/2.0 JSON -> one flat record per question, in the HF `squad` layout
    (id, title, context, question, answers {text: [...], answer_start: [...]}, is_impossible).
    A record's row is its question number (1-based) in the file; errors name the question id."""
    if not is_squad(data):
        raise UserError(
            f'{path}: not SQuAD JSON (expected {{"data": [{{"title", "paragraphs": [...]}}]}}); '
            f"set data_format: json or jsonl for flat rows"
        )
    records = []
    for a, article in enumerate(data["data"], 1):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise UserError(f"{path}: data[{a - 1}]: 'paragraphs' must be a list of {{context, qas}}")
        for p, para in enumerate(paragraphs):
            where = f"{path}: data[{a - 1}].paragraphs[{p}]"
            if (
                not isinstance(para, dict)
                or not isinstance(para.get("context"), str)
                or not isinstance(para.get("qas"), list)
            ):
                raise UserError(f"{where}: needs a 'context' string and a 'qas' list")
            for q, qa in enumerate(para["qas"]):
                if not isinstance(qa, dict):
                    raise UserError(f"{where}.qas[{q}]: expected an object {{id, question, answers}}")
                qid, answers = qa.get("id", f"#{len(records) + 1}"), qa.get("answers", [])
                if not isinstance(answers, list) or not all(isinstance(x, dict) for x in answers):
                    raise UserError(f"{where}: question id {qid}: 'answers' must be a list of {{text, answer_start}}")
                records.append(
                    {
                        "id": qid,
                        "title": article.get("title") or f"article {a}",
                        "context": para["context"],
                        "question": qa.get("question"),
                        "answers": {
                            "text": [x.get("text") for x in answers],
                            "answer_start": [x.get("answer_start") for x in answers],
                        },
                        "is_impossible": bool(qa.get("is_impossible", False)),
                    }
                )
    return records, list(range(1, len(records) + 1))


def read_json(path: Path, text: str, jsonl: bool, squad: bool = False) -> tuple[list[dict], list[int]]:
    if jsonl:
        records, lines = [], []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{i}: not valid JSON ({e.msg}); each line must be one JSON object") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
            records.append(obj)
            lines.append(i)
        return records, lines
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if squad or is_squad(data):
        return read_squad(path, data)
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()) and data:
        n = len(next(iter(data.values())))  # columnar: {"sentence": [...], "label": [...]}
        if any(len(v) != n for v in data.values()):
            sizes = ", ".join(f"{k}: {len(v)}" for k, v in data.items())
            raise UserError(
                f"{path}: columnar JSON whose columns differ in length ({sizes}); every column "
                f"needs one value per example"
            )
        data = [{k: v[i] for k, v in data.items()} for i in range(n)]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(f"{path}: expected a JSON list of objects (one per example)")
    return data, list(range(1, len(data) + 1))


def read_conll(path: Path, text: str) -> tuple[list[dict], list[int]]:
    """CoNLL-style columns -> one record {tokens, tags} per sentence, its row = the line of its first token.

    A token per line, whitespace-separated columns, the token first and the tag LAST (CoNLL-2003 has 4
    columns, JNLPBA 2); a blank line ends a sentence; `-DOCSTART-` (CoNLL-2003, JNLPBA .tsv) and
    `###MEDLINE:` (original JNLPBA training file) lines mark documents and are skipped. Written here
    because neither datasets nor seqeval reads such files (datasets has per-corpus scripts only).
    """
    records, rows, tokens, tags, first = [], [], [], [], None

    def end_sentence():
        if tokens:
            records.append({"tokens": list(tokens), "tags": list(tags)})
            rows.append(start)
            tokens.clear()
            tags.clear()

    for i, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-" or fields[0].startswith("###MEDLINE:"):
            end_sentence()
            continue
        if len(fields) < 2:
            raise UserError(
                f"{path}:{i}: one column ({line.strip()!r}); expected a token and its tag separated "
                f"by whitespace, the tag in the last column, and a blank line between sentences"
            )
        first = first or (len(fields), i)
        if len(fields) != first[0]:
            raise UserError(
                f"{path}:{i}: {len(fields)} columns, but line {first[1]} has {first[0]}; every token "
                f"line needs the same columns (token first, tag last); fix the line"
            )
        if not tokens:
            start = i
        tokens.append(fields[0])
        tags.append(fields[-1])
    end_sentence()
    return records, rows


def read_hf(path: Path) -> tuple[list[dict], list[int]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise UserError(f"{path}: not a dataset saved with save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        raise UserError(f"{path} holds several splits ({', '.join(ds)}); point to one, e.g. {path}/{next(iter(ds))}")
    return ds.to_list(), list(range(1, len(ds) + 1))


def file_path(path: str | Path, key: str) -> Path:
    """The file a data key names: a path (~ expanded), a pkg: path or a named set's data:NAME/PATH
    (catalog.py); Split.source is its str()."""
    if str(path).startswith("data:"):
        return resolve(str(path), key)
    return package_path(str(path), key) if str(path).startswith("pkg:") else Path(path).expanduser()


def read_records(
    path: str | Path,
    key: str,
    data_format: str = "auto",
    encoding: str = "utf-8",
    delimiter: str = "",
    header: str = "auto",
    columns: list = (),
    on_bad_lines: str = "error",
) -> Split:
    """Read one data file (named by config key `key` in messages) into plain records. A row left out
    (on_bad_lines: skip) is noted under the name the config gave the file: a data:/pkg: name stays one, so
    a result.json names no folder of the machine it ran on."""
    given = str(path)
    path = file_path(path, key)
    if not path.exists():
        raise UserError(f"{key}: file not found: {path}")
    fmt = detect_format(path, data_format)
    if header not in ("auto", "true", "false"):
        raise UserError(f"header: '{header}' is not one of auto, true, false")
    if on_bad_lines not in ("error", "skip"):
        raise UserError(f"on_bad_lines: '{on_bad_lines}' is not error or skip")
    skipped = [] if on_bad_lines == "skip" else None
    if fmt == "hf":
        records, lines = read_hf(path)
    else:
        text = decode(path, encoding)
        if fmt == "conll":
            records, lines = read_conll(path, text)
        elif fmt in ("csv", "tsv"):
            sep = delimiter or ("\t" if fmt == "tsv" else ",")
            records, lines = read_table(path, text, sep, header, list(columns), skipped)
        else:
            records, lines = read_json(path, text, jsonl=fmt == "jsonl", squad=fmt == "squad")
    if not records:
        raise UserError(f"{path}: the file is empty ({key})")
    if given.startswith(("data:", "pkg:")):
        for row in skipped or []:
            row["file"] = given
    squad_rows = "title" in records[0] and "context" in records[0]  # SQuAD layout, nested or flat
    return Split(records, str(path), lines, "title" if squad_rows else "", skipped=skipped or [])


def skipped_lines(skipped: list, show: int = 3) -> list[str]:
    """What on_bad_lines: skip left out: the count and the first few rows with their reason."""
    if not skipped:
        return []
    lines = [f"skipped {len(skipped)} bad row{'s' * (len(skipped) != 1)} (on_bad_lines: skip):"]
    lines += [f"  {s['file']}:{s['line']}: {s['reason']}" for s in skipped[:show]]
    return lines + ([f"  ... and {len(skipped) - show} more"] if len(skipped) > show else [])


def sample(split: Split, n: int, seed: int) -> Split:
    """At most n records, a seeded random sample kept in file order; n <= 0 keeps all."""
    if n <= 0 or n >= len(split.records):
        return split
    keep = sorted(random.Random(seed).sample(range(len(split.records)), n))
    return Split(
        [split.records[i] for i in keep],
        split.source,
        [split.rows[i] for i in keep],
        parts=split.parts,
        skipped=split.skipped,
    )


def split_groups(split: Split, by: str) -> list[list[int]]:
    """Row indices grouped by the value of column `by` (first-seen order); every row alone when `by` is empty."""
    if not by:
        return [[i] for i in range(len(split.records))]
    if by not in split.records[0]:
        raise UserError(
            f"split_by: column '{by}' not found in {split.source} (columns: {', '.join(map(str, split.records[0]))})"
        )
    groups: dict[str, list[int]] = {}
    for i, rec in enumerate(split.records):
        groups.setdefault(str(rec.get(by)), []).append(i)
    return list(groups.values())


def split_off(
    split: Split, ratio: float, seed: int, by: str = "", key: str = "validation_ratio"
) -> tuple[Split, Split]:
    """Seeded split of one file into (train, validation or test); rows sharing a `by` value stay together."""
    held = "validation_file" if key == "validation_ratio" else "test_file"
    if not 0 < ratio < 1:
        raise UserError(f"{key}: {ratio} must be between 0 and 1 when {held} is empty")
    groups = split_groups(split, by)
    random.Random(seed).shuffle(groups)
    order, n_val, target = [], 0, max(1, round(len(split.records) * ratio))
    for g in groups:  # whole groups go to validation until it holds `ratio` of the rows
        order += g
        n_val += len(g) if n_val < target else 0
    if n_val >= len(order):
        unit = f"distinct '{by}' values (split_by)" if by else "rows"
        raise UserError(
            f"{split.source}: {len(groups)} {unit} are too few to split off {key}={ratio}; "
            f"give a {held}" + (", or set split_by to another column" if by else "")
        )
    pick = lambda idx: Split(
        [split.records[i] for i in sorted(idx)], split.source, [split.rows[i] for i in sorted(idx)]
    )
    return pick(order[n_val:]), pick(order[:n_val])
