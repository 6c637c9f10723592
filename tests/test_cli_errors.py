"""Bad input: one clear message naming the file/key/row and the fix, exit code 2, nothing written."""

import subprocess
import sys

import pytest

from peftlab.cli import main


def run_cli(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.fixture
def out(tmp_path):
    return tmp_path / "runs"


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return str(path)


CASES = {
    "missing file": (lambda d, s: [f"train_file={d / 'nope.tsv'}"], r"train_file: file not found: .*nope.tsv"),
    "missing column": (
        lambda d, s: ["text_column=review"],
        r"train.tsv: column 'review' not found \(columns: sentence, label\); set `text_column:`",
    ),
    "unseen dev label": (
        lambda d, s: ["validation_file=" + str(write(d / "dev.tsv", "sentence\tlabel\ngood .\tpos\nmeh .\tneutral\n"))],
        r"dev.tsv: row 3: label 'neutral' never seen in train_file \(labels: neg, pos\)",
    ),
    "undecodable bytes": (
        lambda d, s: ["validation_file=" + str(write(d / "v.tsv", "sentence\tlabel\ncaf\xe9\tpos\n", "latin-1"))],
        r"v.tsv:2: bytes that are not valid utf-8.*encoding: latin-1",
    ),
    "wrong field count": (
        lambda d, s: ["validation_file=" + str(write(d / "w.tsv", "sentence\tlabel\na\tpos\tx\n"))],
        r"w.tsv:2: 3 fields, expected 2",
    ),
    "empty file": (lambda d, s: [f"validation_file={write(d / 'e.tsv', '')}"], r"e.tsv: the file is empty"),
    "bad target module": (
        lambda d, s: ["lora_target=q_proj,v_proj"],
        r"lora_target: module 'q_proj' does not exist in BertForSequenceClassification.*linear modules are: .*query",
    ),
    "unknown key": (lambda d, s: ["lora_alhpa=8"], r"unknown key 'lora_alhpa'.*did you mean 'lora_alpha'"),
    "unknown method": (lambda d, s: ["method=lorra"], r"unknown method 'lorra'.*did you mean 'lora'"),
    "bad metric": (lambda d, s: ["metric_for_best=f2"], r"metric_for_best: 'f2' is not a classification metric"),
    "mean pooling on decoder": (lambda d, s: [f"model={s}", "pooling=mean"], r"pooling: 'mean' needs an encoder"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_message_and_writes_nothing(case, base_config, tiny_llama, tmp_path, out, capsys):
    extra, pattern = CASES[case]
    code, err = run_cli(["train"] + base_config + extra(tmp_path, tiny_llama), capsys)
    assert code == 2
    assert err.startswith("peftlab: error: ") and "Traceback" not in err
    import re

    assert re.search(pattern, err), err
    assert not out.exists(), "a run folder was left behind"


def test_existing_run_folder_is_not_clobbered(base_config, capsys):
    assert main(["train"] + base_config) == 0
    code, err = run_cli(["train"] + base_config, capsys)
    assert code == 2 and "already exists (status: completed)" in err and "--resume" in err
    assert main(["train", "--resume"] + base_config) == 0  # complete: nothing to do
    code, err = run_cli(["train", "--resume"] + base_config + ["lr=1e-3"], capsys)
    assert code == 2 and "different config (train.lr: 0.005 -> 0.001)" in err


def test_real_process_exit_code(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "peftlab",
            "train",
            f"train_file={tmp_path / 'x.csv'}",
            f"output_dir={tmp_path / 'runs'}",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "train_file: file not found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "damage, pattern",
    [
        ("config.yaml", r"runs/x/config.yaml: corrupt or cut short .*--overwrite"),
        ("result.json", r"runs/x/result.json: corrupt or cut short \(line 1.*--overwrite"),
        ("no config", r"runs/x: config.yaml is missing, so it cannot be checked.*--overwrite"),
        (
            "old value",
            r"runs/x was run with a different config \(task.label_words: \['false', 'true'\] -> \['no', 'yes'\]\)",
        ),
    ],
)
def test_resume_refuses_a_run_folder_it_cannot_check(base_config, tmp_path, capsys, damage, pattern):
    """A run folder's unreadable files are errors naming the file, never read as empty (which would
    pass the --resume config check and resume a run made with other settings)."""
    import re

    from peftlab.config.settings import load_config
    from peftlab.runs.rundir import write_yaml

    argv = base_config + ["run_name=x", "label_words=[no, yes]"]
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    write_yaml(run / "config.yaml", load_config(None, argv).to_dict())
    (run / "result.json").write_text('{"status": "interrupted"}')
    if damage == "no config":
        (run / "config.yaml").unlink()
    elif damage == "old value":  # what YAML 1.1 made of [no, yes] before
        text = (run / "config.yaml").read_text()
        (run / "config.yaml").write_text(text.replace("- 'no'\n  - 'yes'", "- false\n  - true"))
    elif damage == "config.yaml":
        (run / "config.yaml").write_text("model: {model: [x\n")
    else:
        (run / "result.json").write_text('{"status": "compl')
    code, err = run_cli(["train", "--resume"] + argv, capsys)
    assert code == 2 and "Traceback" not in err
    assert re.search(pattern, err), err
