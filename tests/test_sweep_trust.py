"""A sweep never deletes what it did not write: names that would be paths are refused before anything
runs, and --overwrite replaces only peftlab's own folders."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from peftlab.cli import main
from peftlab.errors import UserError
from peftlab.runs import layout
from peftlab.sweep.load import load_sweep


def write_sweep(path: Path, **body) -> Path:
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def tiny_settings(base_config: list[str], **extra) -> dict:
    """The tiny-BERT base config of conftest as a sweep's `config:` (output_dir is the sweep's)."""
    config = dict(kv.split("=", 1) for kv in base_config)
    config.pop("output_dir")
    return {**config, **extra}


@pytest.fixture
def executed(monkeypatch):
    """Replace the child process: record (run, mode) and mark the run completed."""
    import peftlab.sweep.runner as runner

    calls = []

    def fake_execute(sweep, run, progress, mode, *warm_start):
        calls.append((run.name, mode))
        return {"name": run.name, "group": run.group, "seed": run.seed, "settings": run.settings, "status": "completed"}

    monkeypatch.setattr(runner, "execute", fake_execute)
    return calls


# -- names are never paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"variants": [{"name": "a", "method": "head"}, {"name": "..", "of": "a"}]},  # the reproduced deletion
        {"variants": [{"name": ".", "method": "head"}]},
        {"variants": [{"name": "a/b", "method": "head"}]},
        {"variants": [{"name": "/", "method": "head"}]},
        {"variants": [{"name": ".hidden", "method": "head"}]},
        {"variants": [{"name": ".lock", "method": "head"}]},
        {"variants": [{"name": "..", "method": "head"}], "grid": {"seed": [1, 2]}},  # ..-s1: hidden
        {"variants": [{"name": "a", "method": "head"}, {"name": "logs", "method": "lora"}]},
        {"variants": [{"name": "configs", "method": "head"}]},
        {"variants": [{"name": "exports", "method": "head"}]},
        {"variants": [{"name": "Report", "method": "head"}]},
        {"variants": [{"name": "sweep.json", "method": "head"}]},
        {"grid": {"method": [".."]}},  # a grid point's name
        {"name": "..", "variants": [{"method": "head"}]},  # the sweep's own folder
        {"name": "../elsewhere", "variants": [{"method": "head"}]},
    ],
    ids=lambda body: json.dumps(body)[:60],
)
def test_a_name_that_is_not_a_folder_name_is_refused_before_anything_runs(tmp_path, executed, capsys, body):
    (tmp_path / "keep.txt").write_text("the user's")
    path = write_sweep(tmp_path / "bad.yaml", output_dir=str(tmp_path / "out"), **{"name": "s", **body})
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert "must be a folder name, not" in err and err.count("\n") == 1, err
    assert executed == [] and not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "keep.txt"]
    assert main(["sweep", str(path), "--dry-run"]) == 2  # the plan itself is refused


def test_names_a_user_may_write_are_kept(tmp_path):
    path = write_sweep(
        tmp_path / "ok.yaml",
        variants=[{"name": "lora r8", "method": "lora"}, {"name": "v1.2", "method": "full"}, {"name": "report-2"}],
        grid={"seed": [1]},
    )
    assert [r.name for r in load_sweep(path).runs] == ["lora_r8", "v1.2", "report-2"]


@pytest.mark.parametrize("part", ["..", "report.md", "study.json", "a/b"])
def test_a_study_part_name_that_is_not_a_folder_name_is_refused(tmp_path, part):
    path = write_sweep(
        tmp_path / "study.yaml", output_dir=str(tmp_path / "out"), parts=[{"name": part, "variants": [{}]}]
    )
    with pytest.raises(UserError, match=rf"parts\[0\]: name: '{part}' must be a folder name"):
        load_sweep(path)


def test_the_real_cli_refuses_a_dot_dot_variant_with_one_line(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "other-sweep.txt").write_text("kept")
    path = write_sweep(
        tmp_path / "bad.yaml",
        name="s",
        output_dir=str(tmp_path / "out"),
        variants=[{"name": "a", "method": "head"}, {"name": "..", "of": "a"}],
    )
    proc = subprocess.run(
        [sys.executable, "-m", "peftlab", "sweep", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("peftlab: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "variants[1]: name: '..' must be a folder name, not '..' (the folder above)" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["other-sweep.txt"]


@pytest.mark.parametrize("name", ["..", ".hidden", "logs", "a/b"])
def test_run_name_is_checked_by_the_same_rule(base_config, tmp_path, capsys, name):
    assert main(["train", *base_config, f"run_name={name}"]) == 2
    assert f"run_name: '{name}' must be a folder name" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_dashboard_launch_with_a_dot_dot_name_starts_nothing(tmp_path):
    from peftlab.ui.jobs import Jobs

    root = tmp_path / "runs"
    root.mkdir()
    jobs = Jobs(root, [])
    with pytest.raises(UserError, match=r"name: '\.\.' must be a folder name"):
        jobs.launch_text("name: ..\nvariants:\n  - {method: head}\n")
    assert jobs.jobs == {} and sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert not list((root / ".ui" / "launches").iterdir())


# -- --overwrite replaces only peftlab's own folders ------------------------------------------------------


def users_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    (path / "config.yaml").write_text("mine: true\n")  # a config.yaml alone does not make it a run folder
    return path


def test_overwrite_never_deletes_a_folder_peftlab_did_not_write(base_config, tmp_path, capsys):
    mine = users_folder(tmp_path / "runs" / "mine")
    assert main(["train", *base_config, "run_name=mine", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"--overwrite: {mine} exists and is not a run or evaluation folder written by peftlab" in err
    assert (mine / "thesis.tex").read_text() == "years of work"
    args = [a for a in base_config if not a.startswith("output_dir=")]
    assert main(["eval", *args, "--out", str(mine), "--overwrite"]) == 2
    assert "is not a run or evaluation folder written by peftlab" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["config.yaml", "thesis.tex"]


def test_overwrite_replaces_a_run_folder_peftlab_wrote(base_config, tmp_path, capsys):
    from peftlab.runs.rundir import written_by_peftlab

    run = tmp_path / "runs" / "r"
    assert main(["train", *base_config, "method=head", "run_name=r"]) == 0
    assert (run / layout.MARKER).is_file() and written_by_peftlab(run)
    first = json.loads((run / layout.RESULT).read_text())["finished_at"]
    (run / layout.MARKER).unlink()  # a run folder of a peftlab made before the marker: still its own
    assert written_by_peftlab(run)
    time.sleep(1)  # finished_at has whole seconds
    assert main(["train", *base_config, "method=head", "run_name=r", "--overwrite"]) == 0
    assert json.loads((run / layout.RESULT).read_text())["finished_at"] != first
    assert (run / layout.MARKER).is_file()
    (run / layout.MARKER).unlink()
    (run / layout.RESULT).write_text('{"status": "made up"}')
    assert not written_by_peftlab(run)  # no marker, and a status no peftlab writes
