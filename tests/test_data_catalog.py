"""Named data sets (data:NAME/PATH): the data folders first, then a package's copy, else the fix; `peftlab
data list` and `data get`; the samples the package ships; and nothing in the repository naming a path
outside it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import FIXTURES, SAMPLES

from peftlab.cli import main
from peftlab.config.settings import load_config
from peftlab.data.catalog import CATALOG, WRITERS, resolve
from peftlab.data.formats import read_records
from peftlab.data.splits import load_splits
from peftlab.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- resolution


def test_data_folder_wins_over_the_package_copy(tmp_path, monkeypatch):
    mine = write(tmp_path / "big" / "cola" / "in_domain_dev.tsv", "x\t1\t\tA sentence.\n")
    monkeypatch.setenv("PEFTLAB_DATA_DIR", str(tmp_path / "big"))
    assert resolve("data:cola/in_domain_dev.tsv", "validation_file") == mine
    split = read_records("data:cola/in_domain_dev.tsv", "validation_file", header="false")
    assert split.source == str(mine) and split.records == [
        {"column0": "x", "column1": "1", "column2": "", "column3": "A sentence."}
    ]


def test_several_data_folders_are_read_in_order(tmp_path, monkeypatch):
    first = write(tmp_path / "a" / "mine" / "t.tsv", "text\tlabel\nx\t1\n")
    write(tmp_path / "b" / "mine" / "t.tsv", "text\tlabel\ny\t0\n")
    only_b = write(tmp_path / "b" / "mine" / "v.tsv", "text\tlabel\nz\t0\n")
    monkeypatch.setenv("PEFTLAB_DATA_DIR", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert resolve("data:mine/t.tsv", "train_file") == first
    assert resolve("data:mine/v.tsv", "validation_file") == only_b


def test_the_package_copy_when_no_data_folder_has_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTLAB_DATA_DIR", str(tmp_path / "empty"))
    found = resolve("data:sst2/dev.tsv", "validation_file")
    assert found == SAMPLES / "sst2" / "dev.tsv"  # the full dev set: the same file as the GLUE one
    assert len(read_records("data:sst2/dev.tsv", "validation_file").records) == 872


def test_missing_names_the_key_the_folder_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTLAB_DATA_DIR", str(tmp_path / "empty"))
    where = re.escape(str(tmp_path / "empty" / "sst2" / "train.tsv"))
    with pytest.raises(UserError) as e:  # the 2,000-row sample is not the full train.tsv: no package copy
        read_records("data:sst2/train.tsv", "train_file")
    assert re.match(rf"train_file: 'data:sst2/train.tsv': not in {where} \(PEFTLAB_DATA_DIR=", str(e.value))
    assert "run `peftlab data get sst2` (it fetches hf:nyu-mll/glue/sst2 from the Hugging Face hub)" in str(e.value)
    with pytest.raises(UserError, match=r"no hub source is known for it.*PEFTLAB_DATA_DIR to a folder holding jnlpba/"):
        resolve("data:jnlpba/devel.tsv", "validation_file")
    monkeypatch.delenv("PEFTLAB_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(UserError, match=r"PEFTLAB_DATA_DIR unset, so ~/.cache/peftlab/datasets"):
        resolve("data:sst2/train.tsv", "train_file")
    with pytest.raises(UserError, match=r"train_file: 'data:sst2': write data:NAME/PATH, e.g. data:sst2/train.tsv"):
        resolve("data:sst2", "train_file")
    with pytest.raises(UserError, match=r"write data:NAME/PATH"):
        resolve("data:sst2/../../etc/passwd", "train_file")
    with pytest.raises(UserError, match=r"bench: 'pkg:peftlab/samples/sst2/train.tsv': not a data:NAME/PATH value"):
        resolve("pkg:peftlab/samples/sst2/train.tsv", "bench")  # was looked up as eftlab/samples/...


def test_a_recipe_reads_its_named_sets_from_the_data_folder(tmp_path, monkeypatch):
    rows = "".join(f"{w} movie \t{i % 2}\n" for i, w in enumerate(["good", "bad", "great", "awful"] * 5))
    write(tmp_path / "data" / "sst2" / "train.tsv", "sentence\tlabel\n" + rows)
    write(tmp_path / "data" / "sst2" / "dev.tsv", "sentence\tlabel\n" + rows[: rows.index("great")])
    monkeypatch.setenv("PEFTLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # the recipe's data does not depend on where it runs
    cfg = load_config(ROOT / "recipes" / "sst2-smollm2-lora.yaml")
    assert cfg.data.train_file == "data:sst2/train.tsv"
    splits = load_splits(cfg.data, cfg.train.seed)
    assert len(splits["train"].records) == 20 and len(splits["validation"].records) == 2
    assert splits["train"].source == str(tmp_path / "data" / "sst2" / "train.tsv")


# ---------------------------------------------------------------- data list / data get


def test_data_list_says_where_each_named_set_comes_from(tmp_path, monkeypatch, capsys):
    write(tmp_path / "data" / "mrpc" / "train.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
    monkeypatch.setenv("PEFTLAB_DATA_DIR", str(tmp_path / "data"))
    recipe = write(
        tmp_path / "r.yaml",
        "data:\n  train_file: data:mrpc/train.tsv\n  validation_file: data:mrpc/dev.tsv\n"
        "  extra_eval_file: 'data:cola/out_of_domain_dev.tsv'\n# data:mrpc/train.tsv again\n",
    )
    plain = write(tmp_path / "plain.yaml", "data:\n  train_file: my.tsv\n")
    assert main(["data", "list", str(recipe), str(plain)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"data folders: {tmp_path / 'data'} (PEFTLAB_DATA_DIR={tmp_path / 'data'})",
        f"{recipe}:",
        f"  data:mrpc/train.tsv  data dir: {tmp_path / 'data' / 'mrpc' / 'train.tsv'}",
        f"  data:mrpc/dev.tsv  missing: not in {tmp_path / 'data' / 'mrpc' / 'dev.tsv'} "
        f"(PEFTLAB_DATA_DIR={tmp_path / 'data'}); run `peftlab data get mrpc` "
        "(it fetches hf:nyu-mll/glue/mrpc from the Hugging Face hub)",
        f"  data:cola/out_of_domain_dev.tsv  pkg: {SAMPLES / 'cola' / 'out_of_domain_dev.tsv'}",
        f"{plain}: no named data",
    ]


def test_data_list_follows_a_sweeps_base(tmp_path, monkeypatch, capsys):
    """A sweep names no data itself; its `base:` recipe does (and a base may have its own base)."""
    monkeypatch.setenv("PEFTLAB_DATA_DIR", str(tmp_path / "data"))
    write(tmp_path / "r" / "inner.yaml", "data:\n  validation_file: data:mrpc/dev.tsv\n")
    write(tmp_path / "r" / "outer.yaml", "base: inner.yaml\ndata:\n  train_file: data:mrpc/train.tsv\n")
    sweep = write(tmp_path / "r" / "s" / "sweep.yaml", "name: s\nbase: ../outer.yaml\nvariants: [{method: lora}]\n")
    assert main(["data", "list", str(sweep)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[2:]] == ["data:mrpc/train.tsv", "data:mrpc/dev.tsv"]


def test_data_list_defaults_to_every_recipe(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    recipes = sorted(Path("recipes").glob("**/*.yaml"))
    assert len(recipes) >= 20 and all(f"{r}:" in out for r in recipes)
    # the tests' data folders hold every set the recipes name
    assert "missing" not in out and "  data:jnlpba/devel.tsv  data dir: " in out


def test_data_get_offline_is_refused_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PEFTLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert main(["data", "get", "sst2"]) == 2
    err = capsys.readouterr().err
    assert "data get sst2: offline (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set)" in err
    assert str(tmp_path / "data" / "sst2") in err
    assert not (tmp_path / "data").exists()
    assert main(["data", "get", "imdb"]) == 2
    assert "no data set 'imdb' in the catalog; known: alpaca, cola," in capsys.readouterr().err


def test_data_get_with_every_file_at_hand_needs_no_hub(tmp_path, monkeypatch, capsys):
    """cola ships whole with the package, so nothing is fetched (and offline is no obstacle)."""
    monkeypatch.setenv("PEFTLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    write(tmp_path / "data" / "cola" / "in_domain_train.tsv", "x\t1\t\tA sentence.\n")
    assert main(["data", "get", "cola"]) == 0
    out = capsys.readouterr().out
    assert f"cola/in_domain_train.tsv: already in {tmp_path / 'data' / 'cola' / 'in_domain_train.tsv'}" in out
    assert "cola/in_domain_dev.tsv: no hub source; copy the file to" in out
    assert sorted(p.name for p in (tmp_path / "data").rglob("*") if p.is_file()) == ["in_domain_train.tsv"]


def test_hub_rows_are_written_in_the_files_own_format(tmp_path):
    """The writers `data get` uses, on rows shaped as the hub sets' (glue/sst2, glue/mrpc, squad): peftlab
    reads each file back as it reads the original."""
    import datasets

    sst2 = datasets.Dataset.from_dict({"sentence": ["a fine film ", "dull "], "label": [1, 0], "idx": [0, 1]})
    (tmp_path / "train.tsv").write_text(WRITERS["sst2"](sst2))
    assert (tmp_path / "train.tsv").read_text() == "sentence\tlabel\na fine film \t1\ndull \t0\n"  # as GLUE's
    mrpc = datasets.Dataset.from_dict({"sentence1": ["A b."], "sentence2": ["B a."], "label": [1], "idx": [7]})
    (tmp_path / "dev.tsv").write_text(WRITERS["mrpc"](mrpc))
    row = read_records(tmp_path / "dev.tsv", "validation_file").records[0]
    assert (row["Quality"], row["#1 String"], row["#2 String"]) == ("1", "A b.", "B a.")
    context = "Paris is in France. Lyon too."
    squad = datasets.Dataset.from_dict(
        {
            "id": ["q1", "q2", "q3"],
            "title": ["Paris", "Paris", "Cars"],
            "context": [context, context, "Cars have wheels."],
            "question": ["Where is Paris?", "Where is Lyon?", "What do cars have?"],
            "answers": [
                {"text": ["France"], "answer_start": [12]},
                {"text": ["France", "in France"], "answer_start": [12, 9]},
                {"text": ["wheels"], "answer_start": [10]},
            ],
        }
    )
    (tmp_path / "dev.json").write_text(WRITERS["squad"](squad))
    data = json.loads((tmp_path / "dev.json").read_text())["data"]
    assert [(a["title"], len(a["paragraphs"])) for a in data] == [("Paris", 1), ("Cars", 1)]
    records = read_records(tmp_path / "dev.json", "train_file").records
    assert [r["id"] for r in records] == ["q1", "q2", "q3"] and records[0]["title"] == "Paris"
    assert records[1]["answers"] == {"text": ["France", "in France"], "answer_start": [12, 9]}
    assert all(r["context"][s:].startswith(t) for r in records for t, s in zip(*r["answers"].values()))


# ---------------------------------------------------------------- samples and the repository


def test_every_sample_folder_says_where_it_came_from():
    for folder in [*SAMPLES.iterdir(), *(p for p in FIXTURES.iterdir() if p.is_dir())]:
        source = (folder / "SOURCE.md").read_text(encoding="utf-8")
        assert "github.com/" in source and "## Licence" in source, folder
        assert folder.name in CATALOG, f"{folder.name}: a sample of a set the catalog does not name"
    total = sum(f.stat().st_size for f in SAMPLES.rglob("*") if f.is_file())
    assert total < 2_000_000  # the package stays small


def test_the_package_ships_its_samples():
    import tomllib

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["peftlab"]
    shipped = {p for g in globs for p in (ROOT / "src" / "peftlab").glob(g) if p.is_file()}
    assert {p for p in SAMPLES.rglob("*") if p.is_file()} <= shipped  # tests/test_packaging.py builds the wheel


def test_nothing_names_a_path_outside_the_repository():
    """No file under src/, tests/, recipes/, bench/, the docs (their result files too) nor the Makefile names
    the machine's data folder or a path above the clone; a relative path in a recipe stays inside the
    repository (a data key's from the project root, where recipes run; a base: from the recipe's own
    folder)."""
    outside = ["shared/" + "datasets", "../" + "shared", '"shared" / ' + '"datasets"']
    files = [ROOT / "Makefile"] + [
        p
        for top in ("src", "tests", "recipes", "bench")
        for p in (ROOT / top).rglob("*")
        if p.is_file()
        and p.suffix in (".py", ".yaml", ".yml", ".md", ".toml", ".txt", ".sh", ".json", ".cfg")
        and not any(part.startswith(".venv") for part in p.relative_to(ROOT).parts)  # bench's LLaMA-Factory venv
    ]
    # the docs' examples may name a temporary folder, where a clone may live too: its parent is checked in code only
    docs = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    docs += [p for p in (ROOT / "docs" / "results").rglob("*") if p.suffix in (".md", ".json", ".jsonl", ".yaml")]
    found = [
        f"{p.relative_to(ROOT)}: {s}"
        for p in files + docs
        for s in outside + ([str(ROOT.parent) + "/"] if p in files else [])
        if s in p.read_text(errors="replace")
    ]
    assert not found, found
    climbs = []
    for recipe in (ROOT / "recipes").rglob("*.yaml"):
        for line in recipe.read_text(encoding="utf-8").splitlines():
            for m in re.finditer(r"(base:\s*['\"]?)?(?<![\w./])(\.\./[^\s'\",}\]#]*)", line):
                start = recipe.parent if m.group(1) else ROOT
                if not (start / m.group(2)).resolve().is_relative_to(ROOT):
                    climbs.append(f"{recipe.relative_to(ROOT)}: {line.strip()}")
    assert not climbs, climbs


def test_the_dashboard_leaves_named_sets_to_their_resolution(tmp_path):
    """A pasted file's paths are checked against the allowed folders; data: and pkg: values are not
    paths there (the run resolves them), a plain path is."""
    from peftlab.ui.jobs import named_paths

    cfg = load_config(
        None,
        ["train_file=data:sst2/train.tsv", "validation_file=pkg:peftlab/samples/sst2/dev.tsv"]
        + [f"extra_eval_file={tmp_path / 'x.tsv'}"],
    )
    assert named_paths(cfg) == [("extra_eval_file", str(tmp_path / "x.tsv")), ("output_dir", "runs")]
