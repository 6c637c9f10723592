import json

import pytest

from peftlab.config.settings import DataConfig
from peftlab.data.formats import read_records, sample, split_off
from peftlab.data.splits import load_splits
from peftlab.errors import UserError


def test_tsv_with_header_and_headerless_with_columns(tmp_path):
    f = tmp_path / "a.tsv"
    f.write_text('sentence\tlabel\nit is "great\t1\nbad\t0\n')
    split = read_records(f, "train_file")
    assert split.records == [{"sentence": 'it is "great', "label": "1"}, {"sentence": "bad", "label": "0"}]
    assert split.rows == [2, 3]
    cola = tmp_path / "cola.tsv"
    cola.write_text("gj04\t1\t\tOur friends won't buy this.\ngj04\t0\t*\tThey drank the pub.\n")
    split = read_records(cola, "train_file", columns=["source", "label", "mark", "sentence"])
    assert split.records[1]["sentence"] == "They drank the pub." and split.records[1]["mark"] == "*"


def test_latin1_needs_encoding_and_names_line(tmp_path):
    f = tmp_path / "fp.txt"
    f.write_bytes("ok sentence@neutral\nprofit rose 5 \xa3@positive\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"fp.txt:2: .*not valid utf-8.*encoding: latin-1"):
        read_records(f, "train_file", delimiter="@", columns=["sentence", "label"])
    split = read_records(f, "train_file", delimiter="@", columns=["sentence", "label"], encoding="latin-1")
    assert split.records[1] == {"sentence": "profit rose 5 \xa3", "label": "positive"}


def test_wrong_field_count_empty_and_missing(tmp_path):
    f = tmp_path / "bad.tsv"
    f.write_text("sentence\tlabel\nfine\t1\ntoo\tmany\tfields\n")
    with pytest.raises(UserError, match=r"bad.tsv:3: 3 fields, expected 2"):
        read_records(f, "train_file")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(UserError, match="empty"):
        read_records(empty, "train_file")
    with pytest.raises(UserError, match="validation_file: file not found"):
        read_records(tmp_path / "nope.tsv", "validation_file")


def test_json_jsonl_and_hf(tmp_path):
    rows = [{"text": "a", "label": 0}, {"text": "b", "label": 1}]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_records(tmp_path / "d.json", "k").records == rows
    assert read_records(tmp_path / "d.jsonl", "k").records == rows
    (tmp_path / "broken.jsonl").write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(UserError, match=r"broken.jsonl:2: not valid JSON"):
        read_records(tmp_path / "broken.jsonl", "k")
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    assert read_records(tmp_path / "ds", "k").records == rows
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(UserError, match=r"several splits \(validation\).*dd/validation"):
        read_records(tmp_path / "dd", "k")


def test_seeded_split_and_sample_are_reproducible(tmp_path):
    f = tmp_path / "t.tsv"
    f.write_text("sentence\tlabel\n" + "".join(f"s{i}\t{i % 2}\n" for i in range(50)))
    split = read_records(f, "train_file")
    a, b = split_off(split, 0.2, seed=1), split_off(split, 0.2, seed=1)
    assert [r["sentence"] for r in a[1].records] == [r["sentence"] for r in b[1].records]
    assert len(a[0].records) == 40 and len(a[1].records) == 10
    assert not {r["sentence"] for r in a[0].records} & {r["sentence"] for r in a[1].records}
    assert len(sample(split, 7, seed=3).records) == 7
    splits = load_splits(DataConfig(train_file=str(f), validation_ratio=0.1, max_samples=20), seed=0)
    assert len(splits["train"].records) == 20 and len(splits["validation"].records) == 5


def test_test_ratio_splits_off_the_same_test_items_for_every_run_seed(tmp_path):
    """The test split is split off train first, with test_seed, so runs of every seed (and every method) of a
    sweep are scored on the same items; validation is then split off what is left, with the run's seed."""
    f = tmp_path / "t.tsv"
    f.write_text("sentence\ttitle\tlabel\n" + "".join(f"s{i}\tt{i // 5}\t{i % 2}\n" for i in range(100)))
    texts = lambda split: [r["sentence"] for r in split.records]  # noqa: E731
    data = DataConfig(train_file=str(f), validation_ratio=0.2, test_ratio=0.2, max_samples=30)
    one, two = load_splits(data, seed=1), load_splits(data, seed=2)
    assert texts(one["test"]) == texts(two["test"]) and len(one["test"].records) == 20
    assert texts(one["validation"]) != texts(two["validation"])  # the run's seed still draws validation
    for s in (one, two):
        assert not set(texts(s["test"])) & (set(texts(s["validation"])) | set(texts(s["train"])))
        assert len(s["train"].records) == 30 and len(s["validation"].records) == 16  # 0.2 of the 80 left
    other = load_splits(DataConfig(train_file=str(f), test_ratio=0.2, test_seed=7), seed=1)
    assert texts(other["test"]) != texts(one["test"])
    by_title = load_splits(DataConfig(train_file=str(f), test_ratio=0.2, split_by="title"), seed=1)
    titles = lambda split: {r["title"] for r in split.records}  # noqa: E731
    assert not titles(by_title["test"]) & (titles(by_title["train"]) | titles(by_title["validation"]))
    with_file = load_splits(DataConfig(train_file=str(f), test_file=str(f), test_ratio=0.2), seed=1)
    assert len(with_file["test"].records) == 100  # test_file wins: nothing of train is held out
    # max_eval_samples caps a test split with test_seed too, not the run's seed
    capped = DataConfig(train_file=str(f), test_file=str(f), max_eval_samples=10)
    assert texts(load_splits(capped, seed=1)["test"]) == texts(load_splits(capped, seed=2)["test"])
    with pytest.raises(UserError, match=r"test_ratio: 1.5 must be between 0 and 1 when test_file is empty"):
        load_splits(DataConfig(train_file=str(f), test_ratio=1.5), seed=1)
