"""Training on several files at once: train_file as a list, mix concat / interleave, per-file keys."""

import json
import subprocess
import sys

import pytest
import yaml

from peftlab.config.settings import TextLoader, config_diff, load_config
from peftlab.data.mixing import record_mix
from peftlab.data.splits import load_splits
from peftlab.errors import UserError


def write(path, text):
    path.write_text(text)
    return str(path)


@pytest.fixture
def two_files(tmp_path):
    """a.tsv: sentence/label, 20 rows; b.jsonl: text/sentiment, 6 rows; b's labels are the same words."""
    a = write(
        tmp_path / "a.tsv",
        "sentence\tlabel\n" + "".join(f"a good {i}\tpos\n" if i % 2 else f"a bad {i}\tneg\n" for i in range(20)),
    )
    b = write(
        tmp_path / "b.jsonl",
        "".join(json.dumps({"text": f"b row {i}", "sentiment": "pos" if i % 2 else "neg"}) + "\n" for i in range(6)),
    )
    dev = write(tmp_path / "dev.tsv", "sentence\tlabel\nok good\tpos\nok bad\tneg\n")
    return a, b, dev


def mixed(a, b, dev, *more, b_keys="text_column: text, label_column: sentiment"):
    cfg = load_config(None, [f"train_file=[{a}, {{file: {b}, {b_keys}}}]", f"validation_file={dev}", *more])
    return cfg, load_splits(cfg.data, cfg.train.seed)


def test_config_forms_aliases_and_round_trip(tmp_path, two_files):
    a, b, _ = two_files
    assert load_config(None, [f"train_file={a}"]).data.train_file == a
    assert load_config(None, [f"train_file={a},{b}"]).data.train_file == [a, b]
    cfg = load_config(None, [f"dataset={a},{b}", "mix_strategy=interleave_over", "interleave_probs=0.7,0.3"])
    assert (cfg.data.train_file, cfg.data.mix, cfg.data.mix_ratios) == ([a, b], "interleave_over", [0.7, 0.3])
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"train_file:\n  - {a}\n  - file: {b}\n    max_samples: '4'\n    columns: [x, y]\n")
    cfg = load_config(cfg_file)
    assert cfg.data.train_file == [a, {"file": b, "max_samples": 4, "columns": ["x", "y"]}]
    # the run folder's config.yaml reads back as the same run (sweep reuse compares them)
    saved = yaml.load(yaml.safe_dump(cfg.to_dict()), TextLoader)
    assert config_diff(saved, cfg) == []
    other = load_config(cfg_file, ["train_file=[" + a + "]"])
    assert config_diff(saved, other) and other.data.train_file == a


@pytest.mark.parametrize(
    "value, message",
    [
        ("[a.tsv, {file: b.tsv, lr: 1}]", r"train_file\[2\]: 'lr' cannot be set per file"),
        ("[a.tsv, {path: b.tsv}]", r"train_file\[2\]: a mapping needs `file:`"),
        ("[a.tsv, {file: b.tsv, max_samples: lots}]", r"train_file\[2\]: expected int for 'max_samples'"),
        ("[]", r"'train_file' is an empty list"),
    ],
)
def test_bad_entries_name_the_item(value, message):
    with pytest.raises(UserError, match=message):
        load_config(None, [f"train_file={value}"])


def test_concat_renames_columns_and_records_what_each_file_gave(two_files):
    a, b, dev = two_files
    cfg, splits = mixed(a, b, dev)
    train = splits["train"]
    assert len(train.records) == 26 and train.records[0] == {"sentence": "a bad 0", "label": "neg"}
    assert train.records[20] == {"sentence": "b row 0", "label": "neg"}  # renamed to the top-level names
    assert str(train.rows[20]) == f"1 of {b}" and train.rows[20] == 1
    assert record_mix(train) == [
        {"file": a, "rows_read": 20, "validation": 0, "rows_kept": 20, "rows_used": 20},
        {"file": b, "rows_read": 6, "validation": 0, "rows_kept": 6, "rows_used": 6},
    ]
    # per-file cap, then the global cap: rows_used says what reached training
    cfg, splits = mixed(
        a, b, dev, "max_samples=10", b_keys="text_column: text, label_column: sentiment, max_samples: 2"
    )
    used = {p["file"]: (p["rows_kept"], p["rows_used"]) for p in record_mix(splits["train"])}
    assert len(splits["train"].records) == 10 and used[b][0] == 2 and used[a][0] == 20
    assert used[a][1] + used[b][1] == 10


def test_validation_split_off_each_file(two_files):
    a, b, _ = two_files
    cfg = load_config(
        None, [f"train_file=[{a}, {{file: {b}, text_column: text, label_column: sentiment}}]", "validation_ratio=0.5"]
    )
    splits = load_splits(cfg.data, cfg.train.seed)
    parts = record_mix(splits["train"])
    assert [(p["validation"], p["rows_kept"]) for p in parts] == [(10, 10), (3, 3)]
    val = {(r.file, int(r)) for r in splits["validation"].rows}
    train = {(r.file, int(r)) for r in splits["train"].rows}
    assert len(val) == 13 and not val & train
    assert {f for f, _ in val} == {a, b}
    # an auxiliary file that gives no validation rows: validation is then the first file's alone, the
    # same rows as when that file is trained on by itself
    cfg = load_config(
        None,
        [
            f"train_file=[{a}, {{file: {b}, text_column: text, label_column: sentiment, validation_ratio: 0}}]",
            "validation_ratio=0.5",
        ],
    )
    mixed_val = load_splits(cfg.data, cfg.train.seed)["validation"].records
    alone = load_splits(load_config(None, [f"train_file={a}", "validation_ratio=0.5"]).data, 42)
    assert mixed_val == alone["validation"].records
    assert [p["validation"] for p in record_mix(load_splits(cfg.data, 42)["train"])] == [10, 0]
    none = load_config(None, [f"train_file=[{{file: {a}, validation_ratio: 0}}, {{file: {b}, validation_ratio: 0}}]"])
    with pytest.raises(UserError, match="every entry has validation_ratio 0"):
        load_splits(none.data, 42)


def test_interleave_under_over_and_ratios(two_files):
    a, b, dev = two_files
    _, s = mixed(a, b, dev, "mix=interleave")  # in turn until b (6 rows) runs out
    files = [r.file for r in s["train"].rows]
    assert files[:4] == [a, b, a, b] and files.count(b) == 6 and files.count(a) == 6
    _, s = mixed(a, b, dev, "mix=interleave_over")  # until a has run out too: b's rows repeat
    rows = s["train"].rows
    assert sum(r.file == a for r in rows) == 20 and sum(r.file == b for r in rows) > 6
    assert record_mix(s["train"])[1]["rows_used"] == sum(r.file == b for r in rows)
    _, s1 = mixed(a, b, dev, "mix=interleave_over", "mix_ratios=[0.9, 0.1]", "seed=1")
    _, s2 = mixed(a, b, dev, "mix=interleave_over", "mix_ratios=[0.9, 0.1]", "seed=1")
    _, s3 = mixed(a, b, dev, "mix=interleave_over", "mix_ratios=[0.9, 0.1]", "seed=2")
    order = lambda s: [(r.file, int(r)) for r in s["train"].rows]
    assert order(s1) == order(s2) != order(s3)  # seeded
    b_share = sum(r.file == b for r in s1["train"].rows) / len(s1["train"].rows)
    assert b_share < 0.35  # mostly a: 0.9 of the draws until every file has run out


@pytest.mark.parametrize(
    "more, message",
    [
        (["mix_ratios=[1, 1]"], "mix_ratios: applies to mix: interleave"),
        (["mix=interleave", "mix_ratios=[1, 1, 1]"], r"one positive number per train_file entry \(2 entries\)"),
        (["mix=interleave", "mix_ratios=[1, 0]"], "one positive number"),
        (["mix=shuffle"], "mix: 'shuffle' is not one of concat"),
    ],
)
def test_bad_mix_settings(two_files, more, message):
    a, b, dev = two_files
    with pytest.raises(UserError, match=message):
        mixed(a, b, dev, *more)


def test_bad_per_file_columns_and_rows_name_the_file(two_files, tmp_path):
    a, b, dev = two_files
    with pytest.raises(UserError, match=r"train_file\[2\] \(.*b.jsonl\): column 'txt' not found"):
        mixed(a, b, dev, b_keys="text_column: txt, label_column: sentiment")
    with pytest.raises(UserError, match=r"train_file\[2\]: question_column: set `question_column:` at the top level"):
        mixed(a, b, dev, b_keys="question_column: q")
    with pytest.raises(UserError, match=r"train_file\[2\]: .*a.tsv is listed twice"):
        load_splits(load_config(None, [f"train_file={a},{a}", f"validation_file={dev}"]).data, 42)
    # a bad row in the second file: the task's message names that file and its row
    c = write(
        tmp_path / "c.jsonl",
        json.dumps({"text": "fine", "sentiment": "pos"}) + "\n" + json.dumps({"text": "dull", "sentiment": ""}) + "\n",
    )
    from peftlab.tasks.registry import get_task

    cfg, splits = mixed(a, c, dev)
    with pytest.raises(UserError, match=rf"row 2 of {c}: empty text or label"):
        get_task("classification", "head").prepare(splits, cfg)


def test_sft_mixes_layouts(tmp_path):
    from peftlab.tasks import chat

    alp = write(tmp_path / "alpaca.json", json.dumps([{"instruction": "Say hi", "input": "", "output": "hi"}]))
    share = write(
        tmp_path / "share.json",
        json.dumps([{"conversations": [{"from": "human", "value": "Say yo"}, {"from": "gpt", "value": "yo"}]}]),
    )
    cfg = load_config(None, [f"train_file={alp},{share}", f"validation_file={alp}", "task=sft"])
    convs = chat.read_conversations(load_splits(cfg.data, 42)["train"], "auto")
    assert [c.turns for c in convs] == [[("Say hi", "hi")], [("Say yo", "yo")]]


def test_train_records_the_files(base_config, sentiment, tmp_path):
    """A real run on two files: result.json says what each gave; `peftlab data check` shows the mix."""
    extra = write(
        tmp_path / "extra.csv",
        "review,stars\n"
        + "".join(f"the film was {'good' if i % 2 else 'bad'} .,{'pos' if i % 2 else 'neg'}\n" for i in range(10)),
    )
    train = (
        f"train_file=[{sentiment['train']}, "
        f"{{file: {extra}, text_column: review, label_column: stars, max_samples: 8}}]"
    )
    args = [a for a in base_config if not a.startswith("train_file=")] + [train, "run_name=mixed"]
    done = subprocess.run([sys.executable, "-m", "peftlab", "train", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "runs" / "mixed" / "result.json").read_text())
    assert result["n_train"] == 104
    assert [(f["file"], f["rows_kept"], f["rows_used"]) for f in result["train_files"]] == [
        (sentiment["train"], 96, 96),
        (extra, 8, 8),
    ]
    check = subprocess.run([sys.executable, "-m", "peftlab", "data", "check", *args], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr[-2000:]
    assert "8 of 10 rows" in check.stdout and extra in check.stdout


def test_on_bad_lines_skip_counts_what_it_left_out(tmp_path, capsys, monkeypatch):
    """GLUE QQP's own file has a row with 5 fields: error by default (naming the line and the way out),
    or left out, counted and listed with on_bad_lines: skip."""
    from peftlab.cli import main

    f = write(tmp_path / "qqp.tsv", "1\tq a\tq b 0\n2\tq c\tq d\t1\n3\tq e\tq f\t0\n4\tq g\tq h\t1\n")
    keys = [
        "header=false",
        "columns=id,question1,question2,is_duplicate",
        "text_column=question1",
        "text_pair_column=question2",
        "label_column=is_duplicate",
        f"validation_file={f}",
    ]
    with pytest.raises(UserError, match=r"qqp.tsv:1: 3 fields, expected 4 .*on_bad_lines: skip"):
        load_splits(load_config(None, [f"train_file={f}", *keys]).data, 42)
    splits = load_splits(load_config(None, [f"train_file={f}", *keys, "on_bad_lines=skip"]).data, 42)
    assert [r["id"] for r in splits["train"].records] == ["2", "3", "4"]
    assert splits["train"].skipped == [
        {
            "file": f,
            "line": 1,
            "reason": "3 fields, expected 4 (id, question1, question2, is_duplicate) separated by tab",
        }
    ]  # once, though read for both splits
    # named through the data folder, the left-out row is noted under the data: name, not this machine's path
    monkeypatch.setenv("PEFTLAB_DATA_DIR", str(tmp_path.parent))
    name = f"data:{tmp_path.name}/qqp.tsv"
    named = [k if not k.startswith("validation_file") else f"validation_file={name}" for k in keys]
    by_name = load_splits(load_config(None, [f"train_file={name}", *named, "on_bad_lines=skip"]).data, 42)
    assert [s["file"] for s in by_name["train"].skipped] == [name]
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", f, str(out), "on_bad_lines=skip", *keys[:2]]) == 0
    assert "skipped 1 bad row" in capsys.readouterr().out and len(out.read_text().splitlines()) == 3
