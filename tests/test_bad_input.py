"""Malformed input across every task and format: exit 2, one line naming the file/row/key and the fix,
no traceback, no run folder. Input that is only unusual (a BOM, CRLF line ends) trains.

A case is (name, files, args, exit code, pattern): `files` maps names to the exact bytes written in
the test's folder; `args` follow `peftlab` and may name {d} (that folder), {out} (the output_dir),
{bert} and {llama} (tiny models). Most cases fail before any model weights load.
"""

import json
import re

import pytest

from peftlab.cli import main
from peftlab.training.train import bf16_available

HAS_BF16 = bf16_available()  # a GPU with bf16 or a CPU with AVX512-BF16/AMX: there bf16 is valid

# ---------------------------------------------------------------- small valid files per task

CLS_TRAIN = b"sentence\tlabel\n" + b"".join(
    f"the {w} movie .\t{'pos' if w in ('good', 'great', 'fine') else 'neg'}\n".encode()
    for w in ["good", "bad", "great", "awful", "fine", "poor"] * 2
)
CLS_DEV = b"sentence\tlabel\nthe good film .\tpos\nthe bad film .\tneg\n"
NER_TRAIN = b"the\tO\ngood\tB-POS\nmovie\tO\n\nbad\tB-NEG\nplot\tO\n\nvery\tB-POS\ngood\tI-POS\n\n" * 3
QA_ROW = {
    "id": "q1",
    "title": "t",
    "context": "the movie was good .",
    "question": "which word ?",
    "answers": {"text": ["good"], "answer_start": [14]},
}
MC_ROW = {"question": "the movie was good", "choices": ["good", "bad", "plot"], "answer": 0}
SFT_ROW = {"instruction": "the movie was good", "input": "", "output": "good ."}


def jsonl(*rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def with_(row: dict, **changes) -> dict:
    return {**row, **changes}


def squad(context: str, text: str, start: int) -> bytes:
    return json.dumps(
        {
            "data": [
                {
                    "title": "t",
                    "paragraphs": [
                        {
                            "context": context,
                            "qas": [
                                {
                                    "id": "q1",
                                    "question": "which word ?",
                                    "answers": [{"text": text, "answer_start": start}],
                                }
                            ],
                        }
                    ],
                }
            ]
        }
    ).encode()


RUN = ["output_dir={out}", "epochs=1", "batch_size=8", "max_length=16", "logging_steps=1", "eval_at_start=false"]
CLS = ["train", "model={bert}", "train_file={d}/train.tsv", "validation_file={d}/dev.tsv", *RUN]
CLS_FILES = {"train.tsv": CLS_TRAIN, "dev.tsv": CLS_DEV}
NER = ["train", "task=ner", "model={bert}", "train_file={d}/train.conll", "validation_file={d}/train.conll", *RUN]
QA = ["train", "task=qa", "model={bert}", "train_file={d}/qa.jsonl", "validation_file={d}/qa.jsonl", *RUN]
MC = ["train", "task=multiple_choice", "model={llama}", "train_file={d}/mc.jsonl", "validation_file={d}/mc.jsonl", *RUN]
SFT = ["train", "task=sft", "model={llama}", "train_file={d}/sft.jsonl", "validation_file={d}/sft.jsonl", *RUN]


def cls_with(train: bytes, name: str = "train.tsv") -> tuple[dict, list]:
    """Classification whose train file `name` holds `train` (bytes), dev the valid one."""
    return {name: train, "dev.tsv": CLS_DEV}, [a.replace("train.tsv", name) for a in CLS]


def setting(name: str, overrides: list, pattern: str) -> tuple:
    """A bad setting on the valid classification files: refused with exit 2."""
    return name, CLS_FILES, CLS + overrides, 2, pattern


CASES = [
    # -------- settings, refused before any file is read
    setting(
        "unknown optim",
        ["optim=adamw_torchh"],
        r"optim: unknown value 'adamw_torchh' \(did you mean 'adamw_torch'\?\); available: adamw_torch, ",
    ),
    setting(
        "unknown lr_scheduler",
        ["lr_scheduler=cosin"],
        r"lr_scheduler: unknown value 'cosin' \(did you mean 'cosine'\?\); available: linear, cosine",
    ),
    setting("lora_rank 0", ["lora_rank=0"], r"lora_rank: must be at least 1, got 0 \(method lora\)"),
    setting("lora_rank negative", ["lora_rank=-4"], r"lora_rank: must be at least 1, got -4"),
    setting("lora_alpha 0", ["lora_alpha=0"], r"lora_alpha: must be at least 1, got 0"),
    setting("lora_dropout 1.5", ["lora_dropout=1.5"], r"lora_dropout: 1.5 must be at least 0 and below 1"),
    setting("eval_batch_size 0", ["eval_batch_size=0"], r"eval_batch_size: must be at least 1, got 0"),
    setting("max_samples negative", ["max_samples=-5"], r"max_samples: must be 0 \(all\) or more, got -5"),
    setting("max_eval_samples negative", ["max_eval_samples=-1"], r"max_eval_samples: must be 0 \(all\) or more"),
    (
        "max_new_tokens 0",
        {"sft.jsonl": jsonl(SFT_ROW)},
        SFT + ["max_new_tokens=0"],
        2,
        r"max_new_tokens: must be at least 1, got 0",
    ),
    setting("lr negative", ["lr=-1e-3"], r"lr: must be 0 or more, got -0.001"),
    setting("warmup_ratio 2", ["warmup_ratio=2"], r"warmup_ratio: 2.0 must be at least 0 and below 1"),
    (
        "num_virtual_tokens 0",
        CLS_FILES,
        CLS + ["method=prompt-tuning", "num_virtual_tokens=0"],
        2,
        r"num_virtual_tokens: must be at least 1, got 0",
    ),
    *(
        []
        if HAS_BF16
        else [("bf16 without hardware for it", CLS_FILES, CLS + ["precision=bf16"], 2, r"precision: bf16 needs a GPU")]
    ),
    setting("run_name a path", ["run_name=../elsewhere"], r"run_name: '../elsewhere' must be a folder name"),
    setting("precision fp8", ["precision=fp8"], r"precision: unknown value 'fp8'.*available: auto, fp32, bf16, fp16"),
    setting("max_length 4", ["max_length=4"], r"max_length: 4 is too short"),
    setting("int with text", ["epochs=two"], r"override 'epochs=two': expected int for 'epochs'"),
    setting("misspelled key", ["lora_rnak=8"], r"unknown key 'lora_rnak'.*did you mean 'lora_rank'"),
    setting("misspelled method", ["method=lorra"], r"method: unknown method 'lorra'.*did you mean 'lora'"),
    setting(
        "misspelled task", ["task=classificaton"], r"task: unknown task 'classificaton'.*did you mean 'classification'"
    ),
    setting(
        "misspelled classify_by",
        ["classify_by=generat"],
        r"classify_by: 'generat' is not one of .*did you mean 'generate'",
    ),
    setting("misspelled metric", ["metric_for_best=acuracy"], r"metric_for_best: 'acuracy' .*did you mean 'accuracy'"),
    (
        "yaml syntax error",
        {"c.yaml": b"model: x\nlora_rank: [8\n", **CLS_FILES},
        ["train", "{d}/c.yaml"] + CLS[1:],
        2,
        r"c.yaml line \d+: invalid YAML",
    ),
    (
        "yaml misspelled section key",
        {"c.yaml": b"method:\n  method: lora\n  lora_rnk: 8\n", **CLS_FILES},
        ["train", "{d}/c.yaml"] + CLS[1:],
        2,
        r"c.yaml: method.lora_rnk: unknown key 'lora_rnk'.*did you mean 'lora_rank'",
    ),
    (
        "yaml a list",
        {"c.yaml": b"- lora\n- full\n", **CLS_FILES},
        ["train", "{d}/c.yaml"] + CLS[1:],
        2,
        r"c.yaml: expected a mapping of keys",
    ),
    (
        "yaml not utf-8",
        {"c.yaml": "instruction: caf\xe9\n".encode("latin-1"), **CLS_FILES},
        ["train", "{d}/c.yaml"] + CLS[1:],
        2,
        r"c.yaml line 1: not UTF-8 text; save the config as UTF-8",
    ),
    (
        "yaml section given a value",
        {"c.yaml": b"train: 3\n", **CLS_FILES},
        ["train", "{d}/c.yaml"] + CLS[1:],
        2,
        r"c.yaml: 'train' is a section and takes a mapping of its keys, got '3'",
    ),
    ("yaml missing", CLS_FILES, ["train", "{d}/nope.yaml"] + CLS[1:], 2, r"config file not found: .*nope.yaml"),
    (
        "missing model path",
        CLS_FILES,
        CLS + ["model={d}/no-such-model"],
        2,
        r"model: '.*/no-such-model' is not a folder, a .gguf file or a named model",
    ),
    (
        "model folder without tokenizer",
        {"m/config.json": b"{}", **CLS_FILES},
        CLS + ["model={d}/m"],
        2,
        r"model '.*/m': no tokenizer files .*tokenizer.save_pretrained",
    ),
    (
        "named model misspelled",
        CLS_FILES,
        CLS + ["model=smollm2"],
        2,
        r"model 'smollm2': not a folder, a .gguf file nor a named model \(did you mean 'smollm2-135m'\?\)",
    ),
    (
        "labels mixing numbers and names",
        *cls_with(
            jsonl({"sentence": "the good movie", "label": 1}, {"sentence": "the bad movie", "label": "neg"}), "t.jsonl"
        ),
        2,
        r"t.jsonl: column 'label' mixes kinds of labels: row 1 has 1, row 2 has 'neg'",
    ),
    # -------- method / task pairs that cannot work; the suggested methods must themselves work there
    (
        "prompt-tuning on qa",
        {"qa.jsonl": jsonl(QA_ROW)},
        QA + ["method=prompt-tuning"],
        2,
        r"method: prompt-tuning .*use lora, dora, ia3 or full$",
    ),
    (
        "prefix-tuning on qa",
        {"qa.jsonl": jsonl(QA_ROW)},
        QA + ["method=prefix-tuning"],
        2,
        r"prefix-tuning: .*use lora, dora, ia3 or full instead$",
    ),
    (
        "prefix-tuning on ner",
        {"train.conll": NER_TRAIN},
        NER + ["method=prefix-tuning"],
        2,
        r"prefix-tuning: .*use prompt-tuning or p-tuning instead$",
    ),
    (
        "head on mc likelihood",
        {"mc.jsonl": jsonl(MC_ROW)},
        MC + ["method=head"],
        2,
        r"method: 'head' .*likelihood scoring has none",
    ),
    (
        "adalora with too few steps",
        {"train.conll": NER_TRAIN},
        NER + ["method=adalora"],
        2,
        r"method adalora: the run has 2 optimizer steps, too few .*raise epochs",
    ),
    (
        "layers_to_transform past the last",
        CLS_FILES,
        CLS + ["layers_to_transform=[7]"],
        2,
        r"layers_to_transform: \[7\] names a layer past the model's 2",
    ),
    (
        "modules_to_save unknown",
        CLS_FILES,
        CLS + ["modules_to_save=[clasifier]"],
        2,
        r"modules_to_save: module 'clasifier' does not exist .*did you mean 'classifier'",
    ),
    setting("freeze_layers too many", ["method=freeze", "freeze_layers=5"], r"freeze_layers: 5 must be between"),
    # -------- classification tables
    ("empty file", *cls_with(b""), 2, r"train.tsv: the file is empty"),
    ("header only", *cls_with(b"sentence\tlabel\n"), 2, r"train.tsv: the file has a header but no data rows"),
    ("ragged row", *cls_with(CLS_TRAIN + b"a\tpos\textra\n"), 2, r"train.tsv:14: 3 fields, expected 2"),
    ("short row", *cls_with(CLS_TRAIN + b"just text\n"), 2, r"train.tsv:14: 1 fields, expected 2"),
    (
        "latin-1 bytes",
        *cls_with(CLS_TRAIN + "caf\xe9\tpos\n".encode("latin-1")),
        2,
        r"train.tsv:14: bytes that are not valid utf-8.*encoding: latin-1",
    ),
    (
        "utf-16 file",
        *cls_with(CLS_TRAIN.decode().encode("utf-16")),
        2,
        r"train.tsv:1: bytes that are not valid utf-8.*encoding",
    ),
    ("NUL bytes", *cls_with(CLS_TRAIN + b"the\x00good\tpos\n"), 2, r"train.tsv:14: a NUL byte.*encoding"),
    ("huge line", *cls_with(CLS_TRAIN + b"x" * 200_000 + b"\tpos\n"), 2, r"train.tsv:14: .*longer than"),
    (
        "unclosed csv quote",
        *cls_with(b'sentence,label\n"good movie,pos\nbad,neg\n', "train.csv"),
        2,
        r"train.csv:2: .*quote",
    ),
    (
        "label unseen in training",
        {"train.tsv": CLS_TRAIN, "dev.tsv": CLS_DEV + b"meh .\tneutral\n"},
        CLS,
        2,
        r"dev.tsv: row 4: label 'neutral' never seen in train_file",
    ),
    (
        "single-class training",
        *cls_with(b"sentence\tlabel\ngood .\tpos\nfine .\tpos\ngreat .\tpos\n"),
        2,
        r"train.tsv: only one label \(pos\) in the training data",
    ),
    ("empty label", *cls_with(CLS_TRAIN + b"good .\t \n"), 2, r"train.tsv: row 14: empty text or label"),
    setting("missing column", ["text_column=review"], r"train.tsv: column 'review' not found.*text_column"),
    setting("missing validation file", ["validation_file={d}/nope.tsv"], r"validation_file: file not found"),
    setting("unknown data_format", ["data_format=xlsx"], r"data_format: 'xlsx' is not one of"),
    setting("unknown encoding", ["encoding=latin-9x"], r"encoding: unknown text encoding 'latin-9x'"),
    # -------- JSON shapes and types (classification reads json / jsonl too)
    (
        "truncated json",
        *cls_with(b'[{"sentence": "good", "label": "pos"}, {"sent', "train.json"),
        2,
        r"train.json:1: not valid JSON",
    ),
    (
        "truncated jsonl line",
        *cls_with(b'{"sentence": "good", "label": "pos"}\n{"sentence": "ba', "train.jsonl"),
        2,
        r"train.jsonl:2: not valid JSON",
    ),
    (
        "json of scalars",
        *cls_with(b'{"sentence": "good", "label": "pos"}', "train.json"),
        2,
        r"train.json: expected a JSON list of objects",
    ),
    (
        "columnar json of unequal columns",
        *cls_with(b'{"sentence": ["good", "bad"], "label": ["pos"]}', "train.json"),
        2,
        r"train.json: columnar JSON whose columns differ in length \(sentence: 2, label: 1\)",
    ),
    (
        "jsonl line a list",
        *cls_with(b'["good", "pos"]\n', "train.jsonl"),
        2,
        r"train.jsonl:1: expected a JSON object, got list",
    ),
    (
        "json label a list",
        *cls_with(jsonl({"sentence": "good", "label": "pos"}, {"sentence": "bad", "label": ["neg"]}), "train.jsonl"),
        2,
        r"train.jsonl: row 2: label must be text or a number, got list",
    ),
    (
        "json text a number",
        *cls_with(jsonl({"sentence": "good", "label": "pos"}, {"sentence": 7, "label": "neg"}), "train.jsonl"),
        2,
        r"train.jsonl: row 2: column 'sentence' must be text, got int",
    ),
    # -------- sft
    (
        "sft unknown chat role",
        {"sft.jsonl": jsonl({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]})},
        SFT,
        2,
        r"sft.jsonl: row 1: messages\[1\].role: 'bot' is not a known role; roles are system, user",
    ),
    (
        "sft output not text",
        {"sft.jsonl": jsonl(with_(SFT_ROW, output=3))},
        SFT,
        2,
        r"sft.jsonl: row 1: key 'output' must be a string",
    ),
    (
        "sft unknown layout",
        {"sft.jsonl": jsonl({"prompt": "hi", "completion": "ok"})},
        SFT,
        2,
        r"cannot tell the instruction format",
    ),
    (
        "sft unknown template",
        {"sft.jsonl": jsonl(SFT_ROW)},
        SFT + ["template=chatlm"],
        2,
        r"template: 'chatlm' .*did you mean 'chatml'",
    ),
    # -------- ner
    (
        "ner bad BIO tag",
        {"train.conll": NER_TRAIN + b"good\tX-POS\n"},
        NER,
        2,
        r"train.conll:\d+: tag 'X-POS' is not IOB2",
    ),
    ("ner one column", {"train.conll": NER_TRAIN + b"good\n"}, NER, 2, r"train.conll:\d+: one column"),
    (
        "ner words and tags differ",
        {"n.jsonl": jsonl({"tokens": ["a", "b"], "tags": ["O"]})},
        ["train", "task=ner", "model={bert}", "train_file={d}/n.jsonl", "validation_file={d}/n.jsonl", *RUN],
        2,
        r"n.jsonl: row 1.*2 words but 1 tags",
    ),
    # -------- qa
    (
        "squad offset mismatch",
        {"qa.json": squad("the movie was good .", "good", 3)},
        ["train", "task=qa", "model={bert}", "train_file={d}/qa.json", "validation_file={d}/qa.json", *RUN],
        2,
        r"qa.json: row 1 \(question id q1\): answers\[0\]: the context at answer_start=3 reads",
    ),
    (
        "squad offset past the end",
        {"qa.jsonl": jsonl(with_(QA_ROW, answers={"text": ["good"], "answer_start": [99]}))},
        QA,
        2,
        r"qa.jsonl: row 1 \(question id q1\): answers\[0\]: answer_start=99 puts 'good' past the end of the context",
    ),
    (
        "squad paragraphs not a list",
        {"qa.json": b'{"data": [{"title": "t", "paragraphs": {"context": "x"}}]}'},
        ["train", "task=qa", "model={bert}", "train_file={d}/qa.json", "validation_file={d}/qa.json", *RUN],
        2,
        r"qa.json: data\[0\]: 'paragraphs' must be a list",
    ),
    # -------- multiple choice
    (
        "mc answer index out of range",
        {"mc.jsonl": jsonl(with_(MC_ROW, answer=5))},
        MC,
        2,
        r"mc.jsonl: row 1.*answer '5' is not among options A, B, C",
    ),
    (
        "mc answer letter unknown",
        {"mc.jsonl": jsonl(with_(MC_ROW, answer="E"))},
        MC,
        2,
        r"mc.jsonl: row 1.*answer 'E' is not among",
    ),
    (
        "mc one option",
        {"mc.jsonl": jsonl(with_(MC_ROW, choices=["good"], answer=0))},
        MC,
        2,
        r"mc.jsonl: row 1: 1 non-empty options",
    ),
    # -------- valid, if unusual: these train
    ("BOM tsv trains", *cls_with(b"\xef\xbb\xbf" + CLS_TRAIN), 0, None),
    ("CRLF tsv trains", *cls_with(CLS_TRAIN.replace(b"\n", b"\r\n")), 0, None),
    ("BOM + CRLF conll trains", {"train.conll": b"\xef\xbb\xbf" + NER_TRAIN.replace(b"\n", b"\r\n")}, NER, 0, None),
]


def fill(arg: str, where: dict) -> str:
    for key, value in where.items():
        arg = arg.replace("{" + key + "}", str(value))
    return arg


@pytest.mark.parametrize("name, files, args, code, pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, files, args, code, pattern, tmp_path, tiny_bert, tiny_llama, capsys):
    for rel, content in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(content)
    out = tmp_path / "runs"
    where = {"d": tmp_path, "out": out, "bert": tiny_bert, "llama": tiny_llama}
    got = main([fill(a, where) for a in args] + (["run_name=r"] if code == 0 else []))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert got == code, err
    if code == 0:
        assert json.loads((out / "r" / "result.json").read_text())["status"] == "completed"
        return
    lines = [l for l in err.splitlines() if l.startswith("peftlab: error:")]
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]
    assert not out.exists() or not any(out.iterdir()), f"left behind: {list(out.iterdir())}"


def test_a_real_process_prints_one_line_for_what_was_a_traceback(tmp_path):
    """Through `python -m peftlab`, as users run it: what transformers refused deep inside is one line."""
    import subprocess
    import sys

    (tmp_path / "train.tsv").write_bytes(CLS_TRAIN)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "peftlab",
            "train",
            f"train_file={tmp_path / 'train.tsv'}",
            f"output_dir={tmp_path / 'runs'}",
            "optim=adamw_torchh",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [l for l in proc.stderr.splitlines() if l.startswith("peftlab: error:")] == [
        l for l in proc.stderr.splitlines() if l.startswith("peftlab: error: optim: unknown value 'adamw_torchh'")
    ]
    assert proc.stderr.count("peftlab: error:") == 1
    assert not (tmp_path / "runs").exists()
