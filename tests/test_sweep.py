"""peftlab sweep + report: grid expansion, real sweeps on the tiny BERT (a failing variant, a killed
sweep resumed), report numbers against the run folders, seed statistics, HTML, two-sweep comparison."""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from scipy import stats

from peftlab.cli import main
from peftlab.errors import UserError
from peftlab.report.tables import compare, pareto_front, summarize
from peftlab.report.write import write_report
from peftlab.sweep.load import load_sweep

ROOT = Path(__file__).resolve().parents[1]


def write_sweep(path: Path, **body) -> Path:
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def tiny_sweep(tmp_path, base_config, variants, **extra) -> Path:
    """A sweep file whose `config:` is the tiny-BERT base config of the other tests."""
    config = dict(kv.split("=", 1) for kv in base_config)
    config.pop("output_dir")
    config.update(epochs=2, save_steps=2)
    return write_sweep(
        tmp_path / "sweep.yaml",
        name="tiny",
        output_dir=str(tmp_path / "sweeps"),
        config=config,
        variants=variants,
        **extra,
    )


# -- expansion ---------------------------------------------------------------------------------


def test_variants_cross_grid_names_and_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("method: lora\nlr: 1.0e-4\nepochs: 3\n")
    path = write_sweep(
        tmp_path / "s.yaml",
        base="base.yaml",
        config={"epochs": 2},
        variants=[
            {"name": "full", "method": "full", "lr": 5e-5},
            {"method": "lora", "lora_rank": 4},
            {"method": "dora", "lora_rank": 8},
        ],
        grid={"seed": [1, 2, 3]},
    )
    sweep = load_sweep(path)
    assert [r.name for r in sweep.runs][:4] == ["full-s1", "full-s2", "full-s3", "lora-r4-s1"]
    assert len(sweep.runs) == 9 and {r.group for r in sweep.runs} == {"full", "lora-r4", "dora-r8"}
    full, lora = sweep.runs[0].cfg, sweep.runs[3].cfg
    assert (full.method.method, full.train.lr, full.train.epochs, full.train.seed) == ("full", 5e-5, 2, 1)
    assert (lora.method.lora_rank, lora.train.lr) == (4, 1e-4)  # the base file's lr where the variant sets none
    assert full.train.output_dir == str(Path("runs") / "s") and full.train.run_name == "full-s1"
    assert sweep.runs[3].settings == {"method": "lora", "lora_rank": 4, "seed": 1}


def test_grid_alone_and_single_seed_names(tmp_path):
    path = write_sweep(tmp_path / "g.yaml", grid={"method": ["lora", "dora"], "lora_rank": [4, 16]})
    assert [r.name for r in load_sweep(path).runs] == ["lora-r4", "lora-r16", "dora-r4", "dora-r16"]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"variants": [{"methd": "lora"}]}, "unknown key 'methd'"),
        ({"varients": [{"method": "lora"}]}, "did you mean 'variants'"),
        ({"variants": [{"method": "lora", "run_name": "x"}]}, "'run_name' is set by the sweep"),
        ({"variants": [{"name": "a", "method": "lora"}, {"name": "a", "method": "dora"}]}, "both be named 'a'"),
        ({"grid": {"seed": []}}, "grid key 'seed' has an empty list"),
        ({"base": "missing.yaml"}, "base config 'missing.yaml' not found"),
        (
            {"base": {"model": "minilm-l6"}},
            r"`base:` is the path of a config file; put settings written here under `config:`",
        ),
    ],
)
def test_bad_sweep_files_are_refused(tmp_path, body, message):
    with pytest.raises(UserError, match=message):
        load_sweep(write_sweep(tmp_path / "bad.yaml", **body))


def test_dry_run_lists_runs_and_writes_nothing(tmp_path, capsys):
    path = write_sweep(
        tmp_path / "d.yaml",
        output_dir=str(tmp_path / "out"),
        variants=[{"method": "full"}, {"method": "lora", "lora_rank": 8}],
    )
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 runs" in out and "1. full     [pending]" in out and "2. lora-r8  [pending]" in out
    assert not (tmp_path / "out").exists()


# -- real sweeps on the tiny model ------------------------------------------------------------


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.images, self.cells = 0, [], []

    def handle_starttag(self, tag, attrs):
        self.tables += tag == "table"
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.cells.append(data.strip())


def test_sweep_goes_on_after_a_failure_and_report_matches_run_folders(tmp_path, base_config, capsys):
    path = tiny_sweep(
        tmp_path,
        base_config,
        [
            {"name": "head", "method": "head", "lr": 1e-2},
            {"method": "lora", "lora_rank": 4},
            {"name": "broken", "method": "lora", "lora_target": "nonexistent"},
        ],
    )
    assert main(["sweep", str(path)]) == 1  # a run failed: non-zero, but after running the others
    out = capsys.readouterr().out
    folder = tmp_path / "sweeps" / "tiny"
    state = json.loads((folder / "sweep.json").read_text())
    assert [(r["name"], r["status"]) for r in state["runs"]] == [
        ("head", "completed"),
        ("lora-r4", "completed"),
        ("broken", "failed"),
    ]
    assert "lora_target" in state["runs"][2]["error"] and "nonexistent" in state["runs"][2]["error"]
    for name in ("head", "lora-r4"):  # the logs hold what the console showed, without redraws or cursor codes
        log = (folder / "logs" / f"{name}.log").read_bytes().decode()
        bars = [
            l for l in log.splitlines() if re.fullmatch(r"\s*\d+%\|.*(it/s|s/it)\]", l)
        ]  # lines that are a bar alone
        assert "\x1b" not in log and "\r" not in log and "epoch 2:" in log
        # one line per bar, in its last state: epoch 0's evaluation, the training, the predictions (the
        # evaluations nested in the training bar were cleared when they closed)
        assert len(bars) == 3 and all(l.startswith("100%|") for l in bars), log
    assert "Result at best epoch" in out and "report.html" in out
    # each run after the first was started ahead (imports done while the previous run worked) and told to go
    # only after the previous one had finished
    lines = [json.loads((folder / n / "result.json").read_text()).get("timeline") for n in ("head", "lora-r4")]
    assert "warm_started" not in lines[0] and lines[1]["warm_started"] < lines[0]["finished"]
    assert (
        lines[1]["process_started"] >= lines[0]["finished"] - 0.5
        and lines[1]["first_step"] > lines[1]["process_started"]
    )

    s = json.loads((folder / "report" / "report.json").read_text())
    for group in s["groups"]:
        result = json.loads((folder / group["group"] / "result.json").read_text())
        assert group["trainable_params"] == result["trainable_params"]
        assert group["time_per_epoch_s"]["mean"] == pytest.approx(result["time_per_epoch_s"])
        assert group["peak_memory_mb"]["mean"] == pytest.approx(result["peak_memory_mb"])
        for phase in ("metrics_epoch0", "metrics_best"):
            for col in s["columns"]:
                assert group[phase][col]["mean"] == pytest.approx(result[phase][col])
    rows = list(csv.DictReader((folder / "report" / "report.csv").open()))
    assert [r["group"] for r in rows] == ["head", "lora-r4"]
    head = json.loads((folder / "head" / "result.json").read_text())
    assert float(rows[0]["best_accuracy_mean"]) == pytest.approx(head["metrics_best"]["accuracy"])
    md = (folder / "report" / "report.md").read_text()
    assert f"{head['metrics_best']['accuracy']:.3f}" in md and "broken: **failed**" in md

    page = Page()
    page.feed((folder / "report" / "report.html").read_text())
    assert page.tables == 2 and len(page.images) == 3
    for src in page.images:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "head" in page.cells and "lora-r4" in page.cells
    assert {p.name for p in (folder / "report").glob("*.png")} == {
        "loss_curves.png",
        "metric_per_epoch.png",
        "pareto.png",
    }


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_stopped_sweep_resumes_without_redoing_finished_runs(tmp_path, base_config, sig):
    path = tiny_sweep(
        tmp_path,
        base_config,
        [{"name": "first", "method": "head", "lr": 1e-2}, {"name": "second", "method": "full", "epochs": 8}],
    )  # second's 8 epochs: the stop lands in its training (and if it finished first, both files must say so)
    folder = tmp_path / "sweeps" / "tiny"
    cmd = [sys.executable, "-m", "peftlab", "sweep", str(path)]
    # SIGINT back to its default: a shell that started pytest in the background may have set it to ignored
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 300
    while time.time() < deadline:  # stop the sweep once the second run is training
        if (
            json.loads((folder / "second" / "result.json").read_text())
            if (folder / "second" / "result.json").exists()
            else {}
        ).get("status") == "running":
            break
        assert proc.poll() is None, "the sweep ended before it could be stopped"
        time.sleep(0.2)
    os.killpg(proc.pid, sig)  # SIGINT to the whole process group is what Ctrl-C in a terminal does
    err = proc.communicate(timeout=120)[1]
    first = json.loads((folder / "first" / "result.json").read_text())
    assert first["status"] == "completed"
    assert not (folder / "report").exists()
    second = json.loads((folder / "second" / "result.json").read_text())["status"]
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Run the same command again to continue" in err
        state = json.loads((folder / "sweep.json").read_text())
        assert second in ("interrupted", "completed")  # completed: it wrote its result just before the stop
        assert [r["status"] for r in state["runs"]] == ["completed", second]  # sweep.json agrees with the folder
        assert not [p for p in folder.rglob("*") if ".tmp" in p.name]  # nothing half-written
    # a SIGKILL may fall inside a write and leave its temporary file; the rerun must tidy it

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    if second == "completed":
        assert "2 already done" in again.stdout and "[2/2] second" not in again.stdout
    else:
        assert "1 already done" in again.stdout and "[2/2] second" in again.stdout
    assert "[1/2] first" not in again.stdout
    assert json.loads((folder / "first" / "result.json").read_text()) == first  # untouched
    assert not [p for p in folder.rglob("*") if ".tmp" in p.name or ".old" in p.name]
    s = json.loads((folder / "report" / "report.json").read_text())
    assert [g["group"] for g in s["groups"]] == ["first", "second"]
    assert all(r["status"] == "completed" for r in s["runs"])


# -- report statistics on hand-made run folders ------------------------------------------------


def fake_run(
    folder: Path, name: str, acc0: float, acc: float, params: int, mem: float, t: float, method="lora", extra=None
):
    run = folder / name
    run.mkdir(parents=True)
    result = {
        "status": "completed",
        "run_name": name,
        "task": "classification",
        "model": "m",
        "method": method,
        "metric_for_best": "accuracy",
        "trainable_params": params,
        "total_params": 1000,
        "trainable_pct": params / 10,
        "peak_memory_mb": mem,
        "peak_memory_kind": "process_peak_rss",
        "time_per_epoch_s": t,
        "adapter_size_mb": 1.0,
        "best_epoch": 2,
        "metrics_epoch0": {"epoch": 0, "accuracy": acc0, "f1": acc0, "loss": 0.7},
        "metrics_best": {"epoch": 2, "accuracy": acc, "f1": acc, "loss": 0.3},
    }
    if extra is not None:  # a second evaluation set, scored each epoch like the validation split
        result["metrics_best"].update(extra_accuracy=extra, extra_loss=0.9, extra_eval_time_s=1.0)
    (run / "result.json").write_text(json.dumps(result))
    (run / "metrics.jsonl").write_text(
        json.dumps(result["metrics_epoch0"]) + "\n" + json.dumps(result["metrics_best"]) + "\n"
    )


def fake_sweep(folder: Path, groups: dict) -> None:
    runs = []
    for group, seeds in groups.items():
        for seed, args in enumerate(seeds, 1):
            fake_run(folder, f"{group}-s{seed}", *args)
            runs.append({"name": f"{group}-s{seed}", "group": group, "seed": seed, "status": "completed"})
    (folder / "sweep.json").write_text(json.dumps({"name": folder.name, "runs": runs}))


def test_seed_mean_std_and_noise_marks(tmp_path):
    full = [0.90, 0.91, 0.92]
    lora = [0.899, 0.915, 0.905]  # within noise of full
    head = [0.78, 0.79, 0.785]  # clearly worse
    fake_sweep(
        tmp_path,
        {
            "full": [(0.5, a, 1000, 2000, 80) for a in full],
            "lora": [(0.5, a, 10, 1500, 70) for a in lora],
            "head": [(0.5, a, 2, 800, 20) for a in head],
        },
    )
    s = summarize(tmp_path)
    by = {g["group"]: g for g in s["groups"]}
    assert s["best"] == "full"
    mean, std = sum(head) / 3, stats.tstd(head)
    assert by["head"]["metrics_best"]["accuracy"]["mean"] == pytest.approx(mean)
    assert by["head"]["metrics_best"]["accuracy"]["std"] == pytest.approx(std)
    raw = {g: stats.ttest_ind(v, full, equal_var=False).pvalue for g, v in (("head", head), ("lora", lora))}
    assert by["head"]["vs_best"]["p_unadjusted"] == pytest.approx(raw["head"])
    assert by["head"]["vs_best"]["p"] == pytest.approx(2 * raw["head"])  # Holm: the smaller of two p-values x 2
    assert by["lora"]["vs_best"]["p"] == pytest.approx(raw["lora"])  # the largest one stays
    assert by["head"]["vs_best"]["beyond_noise"] and not by["lora"]["vs_best"]["beyond_noise"]
    md = write_report(tmp_path)[0]
    assert f"{mean:.3f} ± {std:.3f}" in md and "✱" in md.split("| head |")[2].split("\n")[0]
    assert "Not distinguishable from it by seed noise: lora" in md
    assert "fewest trainable parameters: **lora**" in md
    assert s["pareto"]["trainable_params"] == ["full", "lora", "head"]  # each cheaper one is worse


def test_second_evaluation_set_is_extra_columns(tmp_path):
    fake_sweep(
        tmp_path,
        {"full": [(0.5, 0.9, 1000, 2000, 80, "full", 0.61)], "lora": [(0.5, 0.88, 10, 1500, 70, "lora", 0.74)]},
    )
    s = summarize(tmp_path)
    assert s["columns"][-1] == "extra_accuracy" and "extra_eval_time_s" not in s["columns"]
    md = write_report(tmp_path)[0]
    assert "extra_accuracy" in md
    best_table = md.split("## Result at best epoch")[1]
    assert "| full |" in best_table and "0.610" in best_table and "0.740" in best_table


def test_pareto_front():
    #        cost, metric: (3, 0.7) is beaten by (2, 0.8); the others trade cost for metric
    points = [(1, 0.5), (2, 0.8), (3, 0.7), (10, 0.9)]
    assert pareto_front(points, higher=True) == [0, 1, 3]
    assert pareto_front([(1, 0.3), (2, 0.2)], higher=False) == [0, 1]


def test_compare_two_sweeps(tmp_path, capsys):
    a, b = tmp_path / "minilm", tmp_path / "mpnet"
    a.mkdir(), b.mkdir()
    fake_sweep(a, {"lora": [(0.5, x, 10, 1500, 70) for x in (0.80, 0.81)], "full": [(0.5, 0.84, 1000, 2000, 80)]})
    fake_sweep(b, {"lora": [(0.5, x, 10, 3000, 140) for x in (0.88, 0.89)]})
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "cmp.md")]) == 0
    out = capsys.readouterr().out
    lora = next(line for line in out.splitlines() if line.startswith("| lora |"))
    assert "0.805 ± 0.007" in lora and "0.885 ± 0.007" in lora and "+0.080" in lora
    assert "| full | 0.840 | - | - |" in out
    assert (tmp_path / "cmp.md").read_text() == compare(a, b)


def test_report_epochs_table_reads_each_runs_metrics_per_epoch(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    fake_sweep(folder, {"lora": [(0.5, 0.8, 10, 1500, 70), (0.5, 0.9, 10, 1500, 70)], "head": [(0.4, 0.6, 2, 900, 20)]})
    for name, accs in (("lora-s1", [0.5, 0.7, 0.8]), ("lora-s2", [0.5, 0.75, 0.9]), ("head-s1", [0.4, 0.6])):
        (folder / name / "metrics.jsonl").write_text(
            "".join(json.dumps({"epoch": e, "accuracy": a, "loss": 1.0}) + "\n" for e, a in enumerate(accs))
        )
    state = json.loads((folder / "sweep.json").read_text())
    (folder / "sweep.json").write_text(json.dumps({**state, "report_epochs": [1, 2]}))
    md, _ = write_report(folder)
    table = md.split("## accuracy after epochs 1, 2")[1].split("\n\n")[1]
    assert "| method | epoch 0 | epoch 1 | epoch 2 |" in table
    assert "| lora | 0.500 ± 0.000 | 0.725 ± 0.035 | 0.850 ± 0.071 |" in table
    assert "| head | 0.400 | 0.600 | - |" in table  # head stopped after epoch 1: no number made up for epoch 2


@pytest.mark.parametrize("value", ["[0, 5]", "[one]", "5", "[]"])
def test_report_epochs_must_be_epoch_numbers(tmp_path, value):
    path = tmp_path / "s.yaml"
    path.write_text(f"variants:\n  - {{method: lora}}\nreport_epochs: {value}\n")
    with pytest.raises(UserError, match="`report_epochs:` must be a list of epoch numbers"):
        load_sweep(path)


def test_compare_shows_the_untuned_rows_both_sweeps_have(tmp_path, capsys):
    """Two model families: each sweep's zero-shot evaluation (no training) is a row of the comparison too."""
    folders = []
    for name, zero, tuned in (("smollm2", 0.61, 0.80), ("gemma3", 0.55, 0.86)):
        folder = tmp_path / name
        folder.mkdir()
        fake_sweep(folder, {"lora": [(0.5, tuned, 10, 1500, 70)]})
        run = folder / "zero-shot"
        run.mkdir()
        (run / "result.json").write_text(
            json.dumps(
                {
                    "status": "completed",
                    "kind": "eval",
                    "task": "classification",
                    "metric_for_best": "accuracy",
                    "method": "none",
                    "trainable_params": 0,
                    "trainable_pct": 0,
                    "total_params": 1000,
                    "eval_wall_s": 4.5,
                    "metrics_best": {"accuracy": zero},
                    "source": {"kind": "base", "model": name},
                }
            )
        )
        state = json.loads((folder / "sweep.json").read_text())
        state["runs"].insert(0, {"name": "zero-shot", "group": "zero-shot", "seed": 1, "status": "completed"})
        (folder / "sweep.json").write_text(json.dumps(state))
        folders.append(folder)
    out = compare(*folders)
    assert "| lora-s1 |" not in out and "| lora | 0.800 | 0.860 | +0.060 |" in out
    assert "| zero-shot (eval) | 0.610 | 0.550 | -0.060 | - | 4.5 s | 4.5 s |" in out


def test_report_of_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


# -- values in sweep files keep the users' text ------------------------------------------------


def test_sweep_values_keep_the_users_text(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: traps\nconfig: {label_words: [no, yes], lr: 1e-4, text_column: 2026-01-01, run_name: 007}\n"
        "variants:\n  - {method: lora, lora_rank: 8, lora_target: on, instruction: 'Answer: yes'}\n"
        "grid: {prompt_init_text: [no, ~, 007], weight_decay: [1.0e-4]}\n"
    )
    runs = load_sweep(path).runs
    assert [r.cfg.method.prompt_init_text for r in runs] == ["no", "~", "007"]
    cfg = runs[0].cfg
    assert cfg.task.label_words == ["no", "yes"] and cfg.task.instruction == "Answer: yes"
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.data.text_column) == (1e-4, 1e-4, "2026-01-01")
    assert cfg.method.lora_target == "on"
    assert runs[0].settings == {
        "method": "lora",
        "lora_rank": 8,
        "lora_target": "on",
        "instruction": "Answer: yes",
        "prompt_init_text": "no",
        "weight_decay": 1e-4,
    }  # typed: 8 and 1e-4 are numbers
    assert runs[0].name == "lora-r8-lora_target_on-instruction_Answer_yes-prompt_init_text_no-weight_decay_0.0001"


def test_sweep_refuses_values_that_cannot_be_what_the_key_means(tmp_path):
    path = write_sweep(tmp_path / "s.yaml", grid={"epochs": ["1.5"]})
    with pytest.raises(UserError, match=r"grid: key 'epochs': expected int for 'epochs'"):
        load_sweep(path)
    path = write_sweep(tmp_path / "s.yaml", variants=[{"instruction": {"a": "b"}}])
    with pytest.raises(UserError, match=r"variants\[0\]: key 'instruction': 'instruction' takes one str"):
        load_sweep(path)


# -- a sweep never reuses a run it should not ----------------------------------------------------


def fake_done_sweep(tmp_path, lr="1e-4") -> tuple[Path, Path]:
    """A sweep of two runs whose folders look completed, written with the config the sweep plans (by this
    peftlab: its version in result.json, as a run writes it)."""
    import peftlab
    from peftlab.runs.rundir import write_yaml

    path = write_sweep(
        tmp_path / "s.yaml",
        name="reuse",
        output_dir=str(tmp_path / "out"),
        config={"lr": lr},
        variants=[{"name": "a", "method": "lora"}, {"name": "b", "method": "full"}],
    )
    for run in load_sweep(path).runs:
        folder = tmp_path / "out" / "reuse" / run.name
        folder.mkdir(parents=True)
        write_yaml(folder / "config.yaml", run.cfg.to_dict())
        (folder / "result.json").write_text(
            json.dumps({"status": "completed", "versions": {"peftlab": peftlab.__version__}})
        )
    return path, tmp_path / "out" / "reuse"


def test_rerun_skips_only_runs_with_the_same_config(tmp_path, executed):
    from peftlab.sweep.runner import run_sweep

    path, folder = fake_done_sweep(tmp_path)
    run_sweep(load_sweep(path))
    assert executed == []  # same config: both skipped
    path = write_sweep(
        path,
        name="reuse",
        output_dir=str(tmp_path / "out"),
        config={"lr": "2e-4"},
        variants=[{"name": "a", "method": "lora"}, {"name": "b", "method": "full"}],
    )
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(
        UserError,
        match=r"(?s)2 run folder\(s\) cannot be reused.*a: its config.yaml differs: "
        r"train.lr: 0.0001 -> 0.0002.*Nothing was run. Pass --rerun-changed",
    ):
        run_sweep(load_sweep(path))
    assert executed == [] and sorted(p.name for p in folder.iterdir()) == before  # nothing written
    run_sweep(load_sweep(path), rerun_changed=True)
    assert executed == [("a", "rerun"), ("b", "rerun")]


def test_sweep_cli_stops_with_exit_2_on_changed_runs(tmp_path, executed, capsys):
    path, folder = fake_done_sweep(tmp_path)
    cfg = (folder / "a" / "config.yaml").read_text()
    (folder / "a" / "config.yaml").write_text(cfg.replace("lora_rank: 8", "lora_rank: 4"))
    assert main(["sweep", str(path)]) == 2
    assert "a: its config.yaml differs: method.lora_rank: 4 -> 8" in capsys.readouterr().err
    assert executed == []
    assert main(["sweep", str(path), "--rerun-changed"]) == 0
    assert executed == [("a", "rerun")]


@pytest.mark.parametrize(
    "damage, message",
    [
        ("config.yaml", r"a/config.yaml: corrupt or cut short"),
        ("result.json", r"a/result.json: corrupt or cut short"),
        ("no config", r"a: config.yaml is missing"),
    ],
)
def test_unreadable_run_folders_stop_the_sweep(tmp_path, executed, damage, message):
    from peftlab.sweep.runner import run_sweep

    path, folder = fake_done_sweep(tmp_path)
    if damage == "no config":
        (folder / "a" / "config.yaml").unlink()
    else:
        text = (folder / "a" / damage).read_text()
        (folder / "a" / damage).write_text(text[: len(text) // 2] + ("\n  - [" if damage == "config.yaml" else ""))
    with pytest.raises(UserError, match=message + r".*--overwrite \(a sweep: --rerun-changed\), or delete"):
        run_sweep(load_sweep(path))
    assert executed == []
    run_sweep(load_sweep(path), rerun_changed=True)
    assert executed == [("a", "rerun")]


def test_two_sweeps_on_one_folder(tmp_path, executed):
    from peftlab.sweep.reuse import sweep_lock
    from peftlab.sweep.runner import run_sweep

    path, folder = fake_done_sweep(tmp_path)
    with sweep_lock(folder):
        with pytest.raises(UserError, match=rf"another `peftlab sweep` \(pid {os.getpid()}\) is running"):
            run_sweep(load_sweep(path))
    (folder / ".lock").write_text("999999\n")  # left by a process that died: the kernel dropped its lock
    run_sweep(load_sweep(path))


def test_second_sweep_process_is_refused(tmp_path):
    path, folder = fake_done_sweep(tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
            "fcntl.flock(f, fcntl.LOCK_EX); f.write('4242'); f.flush(); print('held', flush=True); "
            "time.sleep(60)",
            str(folder / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.run(
            [sys.executable, "-m", "peftlab", "sweep", str(path)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2 and "another `peftlab sweep` (pid 4242)" in proc.stderr
    finally:
        holder.kill()
        holder.wait()


# -- p-values: Holm across a table, never one that no test computed ------------------------------


def test_holm_correction_can_remove_a_mark(tmp_path):
    from peftlab.report.tables import holm

    assert holm([0.01, None, 0.04, 0.03]) == pytest.approx([0.03, None, 0.06, 0.06])
    best = [0.90, 0.91, 0.92]
    a, b = [0.88, 0.885, 0.89], [0.879, 0.884, 0.889]  # each p ~ 0.03 alone: two of them are not enough
    fake_sweep(
        tmp_path,
        {
            "best": [(0.5, x, 10, 1, 1) for x in best],
            "a": [(0.5, x, 10, 1, 1) for x in a],
            "b": [(0.5, x, 10, 1, 1) for x in b],
        },
    )
    by = {g["group"]: g["vs_best"] for g in summarize(tmp_path)["groups"]}
    raw_a = stats.ttest_ind(a, best, equal_var=False).pvalue
    assert raw_a < 0.05 and by["a"]["p_unadjusted"] == pytest.approx(raw_a)
    assert by["a"]["p"] > 0.05 and by["b"]["p"] > 0.05 and not by["a"]["beyond_noise"] and not by["b"]["beyond_noise"]
    md = write_report(tmp_path)[0]
    assert "Holm-adjusted" in md and "✱" not in md.split("## Result at best epoch")[1].split("✱ =")[0]


def test_no_p_value_without_a_test(tmp_path):
    fake_sweep(
        tmp_path,
        {"full": [(0.5, 0.9, 1000, 2, 2)] * 3, "lora": [(0.5, 0.8, 10, 1, 1)] * 3, "head": [(0.5, 0.7, 2, 1, 1)]},
    )
    s = summarize(tmp_path)
    by = {g["group"]: g["vs_best"] for g in s["groups"]}
    assert by["lora"]["p"] is None and not by["lora"]["beyond_noise"]  # no spread on either side: t is undefined
    assert by["head"]["p"] is None  # one seed
    md = write_report(tmp_path)[0]
    assert "| -0.100 (p=n/a) |" in md and "| -0.200 (p=n/a) |" in md and "p=0.000" not in md and "p=1.000" not in md
    assert "p n/a: no test was possible" in md


def test_corrupt_run_folders_are_listed_not_read_as_empty(tmp_path):
    fake_sweep(tmp_path, {"full": [(0.5, 0.9, 1000, 2, 2)] * 2, "lora": [(0.5, 0.8, 10, 1, 1)] * 2})
    text = (tmp_path / "lora-s1" / "result.json").read_text()
    (tmp_path / "lora-s1" / "result.json").write_text(text[:40])  # cut short
    (tmp_path / "full-s2" / "metrics.jsonl").write_text('{"epoch": 0, "accur')
    (tmp_path / "lora-s2" / "result.json").write_text(json.dumps({"status": "completed", "method": "lora"}))
    md = write_report(tmp_path)[0]
    failed = md.split("## Runs not completed")[1]
    assert "lora-s1: **unreadable** — " in failed and "lora-s1/result.json: corrupt or cut short" in failed
    assert "full-s2: **unreadable** — " in failed and "full-s2/metrics.jsonl: line 1 is corrupt" in failed
    assert "lora-s2/result.json: says completed but lacks metric_for_best" in failed
    s = summarize(tmp_path)
    assert [(g["group"], g["seeds"]) for g in s["groups"]] == [("full", 1)]  # only what could be read
    (tmp_path / "sweep.json").write_text("{")
    with pytest.raises(UserError, match=r"sweep.json: corrupt or cut short.*delete it to report every"):
        summarize(tmp_path)


def test_a_killed_writers_leftovers_are_tidied_and_a_moved_aside_folder_is_put_back(tmp_path):
    from peftlab.runs.rundir import clear_leftovers

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    (run / f".adapter.tmp-{dead.pid}").mkdir(parents=True)  # killed inside save_model
    (run / f".adapter.tmp-{dead.pid}" / "adapter_model.safetensors").write_bytes(b"half")
    (run / f".result.json.tmp-{dead.pid}").write_text('{"sta')  # killed inside write_text
    (run / f".model.old-{dead.pid}").mkdir()  # killed between replace_folder's two renames
    (run / f".model.old-{dead.pid}" / "weights").write_text("the only copy")
    (run / "adapter").mkdir()
    (run / f".adapter.old-{dead.pid}").mkdir()  # the new adapter is in place: the old one can go
    (run / f".metrics.jsonl.tmp-{os.getpid()}").write_text("a live writer's")
    (run / ".hidden-notes").write_text("not ours")
    done = clear_leftovers(run)
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [".hidden-notes", f".metrics.jsonl.tmp-{os.getpid()}", "adapter", "model"]
    )
    assert (run / "model" / "weights").read_text() == "the only copy"
    assert len(done) == 4 and f"restored model from .model.old-{dead.pid}" in done


def test_a_sweep_child_stops_when_its_sweep_dies_without_a_preexec_fn(tmp_path):
    """The child arms PR_SET_PDEATHSIG itself at start-up (peftlab.sweep.child), so the sweep's Popen needs
    no preexec_fn (unsafe while its reader threads run). Killing the parent must end the child."""
    from peftlab.sweep.child import PARENT_ENV

    child_code = (
        "import time; from peftlab.sweep.child import die_with_parent; die_with_parent(); "
        "print('armed', flush=True); time.sleep(120)"
    )
    parent_code = (
        f"import os, subprocess, sys, time; env = {{**os.environ, {PARENT_ENV!r}: str(os.getpid())}}; "
        f"c = subprocess.Popen([sys.executable, '-c', {child_code!r}], env=env, stdout=subprocess.PIPE, "
        f"text=True); print(c.pid, flush=True); c.stdout.readline(); print('ready', flush=True); "
        f"time.sleep(120)"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == "ready"
    parent.kill()
    parent.wait()
    deadline = time.time() + 20
    while time.time() < deadline:
        try:  # gone, or a zombie nobody reaped yet (in a container PID 1 may never reap it)
            if Path(f"/proc/{child_pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        os.kill(child_pid, signal.SIGKILL)
        pytest.fail("the child outlived its sweep")


def test_a_warm_started_child_that_is_not_needed_ends_having_written_nothing(tmp_path, base_config):
    from peftlab.sweep.child import WarmStart

    train = [sys.executable, "-m", "peftlab", "train", *base_config]
    warm = WarmStart()
    warm.start(train + ["run_name=ahead"], dict(os.environ))
    proc = warm.proc
    time.sleep(1)
    assert proc.poll() is None  # waiting for its turn
    assert warm.take(train + ["run_name=other"]) is None
    assert proc.returncode == 0 and warm.proc is None
    out_dir = Path(dict(kv.split("=", 1) for kv in base_config)["output_dir"])
    assert not (out_dir / "ahead").exists()


@pytest.mark.parametrize("fast", ["1", "0"])
def test_a_sweep_child_leaves_without_the_interpreter_teardown(fast):
    """`python -m peftlab` in a sweep skips the interpreter's teardown (atexit handlers never run),
    keeps its exit code and what it printed; PEFTLAB_FAST_EXIT=0 (and any non-sweep use) exits the usual way."""
    from peftlab.sweep.child import FAST_EXIT_ENV, PARENT_ENV

    code = (
        "import atexit, sys; from peftlab.sweep.child import die_with_parent, leave; die_with_parent(); "
        "atexit.register(lambda: print('teardown ran')); print('work done'); sys.stdout.write('unflushed'); leave(3)"
    )
    for in_sweep in (True, False):
        env = {**os.environ, FAST_EXIT_ENV: fast, **({PARENT_ENV: str(os.getpid())} if in_sweep else {})}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert done.returncode == 3 and done.stdout.startswith("work done\nunflushed")
        assert ("teardown ran" in done.stdout) == (not in_sweep or fast == "0")
