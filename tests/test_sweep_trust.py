"""A sweep never deletes what it did not write and never shows a number its settings did not produce:
names that would be paths are refused before anything runs, --overwrite replaces only peftlab's own
folders, a rerun that fails leaves no stale "completed" run, evaluation rows are reused only with their
own settings, reuse knows which code made a number, and a sweep's runs die with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import peftlab
from peftlab.cli import main
from peftlab.errors import UserError
from peftlab.runs import layout
from peftlab.runs.rundir import write_yaml
from peftlab.sweep.load import load_sweep


def write_sweep(path: Path, **body) -> Path:
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def tiny_settings(base_config: list[str], **extra) -> dict:
    """The tiny-BERT base config of conftest as a sweep's `config:` (output_dir is the sweep's)."""
    config = dict(kv.split("=", 1) for kv in base_config)
    config.pop("output_dir")
    return {**config, **extra}


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
    assert f"--overwrite: {mine} exists and is not a run, evaluation or export folder written by peftlab" in err
    assert (mine / "thesis.tex").read_text() == "years of work"
    args = [a for a in base_config if not a.startswith("output_dir=")]
    assert main(["eval", *args, "--out", str(mine), "--overwrite"]) == 2
    assert "is not a run, evaluation or export folder written by peftlab" in capsys.readouterr().err
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


# -- run folders as a finished sweep leaves them ------------------------------------------------------------


def done_sweep(tmp_path: Path, version: str | None) -> tuple[Path, Path]:
    path = write_sweep(
        tmp_path / "s.yaml",
        name="v",
        output_dir=str(tmp_path / "out"),
        variants=[{"name": "a", "method": "lora"}, {"name": "b", "method": "full"}],
    )
    for run in load_sweep(path).runs:
        folder = tmp_path / "out" / "v" / run.name
        folder.mkdir(parents=True)
        write_yaml(folder / layout.CONFIG, run.cfg.to_dict())
        versions = {"peftlab": version if run.name == "a" else peftlab.__version__}
        (folder / layout.RESULT).write_text(json.dumps({"status": "completed", "versions": versions}))
    return path, tmp_path / "out" / "v"


def fake_result(name: str, acc: float, versions: dict | None, git: str | None = None, kind: str = "") -> dict:
    return {
        "status": "completed",
        "run_name": name,
        "task": "classification",
        "model": "m",
        "method": "lora",
        "metric_for_best": "accuracy",
        "trainable_params": 10,
        "total_params": 1000,
        "trainable_pct": 1.0,
        "metrics_epoch0": {"epoch": 0, "accuracy": 0.5},
        "metrics_best": {"epoch": 1, "accuracy": acc},
        **({"versions": versions} if versions else {}),
        **({"git_hash": git} if git else {}),
        **({"kind": kind, "source": {"kind": "base", "model": "m"}} if kind else {}),
    }


# -- evaluation rows are reused only with their own settings -----------------------------------------------


def eval_sweep(tmp_path: Path, export: str = "q8_0", shots: int = 2) -> Path:
    return write_sweep(
        tmp_path / "s.yaml",
        name="ev",
        output_dir=str(tmp_path / "out"),
        config={"task": "classification", "classify_by": "likelihood", "label_words": ["bad", "good"]},
        variants=[
            {"name": "lora", "method": "lora"},
            {"name": "lora-gguf", "of": "lora", "export": export},
            {"name": "lora-shots", "of": "lora", "shots": shots},
        ],
    )


@pytest.mark.parametrize("missing", ["llama_cpp", "converter"])
def test_a_sweep_with_a_gguf_row_and_no_llama_cpp_is_refused_before_it_trains(tmp_path, executed, capsys, missing):
    """`make demo` leaves llama.cpp out: a sweep that exports GGUF says `make gguf` at once, not after the
    training it would otherwise do first."""
    import sys

    with pytest.MonkeyPatch.context() as mp:
        if missing == "llama_cpp":
            mp.setitem(sys.modules, "llama_cpp", None)
        else:
            mp.setenv("PEFTLAB_LLAMACPP_TOOLS", str(tmp_path / "nowhere"))
        assert main(["sweep", str(eval_sweep(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "variants[1]" in err or "lora-gguf" in err, err
    assert "export: q8_0" in err and "`make gguf`" in err
    assert executed == [] and not (tmp_path / "out").exists()


def fake_eval_folders(tmp_path: Path, path: Path) -> Path:
    """Folders as a finished sweep of eval_sweep leaves them: each evaluation's config.yaml made the way
    `peftlab eval RUN [--export KIND] k=v` makes it (inference.session.read_source), not from the plan."""
    from peftlab.config.settings import load_config

    sweep = load_sweep(path)
    folder = sweep.folder
    done = {"status": "completed", "versions": {"peftlab": peftlab.__version__}}
    lora = folder / "lora"
    lora.mkdir(parents=True)
    write_yaml(lora / layout.CONFIG, sweep.runs[0].cfg.to_dict())
    (lora / layout.RESULT).write_text(json.dumps({**done, "finished_at": "2026-01-01T00:00:00+00:00"}))
    gguf = folder / "exports" / "lora-merged" / "model-q8_0.gguf"
    for name, overrides in (("lora-gguf", [f"model={gguf.resolve()}"]), ("lora-shots", ["shots=2"])):
        (folder / name).mkdir()
        write_yaml(folder / name / layout.CONFIG, load_config(lora / layout.CONFIG, overrides).to_dict())
        source = {"kind": "run", "run": "lora", "run_finished_at": "2026-01-01T00:00:00+00:00"}
        (folder / name / layout.RESULT).write_text(json.dumps({**done, "kind": "eval", "source": source}))
    return folder


def test_evaluation_rows_are_reused_only_with_their_own_settings(tmp_path, executed):
    from peftlab.sweep.runner import run_sweep

    path = eval_sweep(tmp_path)
    folder = fake_eval_folders(tmp_path, path)
    run_sweep(load_sweep(path))
    assert executed == []  # each evaluation's settings are the ones it was made with
    eval_sweep(tmp_path, export="q4_0", shots=3)
    with pytest.raises(UserError) as refused:
        run_sweep(load_sweep(path))
    message = str(refused.value)
    assert "2 run folder(s) cannot be reused" in message
    assert "lora-gguf: its config.yaml differs: model.model:" in message and "model-q4_0.gguf" in message
    assert "lora-shots: its config.yaml differs: eval.shots: 2 -> 3" in message
    assert executed == []
    run_sweep(load_sweep(path), rerun_changed=True)
    assert executed == [("lora-gguf", "rerun"), ("lora-shots", "rerun")]
    eval_sweep(tmp_path)  # back to what the folders hold, but the run they scored was trained again since
    executed.clear()
    for name in ("lora-gguf", "lora-shots"):  # the fake run above left these folders as they were
        assert json.loads((folder / name / layout.RESULT).read_text())["source"]["run"] == "lora"
    result = json.loads((folder / "lora" / layout.RESULT).read_text())
    (folder / "lora" / layout.RESULT).write_text(json.dumps({**result, "finished_at": "2026-02-02T00:00:00+00:00"}))
    with pytest.raises(UserError, match=r"lora-shots: it scored lora as trained until 2026-01-01"):
        run_sweep(load_sweep(path))


# -- a rerun that fails leaves no stale "completed" run ------------------------------------------------------


def test_the_report_never_shows_a_run_whose_sweep_entry_says_failed_or_changed(tmp_path):
    from peftlab.report.tables import summarize

    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        (tmp_path / name / layout.RESULT).write_text(json.dumps(fake_result(name, 0.9, None)))
    entries = [
        {"name": "a", "status": "completed"},
        {"name": "b", "status": "failed", "error": "FileNotFoundError: nope.tsv"},
        {"name": "c", "status": "changed", "error": "runs again: its config.yaml differs: train.lr: 0.1 -> 0.2"},
    ]
    (tmp_path / "sweep.json").write_text(json.dumps({"name": "s", "runs": entries}))
    s = summarize(tmp_path)
    assert [g["group"] for g in s["groups"]] == ["a"]
    assert [(r["name"], r["status"]) for r in s["runs"]] == [("a", "completed"), ("b", "failed"), ("c", "changed")]
    assert s["runs"][2]["error"].startswith("runs again: its config.yaml differs")


def test_a_rerun_starts_without_its_earlier_folder_and_a_failure_puts_it_back_unreported(tmp_path, monkeypatch):
    """The sweep side of a rerun, whatever the child does: it sees no earlier folder; one that writes
    nothing gets the earlier folder back under a failed entry; one that writes its own replaces it."""
    import peftlab.sweep.runner as runner
    from peftlab.report.tables import summarize
    from peftlab.sweep.runner import run_sweep

    path, folder = done_sweep(tmp_path, peftlab.__version__)
    seen = {}

    def child(sweep, run, progress, mode, *warm):
        seen[run.name] = (mode, (folder / run.name).exists())
        if run.name == "b":  # writes its own folder, then fails
            (folder / "b").mkdir()
            (folder / "b" / layout.RESULT).write_text(json.dumps({"status": "failed", "error": "boom"}))
        else:  # a: fails before it writes a file (bad data, a model that does not load), its Trainer's
            (folder / "a" / "checkpoints").mkdir(parents=True)  # output_dir made as it set up
        return run.entry("failed", error="UserError: train_file nope.tsv: not found")

    monkeypatch.setattr(runner, "execute", child)
    earlier = (folder / "a" / layout.RESULT).read_text()
    write_sweep(
        path,
        name="v",
        output_dir=str(tmp_path / "out"),
        config={"lr": "7e-4"},
        variants=[{"name": "a", "method": "lora"}, {"name": "b", "method": "full"}],
    )
    run_sweep(load_sweep(path), rerun_changed=True)
    assert seen == {"a": ("rerun", False), "b": ("rerun", False)}
    assert (folder / "a" / layout.RESULT).read_text() == earlier  # nothing lost
    assert json.loads((folder / "b" / layout.RESULT).read_text())["status"] == "failed"  # the new attempt's
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != ".lock"]
    state = json.loads((folder / "sweep.json").read_text())
    assert [r["status"] for r in state["runs"]] == ["failed", "failed"]
    assert "the earlier folder (another run of this name) was put back, unreported" in state["runs"][0]["error"]
    assert summarize(folder)["groups"] == []  # a's earlier numbers are not shown under the new settings
    seen.clear()
    run_sweep(load_sweep(path))  # the next sweep retries a, whose folder says completed, without a flag
    assert seen == {"a": ("retry", False), "b": ("retry", False)}


def test_the_dashboard_shows_a_failed_rerun_as_failed_not_as_its_earlier_folder(tmp_path):
    """A failed rerun puts the earlier folder back (completed, other settings); the sweep page must say
    failed, as sweep.json and the report do, not the put-back folder's completed."""
    from peftlab.ui import folders

    path, folder = done_sweep(tmp_path, peftlab.__version__)
    runs = [
        {"name": "a", "group": "a", "seed": 42, "settings": {}, "status": "failed", "error": "boom; put back"},
        {"name": "b", "group": "b", "seed": 42, "settings": {}, "status": "changed", "error": "runs again"},
    ]
    (folder / layout.SWEEP_STATE).write_text(json.dumps({"name": "v", "runs": runs, "progress": None}))
    shown = folders.progress(tmp_path / "out", "v")
    assert [(r["name"], r["status"]) for r in shown["runs"]] == [("a", "failed"), ("b", "changed")]
    assert shown["done"] == 0 and shown["runs"][0]["error"] == "boom; put back"
    runs[1]["status"] = "completed"
    (folder / layout.SWEEP_STATE).write_text(json.dumps({"name": "v", "runs": runs, "progress": None}))
    assert [r["status"] for r in folders.progress(tmp_path / "out", "v")["runs"]] == ["failed", "completed"]


def test_a_killed_sweep_puts_the_earlier_folder_back_when_it_starts_again(tmp_path, executed):
    from peftlab.sweep.runner import run_sweep

    path, folder = done_sweep(tmp_path, peftlab.__version__)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    aside = layout.temporary(folder / "a", layout.OLD, pid=dead.pid)
    os.replace(folder / "a", aside)  # SIGKILLed while its rerun of a was starting
    run_sweep(load_sweep(path))
    assert executed == [] and (folder / "a" / layout.RESULT).is_file() and not aside.exists()


@pytest.mark.parametrize("wrote", ["completed", "interrupted"])
def test_a_ctrl_c_after_a_run_completed_leaves_sweep_json_saying_what_its_folder_says(tmp_path, monkeypatch, wrote):
    """The race CI once hit: the run wrote its completed result.json, then the terminal's Ctrl-C reached the
    sweep. sweep.json must not call that run interrupted (and the next sweep must not redo it)."""
    import peftlab.sweep.runner as runner
    from peftlab.sweep.runner import run_sweep

    path = write_sweep(
        tmp_path / "s.yaml",
        name="v",
        output_dir=str(tmp_path / "out"),
        variants=[{"name": "a", "method": "lora"}, {"name": "b", "method": "full"}],
    )
    folder = tmp_path / "out" / "v"
    calls = []

    def child(sweep, run, progress, mode, *warm):
        calls.append(run.name)
        (folder / run.name).mkdir(parents=True)
        write_yaml(folder / run.name / layout.CONFIG, run.cfg.to_dict())
        result = {"status": wrote, "versions": {"peftlab": peftlab.__version__}}
        (folder / run.name / layout.RESULT).write_text(json.dumps(result))
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "execute", child)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(load_sweep(path))
    state = json.loads((folder / "sweep.json").read_text())
    assert calls == ["a"] and (state["runs"][0]["name"], state["runs"][0]["status"]) == ("a", wrote)
    assert state["progress"]["done"] == (wrote == "completed") and state["progress"]["running"] == []
    calls.clear()
    monkeypatch.setattr(runner, "execute", lambda sweep, run, *rest: calls.append(run.name) or run.entry("completed"))
    run_sweep(load_sweep(path))
    assert calls == (["b"] if wrote == "completed" else ["a", "b"])


# -- real sweeps: the rerun retrains with the new settings; a failed rerun shows no stale numbers ----------


def real_sweep(tmp_path: Path, base_config: list[str]) -> tuple[dict, Path, Path]:
    """A run and an evaluation of it, run once: (sweep file body, its path, the sweep folder)."""
    body = {
        "name": "re",
        "output_dir": str(tmp_path / "sweeps"),
        "config": tiny_settings(base_config, epochs=1, method="head", lr=1e-2),
        "variants": [{"name": "head"}, {"name": "head-eval", "of": "head", "eval_batch_size": 8}],
    }
    path = write_sweep(tmp_path / "re.yaml", **body)
    assert main(["sweep", str(path)]) == 0
    return body, path, tmp_path / "sweeps" / "re"


def test_rerun_changed_retrains_with_the_new_settings(tmp_path, base_config, capsys):
    body, path, folder = real_sweep(tmp_path, base_config)
    first = json.loads((folder / "head" / layout.RESULT).read_text())
    capsys.readouterr()
    assert main(["sweep", str(path)]) == 0  # the evaluation's config is the one its `peftlab eval` wrote
    assert "2 already done or kept, 0 to run" in capsys.readouterr().out

    body["variants"][1]["eval_batch_size"] = 4  # the evaluation's own setting
    write_sweep(path, **body)
    assert main(["sweep", str(path)]) == 2
    assert "head-eval: its config.yaml differs: eval.eval_batch_size: 8 -> 4" in capsys.readouterr().err
    assert main(["sweep", str(path), "--rerun-changed"]) == 0
    assert "1 already done or kept, 1 to run" in capsys.readouterr().out
    assert yaml.safe_load((folder / "head-eval" / layout.CONFIG).read_text())["eval"]["eval_batch_size"] == 4

    body["config"]["epochs"] = 2  # the run's: retrained, with the new setting, and its evaluation after it
    write_sweep(path, **body)
    assert main(["sweep", str(path), "--rerun-changed"]) == 0
    second = json.loads((folder / "head" / layout.RESULT).read_text())
    saved = yaml.safe_load((folder / "head" / layout.CONFIG).read_text())
    assert saved["train"]["epochs"] == 2 and second["epochs_run"] == 2 and first["epochs_run"] == 1
    assert second["started_at"] >= first["finished_at"] and second["finished_at"] != first["finished_at"]
    assert len((folder / "head" / layout.METRICS).read_text().splitlines()) == 3  # epoch 0, 1, 2
    report = json.loads((folder / "report" / "report.json").read_text())
    assert report["groups"][0]["metrics_best"]["accuracy"]["mean"] == pytest.approx(second["metrics_best"]["accuracy"])
    evaluation = json.loads((folder / "head-eval" / layout.RESULT).read_text())
    assert evaluation["source"]["run_finished_at"] == second["finished_at"]  # scored the new training


def test_a_rerun_that_fails_shows_no_numbers_of_the_earlier_settings(tmp_path, base_config, capsys):
    body, path, folder = real_sweep(tmp_path, base_config)
    earlier = json.loads((folder / "head" / layout.RESULT).read_text())
    capsys.readouterr()
    body["config"]["text_column"] = "no_such_column"  # fails as it loads its data, before it writes a file
    write_sweep(path, **body)
    assert main(["sweep", str(path), "--rerun-changed"]) == 1
    out = capsys.readouterr().out
    report = json.loads((folder / "report" / "report.json").read_text())
    assert report["groups"] == [] and report["evaluations"] is None  # no numbers of the earlier settings
    md = (folder / "report" / "report.md").read_text()
    assert "head: **failed**" in md and "head-eval: **failed**" in md
    assert f"{earlier['metrics_best']['accuracy']:.3f}" not in md and "Result at best epoch" not in out
    state = json.loads((folder / "sweep.json").read_text())
    assert [(r["name"], r["status"]) for r in state["runs"]] == [("head", "failed"), ("head-eval", "failed")]
    assert "no_such_column" in state["runs"][0]["error"] and "put back, unreported" in state["runs"][0]["error"]
    assert "not run: head, which it evaluates, failed" in state["runs"][1]["error"]
    assert json.loads((folder / "head" / layout.RESULT).read_text()) == earlier  # kept, not lost
    assert not [p for p in folder.iterdir() if ".old-" in p.name or ".tmp-" in p.name]


# -- reuse knows the code that made a number ---------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.0.1", None], ids=["older", "unknown"])
def test_rerun_changed_also_reruns_runs_of_another_peftlab_version(tmp_path, executed, capsys, version):
    path, _ = done_sweep(tmp_path, version)
    assert main(["sweep", str(path)]) == 0
    out = capsys.readouterr().out
    assert executed == [] and f"kept 1 run(s) made by another peftlab version than this {peftlab.__version__}" in out
    assert f"a ({version or 'unknown'})" in out
    assert main(["sweep", str(path), "--rerun-changed"]) == 0
    assert executed == [("a", "rerun")]  # b: this version, same config
    assert f"a: made by peftlab {version or 'unknown'} (this is {peftlab.__version__})" in capsys.readouterr().out


def test_rerun_changed_help_says_it_reruns_other_versions(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "and those made by another peftlab version" in help_text


def test_the_report_says_which_code_made_which_run_when_a_table_mixes_them(tmp_path):
    from peftlab.report.tables import summarize
    from peftlab.report.write import write_report

    libs = {"torch": "2.5.0", "transformers": "4.50.0", "peft": "0.15.0"}
    results = {
        "old-s1": fake_result("old-s1", 0.8, {"peftlab": "0.0.9", **libs}),
        "new-s1": fake_result("new-s1", 0.9, {"peftlab": "0.1.0", **libs}, git="0123456789abcdef+dirty"),
        "zero": fake_result("zero", 0.5, None, kind="eval"),
    }
    for name, result in results.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / layout.RESULT).write_text(json.dumps(result))
    md, html_path = write_report(tmp_path)
    made = md.split("## Made with")[1]
    assert "- peftlab 0.0.9, torch 2.5.0, transformers 4.50.0, peft 0.15.0: old-s1" in made
    assert "- peftlab 0.1.0 (commit 0123456789+dirty), torch 2.5.0, transformers 4.50.0, peft 0.15.0: new-s1" in made
    assert "- versions not recorded (an older peftlab): zero" in made
    assert "Made with" in html_path.read_text()
    for name in ("old-s1", "zero"):
        (tmp_path / name / layout.RESULT).write_text(json.dumps(results["new-s1"]))
    assert "Made with" not in write_report(tmp_path)[0]  # one code made every run: no note
    assert len(summarize(tmp_path)["made_with"]) == 1


def test_result_json_records_the_running_codes_version(monkeypatch):
    from peftlab.runs.measure import library_versions

    monkeypatch.setattr(peftlab, "__version__", "9.9.9-checkout")  # not the installed distribution's
    versions = library_versions()
    assert versions["peftlab"] == "9.9.9-checkout"
    assert {"torch", "transformers", "peft"} <= set(versions) and versions["torch"]


# -- a sweep's children die with it ------------------------------------------------------------------------


def children_of(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def gone(pid: int) -> bool:
    """Exited, or a zombie nobody reaped yet (in a container PID 1 may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_a_real_sweeps_runs_die_when_its_process_alone_is_killed(tmp_path, base_config):
    """`peftlab sweep` SIGKILLed by its pid alone (no process group, no Ctrl-C: an out-of-memory kill, a
    job scheduler): the run it was training and the next run's process it had started ahead both end at
    once. The run trains a long, silent epoch (no progress bars, no log lines), so only the death signal
    it armed can end it in time: a closed pipe would stop it only at its next line, the epoch's end."""
    import random

    from conftest import sentence

    rng = random.Random(1)
    big = tmp_path / "big.tsv"  # ~40 s an epoch on two cores, more than the wait below
    big.write_text(
        "sentence\tlabel\n" + "".join(f"{sentence(rng, i % 2)}\t{'pos' if i % 2 else 'neg'}\n" for i in range(60000))
    )
    body = {
        "name": "k",
        "output_dir": str(tmp_path / "sweeps"),
        "config": tiny_settings(base_config, train_file=str(big), epochs=1, method="head", logging_steps=100000),
        "variants": [{"name": "first"}, {"name": "second"}],
    }
    path = write_sweep(tmp_path / "k.yaml", **body)
    result = tmp_path / "sweeps" / "k" / "first" / layout.RESULT
    sweep = subprocess.Popen(
        [sys.executable, "-m", "peftlab", "sweep", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TQDM_DISABLE": "1"},
        start_new_session=True,  # a group of its own: only its pid is killed, never this test's
    )
    children: set[int] = set()
    try:
        deadline = time.time() + 300
        while not (result.is_file() and json.loads(result.read_text() or "{}").get("status") == "running"):
            assert sweep.poll() is None and time.time() < deadline, "the sweep never started its first run"
            time.sleep(0.2)
        children = children_of(sweep.pid)
        while len(children) < 2 and time.time() < deadline:  # the run, and the next one started ahead
            time.sleep(0.2)
            children = children_of(sweep.pid)
        assert len(children) == 2, children
        time.sleep(2)  # into the epoch
        os.kill(sweep.pid, signal.SIGKILL)  # the sweep alone
        sweep.wait()
        deadline = time.time() + 10
        while not all(gone(c) for c in children) and time.time() < deadline:
            time.sleep(0.1)
        alive = [c for c in children if not gone(c)]
        assert not alive, f"outlived the sweep: {alive}"
        assert json.loads(result.read_text()).get("status") == "running"  # it was stopped mid-epoch
    finally:  # whatever happened, nothing this test started is left running
        if sweep.poll() is None:
            children |= children_of(sweep.pid)
            sweep.kill()
            sweep.wait()
        for pid in children:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
