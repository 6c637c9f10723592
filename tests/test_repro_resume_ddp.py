"""Same seed -> same metrics; SIGKILL mid-epoch + --resume -> same final metrics; 2-process DDP (gloo) through
torchrun and accelerate launch; an FSDP or DeepSpeed launch without a GPU refused."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import FILL, NEG, POS
from safetensors.torch import load_file

from peftlab.config.settings import load_config
from peftlab.training.train import run

TIMING = {"eval_time_s", "train_time_s", "epoch_wall_s", "partial_epoch_time"}
ROOT = Path(__file__).resolve().parents[1]


def metric_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in l.items() if k not in TIMING} for l in lines]


def test_same_seed_same_metrics(base_config, tmp_path):
    results = []
    for name in ("a", "b"):
        cfg = load_config(None, base_config + ["epochs=2", f"run_name={name}"])
        results.append(run(cfg))
    out = Path(cfg.train.output_dir)
    assert metric_lines(out / "a") == metric_lines(out / "b")
    assert results[0]["metrics_best"]["loss"] == results[1]["metrics_best"]["loss"]
    cfg = load_config(None, base_config + ["epochs=2", "run_name=c", "seed=7"])
    assert metric_lines(out / "a") != metric_lines(Path(cfg.train.output_dir) / run(cfg)["run_name"])


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from peftlab.training import callbacks as trainer_callbacks
    armed = False
    step_end = trainer_callbacks.Recorder.on_step_end
    def on_step_end(self, args, state, control, **kw):
        global armed
        step_end(self, args, state, control, **kw)
        armed = armed or state.global_step >= int(os.environ["KILL_FROM_STEP"])
    trainer_callbacks.Recorder.on_step_end = on_step_end
    real_replace = os.replace
    def replace(src, dst, *args, **kw):  # peftlab's atomic writes end in os.replace (runs/rundir.py)
        name, when = os.environ["KILL_AT_RENAME"].split(":")
        hit = armed and Path(dst if when == "into" else src).name == name
        if hit and when == "into":  # the temporary is written whole, the rename never happens
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no atexit: as if the machine died
        real_replace(src, dst, *args, **kw)
        if hit:  # "from": the old folder is moved aside, the new one not yet in its place
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
    from peftlab.cli import main
    sys.exit(main(sys.argv[1:]))
""")

# Where the run is killed: (from step, the rename it dies in, what it must leave, the latest checkpoint).
# 96 rows / batch 16 = 6 steps per epoch; the loss is logged every 2 steps, checkpoints every 2 steps
# and at epoch ends; the best weights are saved at epoch 0 and when an epoch lowers the loss.
KILLS = {
    # mid-epoch 2, writing train_log.jsonl at step 10's log (before step 10's checkpoint)
    "mid-write": (9, "train_log.jsonl:into", "removed .train_log.jsonl.tmp-{pid}", "checkpoint-8"),
    # epoch 1's better weights: adapter/ moved aside, the new copy not yet renamed into place. Step 6 ends
    # epoch 1 and is a multiple of save_steps, but its checkpoint waits for the evaluation: resumed from
    # checkpoint-6, epoch 1 would never be evaluated (metrics.jsonl went from epoch 0 to 2)
    "mid-replace": (1, "adapter:from", "restored adapter from .adapter.old-{pid}", "checkpoint-4"),
}


def temporaries(folder: Path) -> list[str]:
    """Every name under folder made by the one temporary naming rule (layout.temporary)."""
    from peftlab.runs import layout

    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if layout.parse_temporary(p.name))


def test_sigkill_mid_write_then_resume_tidies_up_and_matches_uninterrupted(base_config, tmp_path, capsys):
    """SIGKILLed inside a write (a temporary file left) and inside a folder replace (the old copy moved
    aside): each leftover is there after the kill, the resumed run names what it tidied, leaves no
    temporary behind, and ends with the uninterrupted run's numbers."""
    # mean pooling: with the tiny BERT's [CLS] pooler no epoch lowers the loss, so no weights get replaced
    common = base_config + ["epochs=2", "save_steps=2", "lora_dropout=0.1", "metric_for_best=loss", "pooling=mean"]
    reference = run(load_config(None, common + ["run_name=ref"]))
    assert reference["best_epoch"] > 0  # an epoch lowers the loss: the best weights are replaced once at least
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    for kill, (step, rename, tidied, checkpoint) in KILLS.items():
        args = [sys.executable, str(script), "train"] + common + [f"run_name={kill}"]
        env = {**os.environ, "KILL_FROM_STEP": str(step), "KILL_AT_RENAME": rename}
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        err = proc.communicate(timeout=600)[1]
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
        run_dir = Path(tmp_path / "runs" / kill)
        assert json.loads((run_dir / "result.json").read_text())["status"] == "running"
        last = max((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        assert last.name == checkpoint, kill
        left = tidied.split(" ")[-1].format(pid=proc.pid)
        assert left in temporaries(run_dir), (kill, temporaries(run_dir))  # the kill did leave it
        if kill == "mid-replace":
            assert not (run_dir / "adapter").exists()  # the moved-aside copy is the only one
        capsys.readouterr()
        resumed = run(load_config(None, common + [f"run_name={kill}"]), resume=True)
        assert f"{kill}: {tidied.format(pid=proc.pid)} (left by a stopped earlier attempt)" in capsys.readouterr().out
        assert temporaries(run_dir) == [], kill
        assert resumed["status"] == "completed" and resumed["resumed"]
        assert metric_lines(run_dir) == metric_lines(tmp_path / "runs" / "ref"), kill
        assert resumed["metrics_last"]["loss"] == reference["metrics_last"]["loss"]
        assert not (run_dir / "checkpoints").exists()


def test_resume_passes_over_a_checkpoint_whose_epoch_was_not_evaluated(tmp_path):
    """A folder from a peftlab that checkpointed an epoch's last step before evaluating it: resuming
    from that checkpoint would skip the epoch's evaluation, so the one before it is taken (or none)."""
    from peftlab.training.train import last_checkpoint

    ckpts = tmp_path / "checkpoints"
    for step, epoch in ((4, 0.667), (6, 1.0)):
        (ckpts / f"checkpoint-{step}").mkdir(parents=True)
        (ckpts / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"epoch": epoch}))
    (ckpts / "checkpoint-8").mkdir()  # killed while it was written: no trainer_state.json
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"epoch": 0, "step": 0}) + "\n")
    assert last_checkpoint(tmp_path).name == "checkpoint-4"  # epoch 1 ended at step 6, never evaluated
    metrics.write_text(json.dumps({"epoch": 0, "step": 0}) + "\n" + json.dumps({"epoch": 1, "step": 6}) + "\n")
    assert last_checkpoint(tmp_path).name == "checkpoint-6"
    (ckpts / "checkpoint-8" / "trainer_state.json").write_text('{"epoch": 1.3')  # cut short
    assert last_checkpoint(tmp_path).name == "checkpoint-6"
    metrics.write_text("")
    assert last_checkpoint(tmp_path).name == "checkpoint-4"


# Two CPU processes the ways docs/guide.md shows: torchrun, and accelerate launch --multi_gpu (without
# --multi_gpu, or with a config, on a machine without GPUs accelerate starts one process whatever --num_processes says)
LAUNCHERS = {
    "torchrun": ["torch.distributed.run", "--standalone", "--nproc_per_node=2"],  # a port the OS gives
    "accelerate": ["accelerate.commands.launch", "--multi_gpu", "--num_processes=2", "--main_process_port=0"],
}


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_two_process_ddp_matches_single_process(launcher, tiny_llama, base_config, tmp_path):
    """gloo on CPU, same global batch (16 = 2 x 8). Only rank 0 writes the run folder.

    The processes must exchange gradients: every epoch's figures and the saved weights equal the single
    process's up to float summation order (measured: loss within 1.2e-7, weights within 5e-8). Two copies
    trained apart on their halves of each batch, which is what ran while the epoch-0 evaluation left the
    model marked prepared and unwrapped (and, on CPU, accelerate's distributed type was NO), missed by
    3e-4 in the last loss, 1.2e-3 and 0.09 accuracy at epoch 1, and 0.033 in the weights."""
    common = base_config + [f"model={tiny_llama}", "method=lora", "lora_dropout=0", "epochs=2"]
    single = run(load_config(None, common + ["batch_size=16", "run_name=single"]))
    cmd = (
        [sys.executable, "-m", *LAUNCHERS[launcher], "-m", "peftlab", "train"]
        + common
        + ["batch_size=8", "run_name=ddp"]
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "runs" / "ddp" / "result.json").read_text())
    assert ddp["status"] == "completed" and ddp["world_size"] == 2
    assert ddp["n_train"] == single["n_train"] and ddp["epochs_run"] == single["epochs_run"]
    a, b = metric_lines(tmp_path / "runs" / "ddp"), metric_lines(tmp_path / "runs" / "single")
    assert [l["step"] for l in a] == [l["step"] for l in b]  # same number of optimizer steps: same global batch
    for mine, theirs in zip(a, b):
        assert mine["loss"] == pytest.approx(theirs["loss"], abs=1e-5) and mine["accuracy"] == theirs["accuracy"]
    assert a[-1]["loss"] < a[0]["loss"]  # it learned
    weights = [load_file(tmp_path / "runs" / r / "adapter" / "adapter_model.safetensors") for r in ("ddp", "single")]
    assert max((weights[0][k] - weights[1][k]).abs().max().item() for k in weights[1]) < 1e-5
    assert len(list((tmp_path / "runs").iterdir())) == 2  # single + ddp, no per-rank folders
    assert proc.stdout.count("run folder:") == 1  # the summary comes from rank 0 alone


NO_SHARDING = "on a machine without a CUDA GPU"


@pytest.mark.skipif(torch.cuda.is_available(), reason="refused only where no CUDA GPU is")
def test_fsdp_launch_without_a_gpu_stops_at_once_with_the_ddp_commands(base_config, tmp_path):
    """examples/accelerate/fsdp-cpu.yaml through a real `accelerate launch` (2 processes): on CPU accelerate drops
    every FSDP setting (the processes trained as DDP, nothing sharded), so peftlab stops before reading anything,
    exit 2, saying why and what to run instead; no run folder."""
    config = ROOT / "examples" / "accelerate" / "fsdp-cpu.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "-m", "peftlab", "train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd + base_config + ["batch_size=8"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode != 0
    assert "exitcode  : 2" in proc.stderr  # torchrun's report of the first process to stop: peftlab's UserError
    assert f"with FSDP in its config (ACCELERATE_USE_FSDP=true) {NO_SHARDING}" in proc.stderr, proc.stderr[-3000:]
    assert "torchrun --nproc_per_node N -m peftlab train" in proc.stderr and "--multi_gpu" in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="refused only where no CUDA GPU is")
def test_deepspeed_launch_without_a_gpu_is_refused(base_config, tmp_path, monkeypatch, capsys):
    """DeepSpeed is not installed here, so `accelerate launch` itself refuses its config; where it is, the
    environment it sets reaches peftlab, whose CPU processes run as DDP: refused like FSDP."""
    from peftlab.cli import main

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert main(["train"] + base_config) == 2
    assert f"with DeepSpeed in its config (ACCELERATE_USE_DEEPSPEED=true) {NO_SHARDING}" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_gradient_accumulation_matches_the_larger_batch(tiny_llama, base_config, tmp_path):
    """batch 8 x 2 accumulation steps == batch 16: same examples per optimizer step, same update.
    Plain SGD so the size of the gradient shows (Adam would hide a wrong scale)."""
    common = base_config + [
        f"model={tiny_llama}",
        "method=lora",
        "lora_dropout=0",
        "epochs=1",
        "optim=sgd",
        "lr=0.5",
        "max_grad_norm=0",
    ]
    big = run(load_config(None, common + ["batch_size=16", "run_name=b16"]))
    accum = run(load_config(None, common + ["batch_size=8", "grad_accum=2", "run_name=b8x2"]))
    assert big["metrics_last"]["step"] == accum["metrics_last"]["step"] == 6
    assert accum["metrics_last"]["loss"] == pytest.approx(big["metrics_last"]["loss"], abs=1e-4)
    assert big["metrics_last"]["loss"] != pytest.approx(big["metrics_epoch0"]["loss"], abs=1e-3)  # it moved


GENERATION_RECORDER = textwrap.dedent("""
    import json, os, sys
    from peftlab.tasks import sft
    generate_texts = sft.generate_texts
    def recorded(model, tokenizer, prompts, *args, **kw):  # the rows this rank generates, per evaluation
        with open(os.path.join(os.environ["GENERATED_LOG"], f"rank{os.environ['RANK']}.jsonl"), "a") as f:
            f.write(json.dumps([tokenizer.decode(p) for p in prompts]) + "\\n")
        return generate_texts(model, tokenizer, prompts, *args, **kw)
    sft.generate_texts = recorded
    from peftlab.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_generation_under_ddp_is_split_between_ranks_not_repeated(tiny_llama, base_config, tmp_path):
    """A real 2-process SFT run: at every evaluation rank 0 generates rows 0, 2, 4, ... and rank 1 rows
    1, 3, ...; the predictions file (rank 0) holds every row once, in order, gathered from both."""
    rng = random.Random(3)
    rows = [
        {"instruction": " ".join(rng.sample(FILL, 3) + [w]), "input": "", "output": f"{w} ."}
        for w in (rng.choice(POS + NEG) for _ in range(25))
    ]
    (tmp_path / "tr.json").write_text(json.dumps(rows[:16]))
    (tmp_path / "dv.json").write_text(json.dumps(rows[16:]))  # 9 rows: 5 for rank 0, 4 for rank 1
    script, log = tmp_path / "recorder.py", tmp_path / "generated"
    script.write_text(GENERATION_RECORDER)
    log.mkdir()
    overrides = [a for a in base_config if not a.startswith(("train_file=", "validation_file="))] + [
        f"model={tiny_llama}",
        "task=sft",
        f"train_file={tmp_path / 'tr.json'}",
        f"validation_file={tmp_path / 'dv.json'}",
        "method=lora",
        "lora_rank=4",
        "max_length=32",
        "max_new_tokens=3",
        "batch_size=8",
        "eval_batch_size=2",
        "run_name=ddp",
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), "train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENERATED_LOG": str(log)}
    proc = subprocess.run(cmd + overrides, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "ddp"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["world_size"] == 2
    predicted = [json.loads(l) for l in (run_dir / "predictions_validation.jsonl").read_text().splitlines()]
    assert [p["reference"] for p in predicted] == [r["output"] for r in rows[16:]]
    prompts = [p["prompt"] for p in predicted]
    done = {r: [json.loads(l) for l in (log / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)}
    assert len(done[0]) == len(done[1]) >= 2  # epoch 0 and epoch 1 at least, each on both ranks
    for mine, theirs in zip(done[0], done[1]):
        assert mine == prompts[0::2] and theirs == prompts[1::2]  # a share each, none twice, none left out
