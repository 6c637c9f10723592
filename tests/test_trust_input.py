"""Issue 24, items 6-8: labels are what the user meant, settings the model cannot honour are refused
before anything is written, and every table's figures are the ones their settings produced."""

import json
import math
import re

import pytest

from peftlab.cli import main
from peftlab.config.settings import load_config
from peftlab.data.splits import load_splits
from peftlab.errors import UserError
from peftlab.tasks.registry import get_task


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def one_error(capsys) -> str:
    """The one `peftlab: error:` line of a refused command (and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.startswith("peftlab: error:")]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------- 6. labels are what the user meant

TRAIN_ROWS = [
    (f"the {w} movie .", "pos" if w in ("good", "great", "fine") else "neg") for w in ("good", "bad", "great")
]


def tsv(rows) -> str:
    return "sentence\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in rows)


def prepared(tmp_path, train: str, *more, name: str = "train.tsv"):
    """The classification task's prepare() on `train` (and a valid dev file), as `peftlab train` runs it."""
    dev = write(tmp_path / "dev.tsv", tsv([("the good film .", "pos"), ("the bad film .", "neg")]))
    cfg = load_config(None, [f"train_file={write(tmp_path / name, train)}", f"validation_file={dev}", *more])
    splits = load_splits(cfg.data, cfg.train.seed)
    return get_task("classification", "head").prepare(splits, cfg), splits


@pytest.mark.parametrize("marker", ["NaN", "nan", "NA", "N/A", "null", "None"])
def test_a_missing_value_marker_is_not_a_third_class(marker, tmp_path):
    """What pandas writes for a missing label (NaN) used to become a class of its own: `labels: neg, pos, NaN`."""
    rows = TRAIN_ROWS + [("the plot film .", marker)]
    with pytest.raises(UserError, match=rf"train.tsv: row 5: label '{re.escape(marker)}' marks a missing value"):
        prepared(tmp_path, tsv(rows))


def test_on_bad_lines_skip_leaves_unlabelled_rows_out_and_counts_them(tmp_path):
    rows = TRAIN_ROWS + [("the plot film .", "NaN"), ("the fine film .", "pos"), ("the sad film .", "")]
    done, splits = prepared(tmp_path, tsv(rows), "on_bad_lines=skip")
    assert done.labels == ["neg", "pos"]
    assert [label for _, _, label in done.examples["train"]] == [1, 0, 1, 1]
    assert [(s["line"], s["reason"]) for s in splits["train"].skipped] == [
        (5, "missing label 'NaN'"),
        (7, "missing label ''"),
    ]
    assert [r["label"] for r in splits["train"].records] == ["pos", "neg", "pos", "pos"]  # the split says so too


def test_json_nan_and_null_labels_are_missing_too(tmp_path):
    """JSON's NaN (json.loads reads it as a float) and null: refused, or skipped and counted."""
    rows = [{"sentence": t, "label": l} for t, l in TRAIN_ROWS]
    text = "\n".join(json.dumps(r) for r in rows) + '\n{"sentence": "the plot film .", "label": NaN}\n'
    with pytest.raises(UserError, match=r"t.jsonl: row 4: label nan marks a missing value"):
        prepared(tmp_path, text, name="t.jsonl")
    done, splits = prepared(tmp_path, text + '{"sentence": "x", "label": null}\n', "on_bad_lines=skip", name="t.jsonl")
    assert done.labels == ["neg", "pos"] and len(splits["train"].skipped) == 2
    assert math.isnan(json.loads(text.splitlines()[-1])["label"])


def test_a_marker_named_in_label_names_is_a_label(tmp_path):
    rows = TRAIN_ROWS + [("the plot film .", "none")]
    done, _ = prepared(tmp_path, tsv(rows), "label_names=[neg,pos,none]")
    assert done.labels == ["neg", "pos", "none"] and done.examples["train"][-1][2] == 2


def test_numbers_mixed_with_names_in_a_csv_label_column_are_refused(tmp_path):
    """In JSON 1 and "neg" were refused as two label sets; a CSV's "1" is text, and slipped through."""
    rows = TRAIN_ROWS + [("the plot film .", "1")]
    with pytest.raises(UserError, match=r"train.tsv: column 'label' mixes kinds of labels: row 2 has 'pos', row 5"):
        prepared(tmp_path, tsv(rows))
    # numbers alone are one label set, names alone another
    numbers = write(tmp_path / "n.tsv", tsv([("a good one", "1"), ("a bad one", "-1")]))
    cfg = load_config(None, [f"train_file={numbers}", f"validation_file={numbers}"])
    assert get_task("classification", "head").prepare(load_splits(cfg.data, 0), cfg).labels == ["-1", "1"]


def test_a_nan_label_through_the_cli_is_one_line_and_no_run_folder(base_config, sentiment, tmp_path, capsys):
    train = write(tmp_path / "train.csv", "sentence,label\n" + "the good movie .,pos\nthe bad movie .,neg\n" * 4 + "x,")
    args = [a for a in base_config if not a.startswith("train_file=")] + [f"train_file={train}", "run_name=r"]
    assert main(["train", *args]) == 2
    assert re.search(r"train.csv: row 10: empty text or label; .*on_bad_lines: skip", one_error(capsys))
    assert not (tmp_path / "runs").exists()
    (tmp_path / "train.csv").write_text(
        "sentence,label\n" + "the good movie .,pos\nthe bad movie .,neg\n" * 4 + "the plot .,NaN\n"
    )
    assert main(["data", "check", *args]) == 2
    assert "row 10: label 'NaN' marks a missing value" in one_error(capsys)
    assert main(["data", "check", *args, "on_bad_lines=skip"]) == 0
    out = capsys.readouterr().out
    assert "labels train: neg 4 (50.0%), pos 4 (50.0%)" in out and "skipped 1 bad row" in out
    assert not (tmp_path / "runs").exists()
