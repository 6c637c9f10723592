"""A study file: several sweeps of one design (`parts:`), each its own sweep folder and report."""

from __future__ import annotations

import json

import pytest
import yaml

from peftlab.cli import main
from peftlab.errors import UserError
from peftlab.report.tables import summarize
from peftlab.sweep.load import load_sweep
from peftlab.sweep.study import Study


def write_study(path, **body):
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


@pytest.fixture
def study_file(tmp_path, base_config, sentiment):
    """Two parts on the tiny BERT: the sentiment task as is, and as sentence pairs (the sentence twice)."""
    config = dict(kv.split("=", 1) for kv in base_config)
    config.pop("output_dir")
    pairs = tmp_path / "pairs.jsonl"
    rows = [l.split("\t") for l in open(sentiment["train"]).read().splitlines()[1:]]
    pairs.write_text("".join(json.dumps({"a": s, "b": s, "y": y}) + "\n" for s, y in rows))
    base = tmp_path / "pairs.yaml"
    base.write_text(
        f'train_file: {pairs}\nvalidation_file: ""\nvalidation_ratio: 0.25\ntext_column: a\ntext_pair_column: b\n'
        f"label_column: y\nepochs: 2\n"
    )
    # the data are each part's (the study's config: goes over a part's base file, so it holds what all share)
    single = {k: config.pop(k) for k in ("train_file", "validation_file")}
    return write_study(
        tmp_path / "study.yaml",
        name="tiny-study",
        output_dir=str(tmp_path / "out"),
        description="two tasks, two methods",
        config=config,
        variants=[{"name": "full", "method": "full", "lr": 1e-3}, {"method": "lora", "lora_rank": 4}],
        parts=[
            {"name": "single", "config": single},
            {"name": "pairs", "base": "pairs.yaml", "variants": [{"method": "lora", "lora_rank": 8}]},
        ],
    )


def test_study_plans_parts_with_shared_and_own_settings(study_file, tmp_path):
    study = load_sweep(study_file)
    assert isinstance(study, Study) and [s.name for s in study.sweeps] == ["single", "pairs"]
    single, pairs = study.sweeps
    assert [r.name for r in single.runs] == ["full", "lora-r4"] and [r.name for r in pairs.runs] == ["lora-r8"]
    assert single.folder == tmp_path / "out" / "tiny-study" / "single"
    cfg = pairs.runs[0].cfg
    # the part's base file, then the study's config: over it (pairs.yaml says epochs 2, the study 1), then
    # the part's own config: over both
    assert (cfg.data.text_pair_column, cfg.train.epochs, cfg.data.validation_file) == ("b", 1, "")
    assert single.runs[0].cfg.train.epochs == 1 and single.runs[0].cfg.train.lr == 1e-3
    own = load_sweep(
        write_study(
            tmp_path / "own.yaml",
            config={"epochs": 1},
            parts=[{"name": "p", "base": "pairs.yaml", "config": {"epochs": 4}, "variants": [{"method": "lora"}]}],
        )
    ).sweeps[0]
    assert own.runs[0].cfg.train.epochs == 4


@pytest.mark.parametrize(
    "body, message",
    [
        ({"parts": []}, r"`parts:` must be a list of sweep mappings"),
        ({"parts": [{"base": "x.yaml"}]}, r"parts\[0\]: a part needs a `name:`"),
        ({"parts": [{"name": "a"}, {"name": "a"}]}, "two parts are named 'a'"),
        ({"parts": [{"name": "a", "output_dir": "x"}]}, r"parts\[0\]: unknown key 'output_dir'"),
        ({"parts": [{"name": "a"}], "variant": []}, "unknown study key 'variant'"),
        (
            {"parts": [{"name": "a", "variants": [{"methd": "lora"}]}]},
            r"parts\[0\] \(a\): variants\[0\]: .*unknown key 'methd'",
        ),
    ],
)
def test_bad_study_files_are_refused(tmp_path, body, message):
    with pytest.raises(UserError, match=message):
        load_sweep(write_study(tmp_path / "bad.yaml", **body))


def test_study_runs_every_part_and_gathers_the_reports(study_file, tmp_path, capsys):
    assert main(["sweep", str(study_file)]) == 0
    folder = tmp_path / "out" / "tiny-study"
    for part, groups in (("single", {"full", "lora-r4"}), ("pairs", {"lora-r8"})):
        s = summarize(folder / part)
        assert {g["group"] for g in s["groups"]} == groups
        assert (folder / part / "report" / "report.md").is_file()
    report = (folder / "report.md").read_text()
    assert report.startswith("# Study tiny-study\n\ntwo tasks, two methods")
    assert report.index("## single") < report.index("## pairs")
    assert (folder / "single" / "report" / "report.md").read_text() in report
    assert "study tiny-study: 2 sweeps" in capsys.readouterr().out
    # run again: every run is done, nothing retrains, the reports are written again
    assert main(["sweep", str(study_file)]) == 0
    assert "0 to run" in capsys.readouterr().out
    # the study folder alone (copied elsewhere, say) gives the same report
    (folder / "report.md").unlink()
    assert main(["report", str(folder)]) == 0
    assert (folder / "report.md").read_text() == report and "## pairs" in capsys.readouterr().out
