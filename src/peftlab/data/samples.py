"""The small samples of public data sets that peftlab ships (peftlab/samples/<name>/: the sets the demo and
the quick start use, under licences that allow it) and that its tests read (tests/fixtures/datasets/<name>/:
research-only sets), drawn from full copies laid out as under PEFTLAB_DATA_DIR (see docs/data.md):

    python -m peftlab.data.samples FULL_DIR OUT_DIR NAME...

Every sample is drawn by a fixed rule (a seeded sample, the first rows, whole articles), so the same
full copy gives the same files; each folder's SOURCE.md names the rule and the row counts."""

from __future__ import annotations

import csv
import json
import random
import shutil
import sys
from pathlib import Path

SST2_TRAIN_ROWS = 2000  # the demo's max_samples: the same rows `max_samples: 2000` (seed 42) draws from the full file
SST2_SEED = 42
JNLPBA_TEST_SENTENCES = 400
JNLPBA_DEV_DOCUMENTS = 25
SQUAD_V1_ARTICLES = 2
SQUAD_V2_ARTICLES = 3
EXAM_TRAIN_ROWS = 40
EXAM_EXTRA_LAST_ROWS = 60
MRPC_TRAIN_ROWS = 400
MRPC_DEV_ROWS = 100
QQP_LINES = 600
PHRASEBANK_ROWS = 300
PHRASEBANK_SEED = 0
ALPACA_ROWS = 100


def seeded_lines(src: Path, dst: Path, n: int, seed: int, header: bool = True, encoding: str = "utf-8") -> None:
    """(The header +) n data lines picked as peftlab's max_samples picks records (seeded, in file order)."""
    lines = src.read_text(encoding=encoding).splitlines(keepends=True)
    top, lines = (lines[:1], lines[1:]) if header else ([], lines)
    keep = sorted(random.Random(seed).sample(range(len(lines)), n))
    dst.write_text("".join(top + [lines[i] for i in keep]), encoding=encoding)


def first_lines(src: Path, dst: Path, n: int) -> None:
    dst.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:n]), encoding="utf-8")


def first_items(src: Path, dst: Path, n: int) -> None:
    """The first n records of a JSON list."""
    dst.write_text(
        json.dumps(json.loads(src.read_text(encoding="utf-8"))[:n], ensure_ascii=False, indent=1), encoding="utf-8"
    )


def first_blocks(src: Path, dst: Path, n: int, starts_block) -> None:
    """The lines up to (not including) the (n+1)-th block start; `starts_block(line)` marks a block's first line."""
    out, seen = [], 0
    for line in src.read_text(encoding="utf-8").splitlines(keepends=True):
        if starts_block(line, out):
            seen += 1
            if seen > n:
                break
        out.append(line)
    dst.write_text("".join(out).rstrip("\n") + "\n", encoding="utf-8")


def shortest_articles(src: Path, dst: Path, n: int) -> None:
    """The n shortest SQuAD articles (by JSON length), in file order."""
    data = json.loads(src.read_text(encoding="utf-8"))
    sizes = sorted(range(len(data["data"])), key=lambda i: len(json.dumps(data["data"][i])))[:n]
    data["data"] = [data["data"][i] for i in sorted(sizes)]
    dst.write_text(json.dumps(data), encoding="utf-8")


def csv_rows(src: Path, dst: Path, pick: slice) -> None:
    """Header + the rows `pick` selects, read and written with Python's csv module (CRLF, minimal quoting)."""
    with src.open(newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    with dst.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows[pick]])


def sst2(full: Path, out: Path) -> None:
    seeded_lines(full / "train.tsv", out / "train.tsv", SST2_TRAIN_ROWS, SST2_SEED)
    shutil.copyfile(full / "dev.tsv", out / "dev.tsv")


def cola(full: Path, out: Path) -> None:
    for name in ("in_domain_train.tsv", "in_domain_dev.tsv", "out_of_domain_dev.tsv"):
        shutil.copyfile(full / name, out / name)


def jnlpba(full: Path, out: Path) -> None:
    sentence_start = lambda line, before: line.strip() and (not before or not before[-1].strip())  # noqa: E731
    first_blocks(full / "Genia4EReval1.iob2", out / "Genia4EReval1.iob2", JNLPBA_TEST_SENTENCES, sentence_start)
    docstart = lambda line, before: line.startswith("-DOCSTART-")  # noqa: E731
    first_blocks(full / "devel.tsv", out / "devel.tsv", JNLPBA_DEV_DOCUMENTS, docstart)
    shutil.copyfile(full / "LICENSE", out / "LICENSE")


def squad(full: Path, out: Path) -> None:
    shortest_articles(full / "dev-v1.1.json", out / "dev-v1.1.json", SQUAD_V1_ARTICLES)
    v2 = "squad_v2_cs224n_dev_half/dev-v2.0.json"
    (out / v2).parent.mkdir(exist_ok=True)
    shortest_articles(full / v2, out / v2, SQUAD_V2_ARTICLES)


def llm_science_exam(full: Path, out: Path) -> None:
    exam = "tony92151_augmented"
    (out / exam).mkdir(exist_ok=True)
    csv_rows(full / exam / "train.csv", out / exam / "train.csv", slice(0, EXAM_TRAIN_ROWS))
    csv_rows(
        full / exam / "extra_train_set.csv", out / exam / "extra_train_set.csv", slice(-EXAM_EXTRA_LAST_ROWS, None)
    )


def mrpc(full: Path, out: Path) -> None:
    first_lines(full / "train.tsv", out / "train.tsv", 1 + MRPC_TRAIN_ROWS)
    first_lines(full / "dev.tsv", out / "dev.tsv", 1 + MRPC_DEV_ROWS)


def qqp(full: Path, out: Path) -> None:
    first_lines(full / "new_dev.tsv", out / "new_dev.tsv", QQP_LINES)


def financial_phrasebank(full: Path, out: Path) -> None:
    name = "Sentences_AllAgree.txt"  # sorted by label: a seeded sample keeps the three classes
    seeded_lines(full / name, out / name, PHRASEBANK_ROWS, PHRASEBANK_SEED, header=False, encoding="latin-1")
    shutil.copyfile(full / "License.txt", out / "License.txt")


def alpaca(full: Path, out: Path) -> None:
    (out / "llamafactory_demo").mkdir(exist_ok=True)
    for name in (
        "alpaca_data_1k.json",
        "llamafactory_demo/alpaca_en_demo.json",
        "llamafactory_demo/alpaca_zh_demo.json",
    ):
        first_items(full / name, out / name, ALPACA_ROWS)


SETS = {f.__name__: f for f in (sst2, cola, jnlpba, squad, llm_science_exam, mrpc, qqp, financial_phrasebank, alpaca)}


def draw(full: Path, out: Path, names: list[str]) -> None:
    for name in names:
        (out / name).mkdir(parents=True, exist_ok=True)
        SETS[name](full / name, out / name)


if __name__ == "__main__":
    if len(sys.argv) < 4 or not set(sys.argv[3:]) <= set(SETS):
        sys.exit(f"usage: python -m peftlab.data.samples FULL_DIR OUT_DIR NAME... (names: {' '.join(SETS)})")
    draw(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
