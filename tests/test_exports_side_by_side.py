"""Exports of one run side by side: a sweep's merged, f16, q8_0 and q4_0 rows of one run (the loop recipe)
on `--workers 4` or Ray are four processes that each need the run's merged folder at once. They take
turns under the export folder's lock: the merged model is written once, each GGUF file is whole and
stays, and the evaluation of the merged folder counts none of the others' half-written files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_gguf

from peftlab.cli import main
from peftlab.runs import layout

ROOT = Path(__file__).resolve().parents[1]
COLA = test_gguf.COLA
smollm2_folder, tiny_llama_bpe = test_gguf.smollm2_folder, test_gguf.tiny_llama_bpe  # its fixtures, used here

# One exporter: imports what an export needs, says "ready", waits for the line that starts all four at
# once (as a sweep's pool starts its four evaluation processes), then asks for its export of the run.
EXPORTER = """
import sys
from peftlab.export import merge
import peftlab.export.gguf, peftlab.inference.session, peft, transformers  # loaded before the start

written = []
write_merged = merge.write_merged
merge.write_merged = lambda *a, **k: written.append(1) or write_merged(*a, **k)
print("ready", flush=True)
sys.stdin.readline()
path = merge.ensure_export(sys.argv[1], sys.argv[2])
print(f"exported {path} merged_written={len(written)}", flush=True)
"""
KINDS = ("merged", "f16", "q8_0", "q4_0")


# a LoRA run of a llama that llama.cpp's converter knows, on 16 CoLA sentences
SETTINGS = {
    "classify_by": "likelihood",
    "train_file": str(COLA / "in_domain_train.tsv"),
    "validation_file": str(COLA / "in_domain_dev.tsv"),
    "header": "false",
    "columns": ["source", "label", "mark", "sentence"],
    "text_column": "sentence",
    "label_words": ["no", "yes"],
    "max_samples": 16,
    "max_eval_samples": 8,
    "max_length": 48,
    "epochs": 1,
    "batch_size": 8,
    "method": "lora",
    "lora_rank": 4,
}


def trained_lora(tmp_path: Path, model) -> Path:
    args = [f"{k}={json.dumps(v)}" for k, v in SETTINGS.items()]
    assert main(["train", *args, f"model={model}", "run_name=lora", f"output_dir={tmp_path / 'sweep'}"]) == 0
    return tmp_path / "sweep" / "lora"


def test_four_exports_of_one_run_at_once_write_the_merged_model_once_and_lose_nothing(tiny_llama_bpe, tmp_path):
    from peftlab.inference.llamacpp import open_llama

    run_dir = trained_lora(tmp_path, tiny_llama_bpe)
    env = {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", EXPORTER, str(run_dir), kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        for kind in KINDS
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.communicate()[1][-3000:]
    for p in procs:  # all four ask at once
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(err[-2000:] for _, err in outs)
    lines = {kind: out.strip().splitlines()[-1] for kind, (out, _) in zip(KINDS, outs)}
    assert sum(int(line.rsplit("merged_written=", 1)[1]) for line in lines.values()) == 1, lines
    others = [out for out, _ in outs if "waiting for another export" in out]
    assert len(others) >= 1  # the ones that came while the merged model was written said why they waited

    merged = tmp_path / "sweep" / layout.EXPORTS / layout.merged_export("lora")
    paths = {kind: Path(line.split()[1]) for kind, line in lines.items()}
    assert paths == {"merged": merged, **{k: merged / layout.gguf_file(k) for k in KINDS[1:]}}
    note = json.loads((merged / layout.EXPORT_NOTE).read_text())
    assert note["run_finished_at"] == json.loads((run_dir / layout.RESULT).read_text())["finished_at"]
    assert (merged / "model.safetensors").is_file()
    for kind in KINDS[1:]:  # every file whole and still there, none replaced by another's merged folder
        assert paths[kind].read_bytes()[:4] == b"GGUF"
        open_llama(paths[kind], n_ctx=64)
    # nothing half-written or left over: no temporaries, no f16 intermediate, no lock file
    assert [p.name for p in merged.parent.iterdir()] == [merged.name]
    assert [p.name for p in merged.iterdir() if p.name.startswith(".")] == [layout.MARKER]  # only the mark


def test_the_merged_folders_size_counts_no_file_being_written_beside_it(base_config, tmp_path, capsys):
    """A GGUF file another export is writing into the merged folder (its temporary, or the f16 intermediate)
    is not part of the merged model: the evaluation's size_on_disk_mb is the same with it there or not."""
    assert main(["train", *base_config, "method=lora", "lora_rank=4", "run_name=r"]) == 0
    run_dir = tmp_path / "runs" / "r"
    assert main(["eval", str(run_dir), "--export", "merged", "--out", str(tmp_path / "alone")]) == 0
    merged = tmp_path / "runs" / layout.EXPORTS / layout.merged_export("r")
    # what a live export (this process) is writing there: a quantized file and the f16 it is made from
    half = layout.temporary(merged / layout.gguf_file("q8_0"))
    half.write_bytes(b"GGUF" + b"\0" * 3_000_000)
    layout.temporary(layout.temporary(merged / layout.gguf_file("f16"))).write_bytes(b"GGUF" + b"\0" * 2_000_000)
    assert main(["eval", str(run_dir), "--export", "merged", "--out", str(tmp_path / "beside")]) == 0
    sizes = [json.loads((tmp_path / d / layout.RESULT).read_text())["size_on_disk_mb"] for d in ("alone", "beside")]
    files = [f for f in merged.iterdir() if f.is_file() and not f.name.startswith(".")]
    assert sizes[0] == sizes[1] == pytest.approx(sum(f.stat().st_size for f in files) / 2**20, abs=1e-3)
    assert half.is_file()  # another writer's file: left alone


def test_a_sweeps_four_export_rows_of_one_run_on_four_workers(tiny_llama_bpe, tmp_path):
    """The loop recipe's shape as a user runs it: one LoRA run and its merged, f16, q8_0 and q4_0 rows,
    `--workers 4`, so the four evaluations start side by side once the run is done. Every row completes
    with its own export in the one merged folder, nothing is left over, and each row's size on disk is
    its own file's (the merged row's: the merged model's files alone)."""
    import yaml

    variants = [{"name": "lora"}] + [{"name": f"lora-{k}", "of": "lora", "export": k} for k in KINDS]
    sweep = tmp_path / "four.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "four",
                "output_dir": str(tmp_path / "sweeps"),
                "config": {**SETTINGS, "model": str(tiny_llama_bpe)},
                "variants": variants,
            },
            sort_keys=False,
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "peftlab", "sweep", str(sweep), "--workers", "4"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = tmp_path / "sweeps" / "four"
    state = json.loads((folder / layout.SWEEP_STATE).read_text())
    assert [r["status"] for r in state["runs"]] == ["completed"] * 5
    merged = folder / layout.EXPORTS / layout.merged_export("lora")
    assert [p.name for p in merged.parent.iterdir()] == [merged.name]  # one export folder, nothing left over
    assert sorted(p.name for p in merged.glob("*.gguf")) == sorted(layout.gguf_file(k) for k in KINDS[1:])
    results = {k: json.loads((folder / f"lora-{k}" / layout.RESULT).read_text()) for k in KINDS}
    for kind in KINDS[1:]:
        assert results[kind]["source"]["backend"] == "llamacpp", kind
        assert results[kind]["size_on_disk_mb"] == pytest.approx(
            (merged / layout.gguf_file(kind)).stat().st_size / 2**20, abs=1e-3
        )
    files = [f for f in merged.iterdir() if f.is_file() and f.suffix != ".gguf"]
    assert results["merged"]["size_on_disk_mb"] == pytest.approx(sum(f.stat().st_size for f in files) / 2**20, abs=1e-3)


def test_an_export_with_a_bad_out_is_refused_in_one_line_and_leaves_nothing(base_config, tmp_path, capsys):
    assert main(["train", *base_config, "method=lora", "lora_rank=4", "run_name=r"]) == 0
    run_dir = tmp_path / "runs" / "r"
    before = sorted(p.name for p in run_dir.parent.iterdir())
    capsys.readouterr()
    assert main(["export", str(run_dir), "--merge", "--out", "/", "--overwrite"]) == 2
    assert "--out /: a file system root; give the path of the folder to write" in capsys.readouterr().err
    taken = tmp_path / "taken"
    taken.mkdir()
    assert main(["export", str(run_dir), "--merge", "--out", str(taken)]) == 2
    assert f"{taken} already exists; pass --overwrite" in capsys.readouterr().err
    # no llama.cpp (`make demo` does not compile it): refused before the merge, naming `make gguf`
    import sys

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "llama_cpp", None)
        assert main(["export", str(run_dir), "--gguf", "q8_0", "--out", str(tmp_path / "q")]) == 2
        assert "llama-cpp-python is not installed; `make gguf` compiles it" in capsys.readouterr().err
        mp.setenv("PEFTLAB_LLAMACPP_TOOLS", str(tmp_path / "nowhere"))
        assert main(["export", str(run_dir), "--gguf", "f16", "--out", str(tmp_path / "q")]) == 2
        assert "`make gguf` puts it there" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
    # --overwrite replaces an export peftlab wrote, never the user's own folder
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(["export", str(run_dir), "--merge", "--out", str(mine), "--overwrite"]) == 2
    assert "is not a run, evaluation or export folder written by peftlab" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "mine"
    for _ in range(2):  # the second replaces the first: it is marked as peftlab's
        assert main(["export", str(run_dir), "--adapter-only", "--out", str(tmp_path / "ad"), "--overwrite"]) == 0
    assert (tmp_path / "ad" / ".peftlab").is_file() and (tmp_path / "ad" / "peftlab.json").is_file()
    assert sorted(p.name for p in run_dir.parent.iterdir()) == before  # no export, no lock file beside the run
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
