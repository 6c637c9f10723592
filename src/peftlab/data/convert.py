"""`peftlab data`: convert data files between formats and check a config's data against its task.

convert: read any file the training path reads (formats.read_records, with the same keys: columns,
header, delimiter, encoding) or a CoNLL file, optionally fill an Alpaca instruction template per
row, drop exact or normalized duplicates, cap to a seeded sample, and write JSON / JSONL / CSV / TSV /
Alpaca JSON / CoNLL. Everything is validated before the output is written, atomically.
check: load the config, its splits and the task's prepare() exactly as `peftlab train` does, then
print rows, label distribution and token-length percentiles (from the task's own encode()).
"""

from __future__ import annotations

import csv
import io
import json
import re
import string
import unicodedata
from collections import Counter
from pathlib import Path

from peftlab.data.formats import Split, label_key, read_records, sample, skipped_lines
from peftlab.errors import UserError, closest

OUT_FORMATS = ("alpaca", "json", "jsonl", "csv", "tsv", "conll")
BY_SUFFIX = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".conll": "conll",
    ".iob": "conll",
    ".iob2": "conll",
    ".bio": "conll",
}
DEDUPE = ("none", "exact", "normalized")
# DataConfig keys that say how to read the input file and which columns the templates default to
READ_KEYS = (
    "data_format",
    "header",
    "columns",
    "delimiter",
    "encoding",
    "on_bad_lines",
    "text_column",
    "text_pair_column",
    "label_column",
)
TEMPLATE_KEYS = {
    "instruction": "alpaca: instruction template; {column} is replaced by that column's value ({{ }} for braces)",
    "input": "alpaca: input template, e.g. 'Question 1: {question1}\\nQuestion 2: {question2}' (\\n: new line); "
    "empty = '{text_column}' (+ newline + '{text_pair_column}' when set)",
    "output": "alpaca: output template; empty = '{label_column}'",
    "label_words": "map label values to words before the templates are filled, e.g. '0=unacceptable,1=acceptable' "
    "or '{0: no, 1: yes}'",
}


def convert_help() -> str:
    from peftlab.config.settings import field_index

    index = field_index()
    lines = ["Keys (key=value): reading the input, as in training configs:"]
    lines += [f"  {k:<18} {index[k][1].metadata['help']}" for k in READ_KEYS]
    lines += ["  (data_format=conll, or a .conll/.iob/.iob2/.bio file: 'token<TAB>tag' lines -> {tokens, tags})"]
    lines += ["Alpaca templates (--to alpaca):"] + [f"  {k:<18} {h}" for k, h in TEMPLATE_KEYS.items()]
    return "\n".join(lines)


def parse_keys(pairs: list[str]):
    """key=value pairs -> (DataConfig for reading, template settings). Templates stay raw strings."""
    from peftlab.config.settings import load_config, parse_override

    read, templates = [], {}
    for text in pairs:
        key, value = parse_override(text)
        key = key.removeprefix("data.")
        if key in TEMPLATE_KEYS:
            raw = text.split("=", 1)[1].replace("\\n", "\n").replace("\\t", "\t")  # \n typed in a shell
            templates[key] = label_words_value(value) if key == "label_words" else raw
        elif key in READ_KEYS:
            read.append(f"{key}={text.split('=', 1)[1]}")
        else:
            raise UserError(
                f"'{text}': unknown key '{key}'{closest(key, [*READ_KEYS, *TEMPLATE_KEYS])}; "
                f"`peftlab data convert --help` lists the keys"
            )
    return load_config(None, read).data, templates


def label_words_value(raw: str):
    """label_words=TEXT: '{0: no, 1: yes}' or '[0=no, 1=yes]' read as YAML whose scalars stay text (as
    in configs: `no` is the word "no", not False), anything else as 'k=v,k=v' text."""
    from peftlab.config.settings import yaml_value

    if not raw.strip().startswith(("{", "[")):
        return raw
    example = "label_words=0=no,1=yes or label_words='{0: no, 1: yes}'"
    return yaml_value(raw, f"label_words: {raw!r}", "mapping", example)


def label_map(value) -> dict[str, str]:
    """label_words as a YAML mapping, or 'k=v,k=v' text -> {label: word}."""
    if not value:
        return {}
    if isinstance(value, dict):
        return {label_key(k): str(v) for k, v in value.items()}
    items = value if isinstance(value, list) else str(value).split(",")
    out = {}
    for item in items:
        key, sep, word = str(item).partition("=")
        if not sep:
            raise UserError(f"label_words: '{item}' is not label=word; write e.g. label_words=0=no,1=yes")
        out[key.strip()] = word.strip()
    return out


# ---- reading -----------------------------------------------------------------------------------


def read_input(path: str | Path, data) -> Split:
    """The input file, read by the training path's readers (CoNLL files included)."""
    return read_records(
        Path(path).expanduser(),
        "input file",
        data.data_format,
        data.encoding,
        data.delimiter,
        data.header,
        data.columns,
        data.on_bad_lines,
    )


# ---- alpaca templates --------------------------------------------------------------------------


def template_fields(name: str, template: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise UserError(
            f"{name}: bad template {template!r} ({e}); write {{column}} for a column, {{{{ and }}}} for literal braces"
        ) from None


def to_alpaca(split: Split, data, templates: dict) -> list[dict]:
    """One {instruction, input, output} per row; a missing column or an empty output is an error."""
    pair = f"\n{{{data.text_pair_column}}}" if data.text_pair_column else ""
    parts = {
        "instruction": templates.get("instruction", ""),
        "input": templates.get("input") or f"{{{data.text_column}}}{pair}",
        "output": templates.get("output") or f"{{{data.label_column}}}",
    }
    words = label_map(templates.get("label_words"))
    have = list(split.records[0])
    used = [(name, f) for name, t in parts.items() for f in template_fields(name, t)]
    used += [("label_words", data.label_column)] if words else []
    for name, f in used:
        if f not in have:
            raise UserError(
                f"{split.source}: column '{f}' (used by {name}) not found (columns: "
                f"{', '.join(map(str, have))}); fix the template, set `text_column:`/"
                f"`label_column:`, or name the columns with `columns:` if the file has no header"
            )
    out = []
    for rec, row in zip(split.records, split.rows):
        values = dict(rec)
        for name, f in used:  # an empty input is fine in Alpaca data; a missing value or an empty target is not
            if values.get(f) is None or (name in ("output", "label_words") and str(values[f]).strip() == ""):
                raise UserError(
                    f"{split.source}: row {row}: column '{f}' (used by {name}) is missing or empty; "
                    f"fix or remove the row"
                )
        if words:
            label = label_key(values[data.label_column])
            if label not in words:
                raise UserError(
                    f"{split.source}: row {row}: label '{label}' has no entry in label_words "
                    f"({', '.join(words)}); add it, e.g. label_words=...,{label}=WORD"
                )
            values[data.label_column] = words[label]
        out.append({name: t.format_map(values) for name, t in parts.items()})
    return out


# ---- de-duplication ----------------------------------------------------------------------------


def normalize(value) -> str:
    """Lowercased, NFKC, punctuation and whitespace runs collapsed to one space."""
    text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
    return " ".join(re.sub(r"[\W_]+", " ", unicodedata.normalize("NFKC", text).casefold()).split())


def dedupe(split: Split, mode: str, fields: list[str]) -> tuple[Split, list[tuple[int, int, str, dict]]]:
    """Keep the first of each duplicate group; returns (kept, [(dropped row, kept row, exact|normalized, record)])."""
    if mode not in DEDUPE:
        raise UserError(f"--dedupe: '{mode}' is not one of {', '.join(DEDUPE)}")
    if mode == "none":
        return split, []
    fields = fields or list(split.records[0])
    missing = [f for f in fields if f not in split.records[0]]
    if missing:
        raise UserError(
            f"--dedupe-on: field '{missing[0]}' not in the output records (fields: {', '.join(split.records[0])})"
        )
    seen_exact, seen_norm, keep, dropped = {}, {}, [], []
    for i, (rec, row) in enumerate(zip(split.records, split.rows)):
        exact = json.dumps([rec.get(f) for f in fields], ensure_ascii=False)
        norm = tuple(normalize(rec.get(f, "")) for f in fields)
        if exact in seen_exact:
            dropped.append((row, seen_exact[exact], "exact", rec))
        elif mode == "normalized" and norm in seen_norm:
            dropped.append((row, seen_norm[norm], "normalized", rec))
        else:
            seen_exact[exact] = row
            keep.append(i)
            seen_norm.setdefault(norm, row)
    return Split([split.records[i] for i in keep], split.source, [split.rows[i] for i in keep]), dropped


# ---- writing -----------------------------------------------------------------------------------


def out_format(path: Path, to: str) -> tuple[str, str]:
    """(record shape, file format) from --to and OUT's extension: alpaca is written as JSON unless OUT is .jsonl."""
    by_ext = BY_SUFFIX.get(path.suffix.lower())
    if to and to not in OUT_FORMATS:
        raise UserError(f"--to: '{to}' is not one of {', '.join(OUT_FORMATS)}{closest(to, OUT_FORMATS)}")
    if to == "alpaca":
        return "alpaca", "jsonl" if by_ext == "jsonl" else "json"
    if not (to or by_ext):
        raise UserError(
            f"{path}: cannot tell the output format from the extension; pass --to ({', '.join(OUT_FORMATS)})"
        )
    return "records", to or by_ext


def serialize(split: Split, fmt: str) -> str:
    recs = split.records
    if fmt == "json":
        return json.dumps(recs, ensure_ascii=False, indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
    if fmt == "conll":
        return write_conll(split)
    names = list(dict.fromkeys(k for r in recs for k in r))
    for rec, row in zip(recs, split.rows):
        for k, v in rec.items():
            if isinstance(v, (list, dict)) or (fmt == "tsv" and isinstance(v, str) and re.search(r"[\t\n\r]", v)):
                what = "a list or object" if isinstance(v, (list, dict)) else "a tab or line break"
                raise UserError(
                    f"{split.source}: row {row}: field '{k}' holds {what}, which {fmt} cannot hold; "
                    f"write .jsonl or .json instead"
                )
    buf = io.StringIO()
    # TSV as GLUE writes it (no quoting; the reader reads tsv unquoted); CSV quoted where needed
    quoting = dict(quoting=csv.QUOTE_NONE, quotechar=None) if fmt == "tsv" else {}
    writer = csv.DictWriter(buf, names, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n", **quoting)
    writer.writeheader()
    writer.writerows(recs)
    return buf.getvalue()


def write_conll(split: Split) -> str:
    lines = []
    for rec, row in zip(split.records, split.rows):
        tokens, tags = rec.get("tokens"), rec.get("tags")
        if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
            raise UserError(f"{split.source}: row {row}: conll output needs equal-length lists 'tokens' and 'tags'")
        lines += [f"{tok}\t{tag}" for tok, tag in zip(tokens, tags)] + [""]
    return "\n".join(lines)


def shorten(rec: dict, fields: list[str], width: int = 90) -> str:
    text = " | ".join(str(rec[f]) for f in fields or rec)
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def dedupe_report(kept: Split, dropped: list, fields: list[str]) -> list[str]:
    """How many were dropped, how many of those hid a conflict, and one example of each kind."""
    kinds = Counter(kind for _, _, kind, _ in dropped)
    by_row = dict(zip(kept.rows, kept.records))
    head = (
        f"dropped {len(dropped)} duplicates ({kinds['exact']} exact, {kinds['normalized']} normalized)"
        f" over {', '.join(fields) or 'all fields'}"
    )
    if fields:  # a dropped copy whose other fields differ (e.g. its label) hides a conflict
        differ = sum(
            any(rec.get(f) != by_row[first].get(f) for f in rec if f not in fields) for _, first, _, rec in dropped
        )
        head += f"; {differ} of them differ from the kept row in other fields (e.g. the label)"
    lines = [head]
    for kind in ("exact", "normalized"):
        row, first, _, rec = next((d for d in dropped if d[2] == kind), (0, 0, "", None))
        if rec is not None:
            same = "" if kind == "exact" else f" {shorten(by_row[first], fields)}"
            lines.append(f"  {kind}: row {row} {shorten(rec, fields)} repeats row {first}{same}")
    return lines


def convert(
    src: str,
    dst: str,
    to: str = "",
    pairs: list[str] = (),
    max_rows: int = 0,
    seed: int = 42,
    dedupe_mode: str = "none",
    dedupe_on: list[str] = (),
    overwrite: bool = False,
) -> list[str]:
    """Read, convert, dedupe, cap and write; returns the report lines. Nothing is written on error."""
    from peftlab.runs.rundir import write_text

    dst_path = Path(dst).expanduser()
    shape, fmt = out_format(dst_path, to)
    if dst_path.is_dir():
        raise UserError(f"{dst_path} is a folder; give a file name, e.g. {dst_path / 'data.json'}")
    if dst_path.exists() and not overwrite:
        raise UserError(f"{dst_path} already exists; pass --overwrite to replace it")
    if max_rows < 0:
        raise UserError(f"--max-rows: must be 0 (all) or more, got {max_rows}")
    data, templates = parse_keys(list(pairs))
    if templates and shape != "alpaca":
        raise UserError(f"{', '.join(templates)}: templates apply only with --to alpaca")
    split = read_input(src, data)
    report = [f"read {len(split.records)} rows from {split.source}"] + skipped_lines(split.skipped)
    if shape == "alpaca":
        split = Split(to_alpaca(split, data, templates), split.source, split.rows)
    split, dropped = dedupe(split, dedupe_mode, list(dedupe_on))
    if dedupe_mode != "none":
        report += dedupe_report(split, dropped, list(dedupe_on))
    if 0 < max_rows < len(split.records):
        split = sample(split, max_rows, seed)
        report.append(f"kept a sample of {max_rows} rows (seed {seed})")
    text = serialize(split, fmt)
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    write_text(dst_path, text)
    report.append(f"wrote {len(split.records)} {'alpaca ' if shape == 'alpaca' else ''}records to {dst_path} ({fmt})")
    return report


# ---- check -------------------------------------------------------------------------------------
