"""Training data from several files: `train_file: [a.json, {file: b.csv, max_samples: 500, ...}]`.

Each file is read with its own reading keys (data_format, header, columns, delimiter, encoding,
on_bad_lines) where
it sets them, its columns are renamed to the top-level column names where it names its own, it gives
validation rows of its own when validation is split off train (so no row is on both sides, however
the files are mixed; its own validation_ratio, 0 for none, e.g. for an auxiliary set), and it is
capped by its own max_samples. Then the files are mixed:

- concat: every row of each file, in list order (the Trainer shuffles them);
- interleave: one row at a time from a file drawn with mix_ratios (or in turn), seeded, until the
  first file runs out (LLaMA-Factory's interleave_under); interleave_over: until every file has run
  out, the ones that ran out starting again (their rows repeat).

The order of an interleave comes from `datasets.interleave_datasets` (the same call LLaMA-Factory
makes, so the same seed and ratios draw the same way) over datasets of row indices: the records stay
plain Python and files with different column types never meet in one Arrow schema.
Every row remembers its file (Row), so a task's message about a bad row names the file in the list.
"""

from __future__ import annotations

from collections import Counter

from peftlab.config.settings import COLUMN_KEYS, READ_KEYS
from peftlab.errors import UserError, closest

MIXES = {
    "concat": "concat",
    "interleave": "first_exhausted",
    "interleave_under": "first_exhausted",
    "interleave_over": "all_exhausted",
}
MIXED_SOURCE = "mixed train_file"


class Row(int):
    """A 1-based row number that remembers which training file it is in: a message about mixed data
    reads "row 12 of data/b.csv". Arithmetic and JSON see a plain int."""

    file: str

    def __new__(cls, n: int, file: str):
        row = super().__new__(cls, n)
        row.file = file
        return row

    def __str__(self) -> str:
        return f"{int(self)} of {self.file}"

    def __format__(self, spec: str) -> str:
        return str(self) if not spec else format(int(self), spec)

    def __reduce__(self):
        return Row, (int(self), self.file)


def entries(train_file) -> list[dict]:
    """train_file as [{file, per-file keys}]: one entry for a single path."""
    items = train_file if isinstance(train_file, list) else [train_file]
    return [item if isinstance(item, dict) else {"file": item} for item in items]


def reading_key(data, row, key: str):
    """A reading key (READ_KEYS, e.g. on_bad_lines) as it applies to the file a row came from: its
    train_file entry's own where it sets one (the rows of a mixed list are Rows), else the top level's."""
    from peftlab.data.formats import file_path

    file = getattr(row, "file", None)
    for entry in entries(data.train_file) if file is not None else []:
        if key in entry and str(file_path(entry["file"], "train_file")) == file:
            return entry[key]
    return getattr(data, key)


def check_mix(data) -> None:
    """mix / mix_ratios against the number of train_file entries (before any file is read)."""
    n = len(entries(data.train_file))
    if data.mix not in MIXES:
        raise UserError(f"mix: '{data.mix}' is not one of {', '.join(MIXES)}{closest(data.mix, MIXES)}")
    if data.mix_ratios:
        if n < 2:
            raise UserError("mix_ratios: needs several train_file entries (train_file: [a.json, b.json])")
        if data.mix == "concat":
            raise UserError(
                "mix_ratios: applies to mix: interleave or interleave_over; with concat cap a file "
                "with its own max_samples ({file: b.json, max_samples: 500})"
            )
        if len(data.mix_ratios) != n or any(r <= 0 for r in data.mix_ratios):
            raise UserError(
                f"mix_ratios: {data.mix_ratios} must give one positive number per train_file entry "
                f"({n} entries), e.g. [{', '.join(['1'] * n)}]"
            )


def renames(entry: dict, data, key: str) -> dict[str, str]:
    """{this file's column: the top-level name} for the column keys this entry sets."""
    out = {}
    for k in COLUMN_KEYS:
        if k not in entry:
            continue
        mine, top = entry[k], getattr(data, k)
        if not top:
            raise UserError(
                f"{key}: {k}: set `{k}:` at the top level too (empty there means auto): each file's "
                f"own column is renamed to that name"
            )
        if isinstance(top, list):
            if len(mine) != len(top):
                raise UserError(f"{key}: {k}: {mine} names {len(mine)} columns, the top-level {k} {len(top)}")
            out.update({m: t for m, t in zip(mine, top) if m != t})
        elif mine != top:
            out[mine] = top
    return out


def read_entry(entry: dict, data, key: str, read):
    """One file's records with its columns renamed to the top-level names; rows are Rows."""
    from peftlab.data.formats import Split

    opts = {k: entry.get(k, getattr(data, k)) for k in READ_KEYS}
    split = read(entry["file"], key, **opts)
    names = renames(entry, data, key)
    missing = [c for c in names if c not in split.records[0]]
    if missing:
        raise UserError(
            f"{key} ({split.source}): column '{missing[0]}' not found (columns: "
            f"{', '.join(map(str, split.records[0]))}); fix the file's column keys"
        )
    records = [{names.get(k, k): v for k, v in rec.items()} for rec in split.records] if names else split.records
    return Split(records, split.source, [Row(r, split.source) for r in split.rows], split.group)


def load_mixed(data, seed: int, read, split_off, sample):
    """(train, validation; None with a validation_file): every train_file entry read, split, capped and mixed."""
    from peftlab.data.formats import Split

    parts, held_out, report = [], [], []
    for i, entry in enumerate(entries(data.train_file), 1):
        key = f"train_file[{i}]"
        split = read_entry(entry, data, key, read)
        if any(p["file"] == split.source for p in report):
            raise UserError(
                f"{key}: {split.source} is listed twice; to draw more of it, give mix: interleave "
                f"with mix_ratios, or cap the other files with max_samples"
            )
        n_read, n_val = len(split.records), 0
        ratio = entry.get("validation_ratio", data.validation_ratio)
        if not data.validation_file and ratio > 0:  # a file's own 0: all its rows train (an auxiliary set)
            by = split.group if data.split_by == "auto" else data.split_by
            split, val = split_off(split, ratio, seed, by)
            held_out.append(val)
            n_val = len(val.records)
        split = sample(split, entry.get("max_samples", 0), seed)
        parts.append(split)
        report.append({"file": split.source, "rows_read": n_read, "validation": n_val, "rows_kept": len(split.records)})
    order = mix_order([len(p.records) for p in parts], data.mix, data.mix_ratios, seed)
    train = Split(
        [parts[f].records[r] for f, r in order], MIXED_SOURCE, [parts[f].rows[r] for f, r in order], parts=report
    )
    if data.validation_file:
        return train, None
    if not held_out:
        raise UserError(
            "train_file: every entry has validation_ratio 0, so no validation rows are left; give a "
            "validation_file, or let one entry keep a validation_ratio above 0"
        )
    return train, Split([r for v in held_out for r in v.records], MIXED_SOURCE, [r for v in held_out for r in v.rows])


def mix_order(sizes: list[int], mix: str, ratios: list[float], seed: int) -> list[tuple[int, int]]:
    """(file index, row index) of each mixed row."""
    if mix == "concat":
        return [(f, r) for f, n in enumerate(sizes) for r in range(n)]
    import datasets

    total = sum(ratios) if ratios else 0
    index = [datasets.Dataset.from_dict({"f": [f] * n, "r": list(range(n))}) for f, n in enumerate(sizes)]
    mixed = datasets.interleave_datasets(
        index, probabilities=[r / total for r in ratios] if ratios else None, seed=seed, stopping_strategy=MIXES[mix]
    )
    return list(zip(mixed["f"], mixed["r"]))


def record_mix(train) -> list[dict] | None:
    """What each training file gave to the final training split (after the global max_samples): the
    run's result.json `train_files`. None for one file."""
    if not train.parts:
        return None
    used = Counter(row.file for row in train.rows)
    return [{**part, "rows_used": used.get(part["file"], 0)} for part in train.parts]
