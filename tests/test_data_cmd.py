"""`peftlab data convert` and `peftlab data check`: exact outputs on hand-made files, bad input, CoLA."""

import json
import random
import re

import numpy as np
import pytest
from conftest import SAMPLES

from peftlab.cli import main

COLA_ROWS = "gj04\t1\t\tOur friends won't buy this.\ngj04\t0\t*\tThey drank the pub.\nbc01\t1\t\tThe cat sat.\n"


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_cola_tsv_without_header_to_alpaca(tmp_path, capsys):
    src, out = write(tmp_path / "cola.tsv", COLA_ROWS), tmp_path / "cola.json"
    code, stdout, _ = cli(
        [
            "data",
            "convert",
            src,
            str(out),
            "--to",
            "alpaca",
            "columns=source,label,mark,sentence",
            "instruction=Is this sentence grammatical?",
        ],
        capsys,
    )
    assert code == 0 and "wrote 3 alpaca records" in stdout
    q = "Is this sentence grammatical?"
    assert read_json(out) == [
        {"instruction": q, "input": "Our friends won't buy this.", "output": "1"},
        {"instruction": q, "input": "They drank the pub.", "output": "0"},
        {"instruction": q, "input": "The cat sat.", "output": "1"},
    ]


def test_label_words_map_labels_and_unknown_label_is_an_error(tmp_path, capsys):
    src, out = write(tmp_path / "cola.tsv", COLA_ROWS), tmp_path / "cola.json"
    argv = [
        "data",
        "convert",
        src,
        str(out),
        "--to",
        "alpaca",
        "columns=source,label,mark,sentence",
        "instruction=Acceptable? {source}",
    ]
    assert main(argv + ["label_words=0=unacceptable,1=acceptable"]) == 0
    assert [r["output"] for r in read_json(out)] == ["acceptable", "unacceptable", "acceptable"]
    assert read_json(out)[1]["instruction"] == "Acceptable? gj04"  # templates may use any column
    out.unlink()
    code, _, err = cli(argv + ["label_words={1: yes}"], capsys)  # YAML mapping form, 0 missing
    assert code == 2 and not out.exists()
    assert re.search(r"cola.tsv: row 2: label '0' has no entry in label_words \(1\); add it", err), err


def test_qqp_pair_template(tmp_path, capsys):
    src = write(
        tmp_path / "qqp.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        "7\t1\t2\tHow do I learn Python?\tWhat is the best way to learn Python?\t1\n"
        "8\t3\t4\tWhy is the sky blue?\tHow tall is Everest?\t0\n",
    )
    out = tmp_path / "qqp.jsonl"
    assert (
        main(
            [
                "data",
                "convert",
                src,
                str(out),
                "--to",
                "alpaca",
                "label_column=is_duplicate",
                r"input=Question 1: {question1}\nQuestion 2: {question2}",
                "label_words={0: 'no', 1: 'yes'}",
                "instruction=Are these questions duplicates?",
            ]
        )
        == 0
    )
    assert read_jsonl(out) == [  # .jsonl OUT: alpaca records as JSON lines
        {
            "instruction": "Are these questions duplicates?",
            "output": "yes",
            "input": "Question 1: How do I learn Python?\nQuestion 2: What is the best way to learn Python?",
        },
        {
            "instruction": "Are these questions duplicates?",
            "output": "no",
            "input": "Question 1: Why is the sky blue?\nQuestion 2: How tall is Everest?",
        },
    ]
    out2 = tmp_path / "default.json"  # default input template for pairs: text, new line, pair
    assert (
        main(
            [
                "data",
                "convert",
                src,
                str(out2),
                "--to",
                "alpaca",
                "text_column=question1",
                "text_pair_column=question2",
                "label_column=is_duplicate",
            ]
        )
        == 0
    )
    assert read_json(out2)[1] == {
        "instruction": "",
        "input": "Why is the sky blue?\nHow tall is Everest?",
        "output": "0",
    }


def test_sampling_is_seeded_and_keeps_file_order(tmp_path):
    src = tmp_path / "rows.jsonl"
    write(src, "".join(json.dumps({"i": i, "text": f"row {i}"}) + "\n" for i in range(50)))
    picks = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert (
            main(
                ["data", "convert", str(src), str(tmp_path / f"{name}.jsonl"), "--max-rows", "10", "--seed", str(seed)]
            )
            == 0
        )
        picks[name] = [r["i"] for r in read_jsonl(tmp_path / f"{name}.jsonl")]
    assert picks["a"] == picks["b"] and picks["a"] != picks["c"]
    assert picks["a"] == sorted(random.Random(1).sample(range(50), 10))  # seeded sample, file order


DUPES = [
    ("The cat sat.", 1),
    ("The cat sat.", 1),
    ("the cat  sat", 1),
    ("THE CAT SAT!!", 1),
    ("A dog ran.", 0),
    ("A dog ran.", 0),
    ("a dog ran", 0),
    ("A dog ran far.", 0),
    ("A dog ran.", 1),
]


@pytest.mark.parametrize(
    "mode, on, kept, exact, normalized",
    [
        ("exact", "", 7, 2, 0),  # rows 2 and 6 repeat rows 1 and 5; 'A dog ran.' labelled 1 differs
        ("normalized", "", 4, 2, 3),  # + case / punctuation / spacing variants
        ("exact", "text", 6, 3, 0),  # over the text only, the relabelled copy is a duplicate too
        ("normalized", "text", 3, 3, 3),
        ("none", "", 9, 0, 0),
    ],
)
def test_dedupe_exact_and_normalized_counts(tmp_path, capsys, mode, on, kept, exact, normalized):
    src = write(tmp_path / "d.jsonl", "".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in DUPES))
    out = tmp_path / "out.jsonl"
    code, stdout, _ = cli(["data", "convert", src, str(out), "--dedupe", mode, "--dedupe-on", on], capsys)
    assert code == 0 and len(read_jsonl(out)) == kept
    if mode != "none":
        assert f"dropped {exact + normalized} duplicates ({exact} exact, {normalized} normalized)" in stdout
        assert "exact: row 2 'The cat sat." in stdout
        assert ("; 1 of them differ from the kept row in other fields" in stdout) == (on == "text")  # row 9's label
    assert read_jsonl(out)[0] == {"text": "The cat sat.", "label": 1}  # the first of a group stays


def test_json_jsonl_round_trip_and_csv(tmp_path):
    records = [{"text": "café ☕", "label": 1, "spans": [[0, 4]]}, {"text": 'say "hi", ok', "label": 0, "spans": []}]
    src = tmp_path / "a.json"
    src.write_text(json.dumps(records), encoding="utf-8")
    assert main(["data", "convert", str(src), str(tmp_path / "b.jsonl")]) == 0
    assert main(["data", "convert", str(tmp_path / "b.jsonl"), str(tmp_path / "c.json")]) == 0
    assert read_jsonl(tmp_path / "b.jsonl") == records and read_json(tmp_path / "c.json") == records
    flat = tmp_path / "flat.jsonl"
    write(flat, "".join(json.dumps({k: r[k] for k in ("text", "label")}) + "\n" for r in records))
    assert main(["data", "convert", str(flat), str(tmp_path / "d.csv")]) == 0
    assert (tmp_path / "d.csv").read_text(encoding="utf-8") == 'text,label\ncafé ☕,1\n"say ""hi"", ok",0\n'
    assert main(["data", "convert", str(tmp_path / "d.csv"), str(tmp_path / "e.jsonl")]) == 0
    assert read_jsonl(tmp_path / "e.jsonl") == [
        {"text": "café ☕", "label": "1"},
        {"text": 'say "hi", ok', "label": "0"},
    ]


def test_conll_to_jsonl_and_back(tmp_path):
    src = write(
        tmp_path / "ner.iob2",
        "-DOCSTART-\tO\n\nIL-2\tB-protein\ngene\tI-protein\n.\tO\n\n\nT\tB-cell_type\ncells\tI-cell_type\n",
    )
    out = tmp_path / "ner.jsonl"
    assert main(["data", "convert", src, str(out)]) == 0
    assert read_jsonl(out) == [
        {"tokens": ["IL-2", "gene", "."], "tags": ["B-protein", "I-protein", "O"]},
        {"tokens": ["T", "cells"], "tags": ["B-cell_type", "I-cell_type"]},
    ]
    assert main(["data", "convert", str(out), str(tmp_path / "back.conll")]) == 0
    assert (
        tmp_path / "back.conll"
    ).read_text() == "IL-2\tB-protein\ngene\tI-protein\n.\tO\n\nT\tB-cell_type\ncells\tI-cell_type\n"


BAD_INPUT = {
    "missing column": (
        COLA_ROWS,
        ["--to", "alpaca", "columns=source,label,mark,text"],
        r"in.tsv: column 'sentence' \(used by input\) not found \(columns: source, label, mark, text\)",
    ),
    "bad row": (
        COLA_ROWS + "gj04\t1\tonly three fields\n",
        ["columns=source,label,mark,sentence"],
        r"in.tsv:4: 3 fields, expected 4 \(source, label, mark, sentence\)",
    ),
    "empty label": (
        COLA_ROWS + "gj04\t \t\tA sentence.\n",
        ["--to", "alpaca", "columns=source,label,mark,sentence"],
        r"in.tsv: row 4: column 'label' \(used by output\) is missing or empty; fix or remove the row",
    ),
    "missing key": (
        '{"sentence": "a", "label": 1}\n{"label": 0}\n',
        ["--to", "alpaca"],
        r"in.jsonl: row 2: column 'sentence' \(used by input\) is missing or empty",
    ),
    "unknown key": (
        COLA_ROWS,
        ["--to", "alpaca", "instructoin=x"],
        r"unknown key 'instructoin' \(did you mean 'instruction'\?\)",
    ),
    "template on plain output": (COLA_ROWS, ["instruction=x"], r"instruction: templates apply only with --to alpaca"),
    "bad template": (
        COLA_ROWS,
        ["--to", "alpaca", "columns=source,label,mark,sentence", "instruction=Say {"],
        r"instruction: bad template 'Say \{'",
    ),
    "list in csv": (
        '{"tokens": ["a"]}\n',
        ["--to", "csv"],
        r"row 1: field 'tokens' holds a list or object, which csv cannot hold",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_and_writes_nothing(case, tmp_path, capsys):
    text, extra, pattern = BAD_INPUT[case]
    src = write(tmp_path / ("in.jsonl" if text.startswith("{") else "in.tsv"), text)
    out = tmp_path / "out" / "out.json"
    code, _, err = cli(["data", "convert", src, str(out)] + extra, capsys)
    assert code == 2 and err.startswith("peftlab: error: ") and "Traceback" not in err
    assert re.search(pattern, err), err
    assert not (tmp_path / "out").exists()


def test_existing_output_is_kept_without_overwrite(tmp_path, capsys):
    src, out = write(tmp_path / "a.jsonl", '{"x": 1}\n'), tmp_path / "b.json"
    out.write_text("keep me")
    code, _, err = cli(["data", "convert", src, str(out)], capsys)
    assert code == 2 and "b.json already exists; pass --overwrite" in err and out.read_text() == "keep me"
    assert main(["data", "convert", src, str(out), "--overwrite"]) == 0 and read_json(out) == [{"x": 1}]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


# word counts of the check fixture's rows; the tiny BERT tokenizer gives one token per word + [CLS] [SEP]
TRAIN_WORDS = [
    (1, "pos"),
    (2, "neg"),
    (3, "pos"),
    (4, "pos"),
    (5, "neg"),
    (6, "pos"),
    (7, "neg"),
    (8, "pos"),
    (9, "neg"),
    (10, "pos"),
]
DEV_WORDS = [(2, "pos"), (2, "neg"), (6, "pos")]


def test_check_prints_rows_labels_and_token_percentiles(tiny_bert, tmp_path, capsys):
    words = ["the", "movie", "was", "really", "good", "a", "plot", "and", "acting", "film"]
    for name, rows in (("train", TRAIN_WORDS), ("dev", DEV_WORDS)):
        write(tmp_path / f"{name}.tsv", "sentence\tlabel\n" + "".join(f"{' '.join(words[:n])}\t{l}\n" for n, l in rows))
    code, out, _ = cli(
        [
            "data",
            "check",
            f"model={tiny_bert}",
            f"train_file={tmp_path / 'train.tsv'}",
            f"validation_file={tmp_path / 'dev.tsv'}",
            "max_length=8",
        ],
        capsys,
    )
    assert code == 0, out
    table = {
        line.split()[0]: line.split()[1:7] for line in out.splitlines() if line.startswith(("train ", "validation "))
    }
    # train lengths 3..12 tokens; nearest rank of 10: p50 = 5th = 7, p90 = 9th = 11, p99 = 10th = 12; 4 exceed 8
    assert table["train"] == ["10", "7", "11", "12", "12", "4"]
    # dev lengths 4, 4, 8: p50 = 2nd = 4, p90 = p99 = 3rd = 8; none exceed 8
    assert table["validation"] == ["3", "4", "8", "8", "8", "0"]
    lengths = [n + 2 for n, _ in TRAIN_WORDS]  # the reference implementation agrees
    assert list(np.percentile(lengths, [50, 90, 99], method="inverted_cdf")) == [7, 11, 12]
    assert "labels train: neg 4 (40.0%), pos 6 (60.0%)" in out
    assert "labels validation: neg 1 (33.3%), pos 2 (66.7%)" in out
    assert "OK: the data validates for task classification" in out


def test_check_reports_bad_data_with_exit_2(tiny_bert, sentiment, tmp_path, capsys):
    dev = write(tmp_path / "dev.tsv", "sentence\tlabel\ngood .\tpos\nmeh .\tneutral\n")
    code, _, err = cli(
        ["data", "validate", f"model={tiny_bert}", f"train_file={sentiment['train']}", f"validation_file={dev}"], capsys
    )
    assert code == 2 and re.search(r"dev.tsv: row 3: label 'neutral' never seen in train_file", err), err


def test_check_classify_by_generate_counts_labels_not_answer_tokens(tiny_llama, sentiment, capsys):
    """The encoded labels of classify_by generate are the answer's token ids; the distribution is of labels."""
    code, out, err = cli(
        [
            "data",
            "check",
            f"model={tiny_llama}",
            "classify_by=generate",
            f"train_file={sentiment['train']}",
            f"validation_file={sentiment['dev']}",
        ],
        capsys,
    )
    assert code == 0, err
    assert "labels train: neg 48 (50.0%), pos 48 (50.0%)" in out
    assert "labels validation: neg 16 (50.0%), pos 16 (50.0%)" in out


def test_check_multiple_choice_counts_tokens_of_the_longest_option(tiny_llama, tmp_path, capsys):
    """One sequence per option (prompt + option): an example is as long as its longest, not its option count."""
    question = " ".join(["the", "movie", "was", "really", "a", "plot"] * 2)  # 12 tokens, the prompt alone
    rows = [
        {"question": question, "choices": ["good", "bad", "film"], "answer": 0},
        {"question": question, "choices": ["good", " ".join(["very"] * 11), "film"], "answer": 0},
    ]
    data = write(tmp_path / "mc.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = cli(
        [
            "data",
            "check",
            f"model={tiny_llama}",
            "task=multiple_choice",
            "prompt_template={question}",
            f"train_file={data}",
            f"validation_file={data}",
            "max_length=16",
        ],
        capsys,
    )
    assert code == 0, err
    table = {
        line.split()[0]: line.split()[1:7] for line in out.splitlines() if line.startswith(("train ", "validation "))
    }
    # lengths 12 + 1 and 12 + 11: p50 = 1st = 13, p90 = p99 = max = 23; one exceeds 16
    assert table["train"] == ["2", "13", "23", "23", "23", "1"]


@pytest.mark.parametrize(
    "task, name, extra",
    [
        ("classification", "train.tsv", ["classify_by=head"]),
        ("classification", "train.tsv", ["classify_by=generate"]),
        ("classification", "train.tsv", ["classify_by=likelihood"]),
        ("ner", "train.conll", []),
        ("qa", "qa.jsonl", []),
        ("multiple_choice", "mc.jsonl", ["mc_head=likelihood"]),
        ("multiple_choice", "mc.jsonl", ["mc_head=classifier"]),
        ("sft", "sft.jsonl", []),
    ],
)
def test_check_works_for_every_task_and_classify_by(task, name, extra, tiny_llama, tmp_path, capsys):
    from test_bad_input import CLS_TRAIN, MC_ROW, NER_TRAIN, QA_ROW, SFT_ROW, jsonl

    files = {
        "train.tsv": CLS_TRAIN,
        "train.conll": NER_TRAIN,
        "qa.jsonl": jsonl(QA_ROW, {**QA_ROW, "id": "q2"}),
        "mc.jsonl": jsonl(MC_ROW, MC_ROW),
        "sft.jsonl": jsonl(SFT_ROW, SFT_ROW),
    }
    (tmp_path / name).write_bytes(files[name])
    code, out, err = cli(
        [
            "data",
            "check",
            f"model={tiny_llama}",
            f"task={task}",
            *extra,
            f"train_file={tmp_path / name}",
            f"validation_file={tmp_path / name}",
        ],
        capsys,
    )
    assert code == 0, err
    assert f"OK: the data validates for task {task}" in out


@pytest.mark.real
def test_cola_to_alpaca_4000_rows_and_check(tmp_path, capsys):
    cola = SAMPLES / "cola" / "in_domain_train.tsv"
    out = tmp_path / "cola_alpaca.json"
    argv = [
        "data",
        "convert",
        str(cola),
        str(out),
        "--to",
        "alpaca",
        "--max-rows",
        "4000",
        "--seed",
        "0",
        "--dedupe",
        "normalized",
        "--dedupe-on",
        "input",
        "columns=source,label,mark,sentence",
        "instruction=Is this sentence grammatically acceptable?",
        "label_words=0=unacceptable,1=acceptable",
    ]
    code, stdout, _ = cli(argv, capsys)
    assert code == 0, stdout
    rows = read_json(out)
    assert len(rows) == 4000 and {r["output"] for r in rows} == {"acceptable", "unacceptable"}
    assert len({r["input"] for r in rows}) == 4000  # deduplicated
    sentences = {line.split("\t")[3] for line in cola.read_text(encoding="utf-8").splitlines()}
    assert {r["input"] for r in rows} <= sentences
    assert "read 8551 rows" in stdout and "kept a sample of 4000 rows (seed 0)" in stdout
    first = out.read_bytes()
    assert main(argv + ["--overwrite"]) == 0 and out.read_bytes() == first  # same seed, same file
    code, report, _ = cli(
        [
            "data",
            "check",
            "model=minilm-l6",
            f"train_file={out}",
            "text_column=input",
            "label_column=output",
            "max_length=32",
        ],
        capsys,
    )
    assert code == 0, report
    table = {
        line.split()[0]: line.split()[1:] for line in report.splitlines() if line.startswith(("train ", "validation "))
    }
    assert table["train"][0] == "3600" and table["validation"][0] == "400"
    n_bad = sum(r["output"] == "unacceptable" for r in rows)
    counts = [int(x) for x in re.findall(r"unacceptable (\d+) ", report)]
    assert sum(counts) == n_bad
