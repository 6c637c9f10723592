"""`make bench`: the same jobs run side by side by plain transformers, LLaMA-Factory and peftlab, one
process at a time (two torch jobs on a small machine slow each other 10-20x), with medians of
--repeats, min-max and the ratios, written to bench/results/bench.{json,md}.

    .venv/bin/python bench/run.py [--jobs a,b,c,d,e,f,scaling] [--repeats 3] [--skip-llamafactory] [--out DIR]

Jobs (issue 9):
  a  LoRA r=8 (q_proj, v_proj) SFT of smollm2-135m on the first 256 rows of alpaca_en_demo.json,
     cutoff 256, batch 8, 1 epoch: plain | llamafactory (defaults) | peftlab (defaults) | peftlab levers
  b  LoRA r=8 sequence classification of minilm-l6 on the first 2,000 SST-2 rows: plain | peftlab
  c  an LLM classifier (smollm2-135m, untuned) on 500 CoLA dev rows: generate + parse vs label scoring
  d  150 rows predicted one at a time (the users' predict.py) vs peftlab predict's batched path
  e  a 6-run sweep: the time from one run's end to the next run's first optimizer step
  f  time to a learned model: smollm2-135m to 0.80 SST-2 accuracy, rows 250 -> 2,000 until it gets there:
     plain (sequence-classification head) | llamafactory (SFT on the label word, its predict) | peftlab
  scaling  time and peak memory of a smollm2-135m training step against sequence length (128-1024)
     and LoRA rank (4-64), full fine-tuning beside them -> bench/results/scaling.png
Every leg is its own process; its peak RSS comes from the kernel (wait4's ru_maxrss of that child),
its wall time from the runner, its train tokens/s (non-padding), time to first step and final training
loss from the leg itself (peftlab's result.json; the bench's BenchTiming callback for the others).
LLaMA-Factory runs in its own virtualenv (bench/.venv-llamafactory, created here on first use from
bench/requirements-llamafactory.txt: ~8 GB, a few minutes); --skip-llamafactory leaves that leg out
and the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchlib import ROOT, matmul_peak, stats

from peftlab.data.catalog import package_path, resolve
from peftlab.hardware import cpu_has_fast_bf16, cpu_info

LEGS = ROOT / "bench" / "legs"
LF_VENV = ROOT / "bench" / ".venv-llamafactory"
PY = sys.executable
# named data sets (peftlab data list): $PEFTLAB_DATA_DIR/NAME/PATH, else the package's copy
ALPACA = "data:alpaca/llamafactory_demo/alpaca_en_demo.json"
SST2 = "data:sst2/train.tsv"
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"  # the model's own, no '.'
JOB_A = {
    "rows": 256,
    "max_length": 256,
    "batch_size": 8,
    "lr": 2e-4,
    "seed": 42,
    "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target": ["q_proj", "v_proj"]},
}
JOB_B = {
    "rows": 2000,
    "max_length": 64,
    "batch_size": 16,
    "lr": 5e-4,
    "seed": 42,
    "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "target": ["query", "value"]},
}


# ---------------------------------------------------------------- running one leg


def run_process(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run cmd to completion; its wall time and its own peak RSS (MiB, from wait4), or raise with its log's tail."""
    started = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={
                **os.environ,
                "HF_HUB_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1",
                # this checkout's peftlab and legs, whatever the venv has installed
                "PYTHONPATH": f"{ROOT / 'src'}:{LEGS}",
                **(env or {}),
            },
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed (exit {code}); the end of {log}:\n{tail}")
    return {"started": started, "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def train_figures(
    first_step_at: float | None, started: float, tokens: int, train_s: float, samples: int, loss: float | None
) -> dict:
    return {
        "time_to_first_step_s": first_step_at - started if first_step_at else None,
        "train_tokens": tokens,
        "train_time_s": train_s,
        "train_tokens_per_s": tokens / train_s if train_s else None,
        "samples_per_s": samples / train_s if train_s else None,
        "train_loss": loss,
    }


def read_bench_timing(path: Path, proc: dict, samples: int) -> dict:
    """A plain / LLaMA-Factory leg's figures (BenchTiming's JSON)."""
    t = json.loads(path.read_text())
    return {
        **proc,
        **train_figures(
            t["first_step_at"], proc["started"], t["train_tokens"], t["train_time_s"], samples, t["train_loss"]
        ),
    }


def read_peftlab_run(run: Path, proc: dict) -> dict:
    """A `peftlab train` leg's figures, from its result.json and metrics.jsonl."""
    r = json.loads((run / "result.json").read_text())
    last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    train_s = sum(x for x in r["epoch_times_s"] if x)
    return {
        **proc,
        **train_figures(
            r["timeline"]["first_step"],
            proc["started"],
            r["train_tokens"],
            train_s,
            r["n_train"] * r["epochs_run"],
            last.get("train_loss"),
        ),
        "precision": r.get("precision"),
        "lm_loss": r.get("lm_loss"),
        "total_params": r["total_params"],
        "trainable_params": r.get("trainable_params"),
    }


def leg_plain(job: dict, kind: str, scratch: Path) -> dict:
    spec = scratch / "job.json"
    spec.write_text(json.dumps({**job, "kind": kind, "scratch": str(scratch / "out")}))
    proc = run_process([PY, str(LEGS / "plain_train.py"), str(spec), str(scratch / "timing.json")], scratch / "log.txt")
    return read_bench_timing(scratch / "timing.json", proc, job["n_rows"])


def leg_llamafactory(job: dict, scratch: Path) -> dict:
    spec = scratch / "job.json"
    spec.write_text(json.dumps({**job, "default_system": SMOL_SYSTEM, "scratch": str(scratch / "out")}))
    proc = run_process(
        [str(LF_VENV / "bin" / "python"), str(LEGS / "llamafactory_train.py"), str(spec), str(scratch / "timing.json")],
        scratch / "log.txt",
        env={"DISABLE_VERSION_CHECK": "1", "PYTHONPATH": str(LEGS)},
    )  # no peftlab there
    return read_bench_timing(scratch / "timing.json", proc, job["n_rows"])


def leg_peftlab(args: list[str], scratch: Path) -> dict:
    proc = run_process(
        [PY, "-m", "peftlab", "train", *args, f"output_dir={scratch}", "run_name=r", "--overwrite"], scratch / "log.txt"
    )
    return read_peftlab_run(scratch / "r", proc)


def peftlab_sft_args(job: dict) -> list[str]:
    lora = job["lora"]
    return [
        f"model={job.get('peftlab_model', 'smollm2-135m')}",
        "task=sft",
        "method=lora",
        f"lora_rank={lora['r']}",
        f"lora_alpha={lora['alpha']}",
        f"lora_dropout={lora['dropout']}",
        f"lora_target={','.join(lora['target'])}",
        f"train_file={job['data']}",
        f"validation_file={job['data']}",
        "max_eval_samples=8",
        "max_eval_generate=1",
        "max_new_tokens=4",
        f"max_length={job['max_length']}",
        f"batch_size={job['batch_size']}",
        "epochs=1",
        f"lr={job['lr']}",
        f"seed={job['seed']}",
        "eval_at_start=false",
        "keep_checkpoints=false",
        "save_steps=100000",
    ]


def peftlab_cls_args(job: dict) -> list[str]:
    lora = job["lora"]
    return [
        f"model={job.get('peftlab_model', 'minilm-l6')}",
        "task=classification",
        "method=lora",
        f"lora_rank={lora['r']}",
        f"lora_alpha={lora['alpha']}",
        f"lora_dropout={lora['dropout']}",
        f"lora_target={','.join(lora['target'])}",
        f"train_file={job['data']}",
        f"validation_file={job['data']}",
        "max_eval_samples=16",
        "text_column=sentence",
        "label_column=label",
        f"max_length={job['max_length']}",
        f"batch_size={job['batch_size']}",
        "epochs=1",
        f"lr={job['lr']}",
        f"seed={job['seed']}",
        "eval_at_start=false",
        "save_steps=100000",
    ]


# ---------------------------------------------------------------- jobs


def first_rows_alpaca(n: int, folder: Path) -> Path:
    out = folder / f"alpaca_first{n}.json"
    out.write_text(json.dumps(json.loads(resolve(ALPACA, "bench").read_text())[:n], ensure_ascii=False))
    return out


def first_rows_sst2(n: int, folder: Path) -> Path:
    out = folder / f"sst2_first{n}.tsv"
    with open(resolve(SST2, "bench"), newline="") as f:
        lines = f.read().splitlines()
    out.write_text("\n".join(lines[: n + 1]) + "\n")
    return out


def model_folder(name: str) -> str:
    """A named model's local folder (smollm2-135m: its dequantized GGUF in peftlab's cache), for the other legs."""
    from peftlab.models.loading import resolve_model

    return resolve_model(name, "").path


def levers_a(bf16: bool) -> dict[str, list[str]]:
    """peftlab variants of job (a): its defaults, then each lever turned the other way."""
    legs = {
        "peftlab": [],
        "peftlab chunked_loss=false": ["chunked_loss=false"],
        # packing is on by default for SFT (packing: auto), each example attending to itself (models/attention.py)
        "peftlab packing=false": ["packing=false"],
        "peftlab group_by_length=true": ["group_by_length=true"],
        # LLaMA-Factory checkpoints activations by default (disable_gradient_checkpointing: false): the same trade
        "peftlab gradient_checkpointing=true": ["gradient_checkpointing=true"],
    }
    if bf16:
        legs["peftlab precision=bf16"] = ["precision=bf16"]
    return legs


def job_legs(name: str, scratch: Path, args) -> dict:
    """name -> a function(scratch folder) -> figures, for one job."""
    bf16 = cpu_has_fast_bf16()
    if name == "a":
        job = {
            **JOB_A,
            "rows": args.sft_rows,
            "n_rows": args.sft_rows,
            "model": model_folder("smollm2-135m"),
            "data": str(first_rows_alpaca(args.sft_rows, scratch)),
        }
        legs = {"plain": lambda d: leg_plain(job, "sft", d)}
        if not args.skip_llamafactory:
            legs["llamafactory"] = lambda d: leg_llamafactory(job, d)
        base = peftlab_sft_args(job)
        for leg, extra in levers_a(bf16).items():
            legs[leg] = lambda d, extra=extra: leg_peftlab(base + extra, d)
        return legs
    if name == "b":
        job = {
            **JOB_B,
            "rows": args.cls_rows,
            "n_rows": args.cls_rows,
            "model": model_folder("minilm-l6"),
            "data": str(first_rows_sst2(args.cls_rows, scratch)),
        }
        base = peftlab_cls_args(job)
        legs = {
            "plain": lambda d: leg_plain(job, "cls", d),
            "peftlab": lambda d: leg_peftlab(base, d),
            "peftlab group_by_length=true": lambda d: leg_peftlab(base + ["group_by_length=true"], d),
        }
        if bf16:
            legs["peftlab precision=bf16"] = lambda d: leg_peftlab(base + ["precision=bf16"], d)
        return legs
    if name == "c":
        n = [f"max_eval_samples={args.eval_rows}"]
        legs = {
            "generate + parse": lambda d: leg_eval(GENERATE, n + ["extra_eval_file=", "max_eval_generate=0"], d),
            "label scoring": lambda d: leg_eval(LIKELIHOOD, n, d),
        }
        if bf16:
            legs["label scoring precision=bf16"] = lambda d: leg_eval(LIKELIHOOD, n + ["precision=bf16"], d)
        return legs
    if name == "d":
        rows = args.predict_rows
        return {
            "one at a time (users' predict.py)": lambda d: leg_predict_one_by_one(rows, d),
            "peftlab predict: generate + parse": lambda d: leg_predict(GENERATE, rows, d),
            "peftlab predict: label scoring": lambda d: leg_predict(LIKELIHOOD, rows, d),
        }
    if name == "e":
        return {
            "peftlab sweep": leg_sweep_gaps,
            "peftlab sweep, runs exit the usual way": lambda d: leg_sweep_gaps(d, {"PEFTLAB_FAST_EXIT": "0"}),
            "peftlab sweep without start ahead": lambda d: leg_sweep_gaps(d, {"PEFTLAB_START_AHEAD": "0"}),
        }
    if name == "f":
        return {
            "plain (sequence-classification head)": lambda d: leg_time_to_model(ttm_plain_once, d),
            "peftlab (label likelihood)": lambda d: leg_time_to_model(ttm_peftlab_once, d),
            **(
                {}
                if args.skip_llamafactory
                else {"llamafactory (SFT on the label word, its predict)": lambda d: leg_time_to_model(ttm_lf_once, d)}
            ),
        }
    raise SystemExit(f"bench/run.py: no job {name!r}; jobs are a, b, c, d, e, f")


# ---------------------------------------------------------------- job (f): time to a learned model

SST2_SAMPLE = "pkg:peftlab/samples/sst2/train.tsv"  # 2,000 rows, shipped: job (f) runs on a fresh clone
SST2_SAMPLE_DEV = "pkg:peftlab/samples/sst2/dev.tsv"
TTM_TARGET = 0.80  # validation accuracy on the first TTM_EVAL dev sentences (majority class: about 0.5)
TTM_EVAL = 200
TTM_LADDER = (250, 500, 1000, 2000)  # training rows tried in turn until a model reaches the target
TTM_JOB = {"max_length": 64, "batch_size": 8, "lr": 5e-4, "seed": 42}
TTM_LORA = {"r": 8, "alpha": 16, "dropout": 0.05, "target": ["q_proj", "k_proj", "v_proj", "o_proj"]}
SST2_PROMPT = "Review: {text}\nQuestion: Is the sentiment of this review positive or negative?\nAnswer:"


def ttm_job(rows: int, scratch: Path, **extra) -> Path:
    """job.json of a plain or LLaMA-Factory leg of job (f), written into scratch."""
    job = {
        **TTM_JOB,
        "rows": rows,
        "model": model_folder("smollm2-135m"),
        "data": str(package_path(SST2_SAMPLE, "bench")),
        "eval_data": str(package_path(SST2_SAMPLE_DEV, "bench")),
        "eval_rows": TTM_EVAL,
        "lora": TTM_LORA,
        "scratch": str(scratch / "out"),
        **extra,
    }
    (scratch / "job.json").write_text(json.dumps(job))
    return scratch / "job.json"


def ttm_plain_once(rows: int, scratch: Path) -> tuple[dict, float]:
    """The usual way to classify with a decoder: transformers' sequence-classification head (last token) + LoRA."""
    ttm_job(rows, scratch, kind="cls")
    cmd = [PY, str(LEGS / "plain_train.py"), str(scratch / "job.json"), str(scratch / "t.json")]
    proc = run_process(cmd, scratch / "log.txt")
    return proc, json.loads((scratch / "t.json").read_text())["accuracy"]


def ttm_lf_once(rows: int, scratch: Path) -> tuple[dict, float]:
    """LLaMA-Factory's way (it has no classification head): SFT on the label word after the question, scored by
    its own predict, greedy (bench/legs/llamafactory_cls.py)."""
    ttm_job(
        rows,
        scratch,
        # its cutoff counts the chat template too (system prompt and turn markers, ~35 tokens): at 64, a tried
        # run cut most prompts before their question and answered 0.26 after 250 rows
        max_length=128,
        label_words=["negative", "positive"],
        prompt=SST2_PROMPT.removesuffix("\nAnswer:"),  # the chat template marks the answer's turn
    )
    cmd = [str(LF_VENV / "bin" / "python"), str(LEGS / "llamafactory_cls.py"), str(scratch / "job.json")]
    proc = run_process(
        [*cmd, str(scratch / "t.json")],
        scratch / "log.txt",
        env={"DISABLE_VERSION_CHECK": "1", "PYTHONPATH": str(LEGS)},
    )
    return proc, json.loads((scratch / "t.json").read_text())["accuracy"]


def ttm_peftlab_once(rows: int, scratch: Path) -> tuple[dict, float]:
    """peftlab's way: the label words' likelihood after a prompt (classify_by: likelihood), LoRA on the same layers."""
    args = [
        "model=smollm2-135m",
        "task=classification",
        "classify_by=likelihood",
        "label_words=negative,positive",
        f"prompt_template={SST2_PROMPT}",
        f"train_file={SST2_SAMPLE}",
        f"validation_file={SST2_SAMPLE_DEV}",
        "text_column=sentence",
        "label_column=label",
        f"max_samples={rows}",
        f"max_eval_samples={TTM_EVAL}",
        "eval_at_start=false",
        "method=lora",
        f"lora_rank={TTM_LORA['r']}",
        f"lora_alpha={TTM_LORA['alpha']}",
        f"lora_dropout={TTM_LORA['dropout']}",
        f"lora_target={','.join(TTM_LORA['target'])}",
        "epochs=1",
        *(f"{k}={TTM_JOB[k]}" for k in ("max_length", "batch_size", "lr", "seed")),
    ]
    proc = run_process(
        [PY, "-m", "peftlab", "train", *args, f"output_dir={scratch}", "run_name=r", "--overwrite"], scratch / "log.txt"
    )
    return proc, json.loads((scratch / "r" / "result.json").read_text())["metrics_best"]["accuracy"]


def leg_time_to_model(once, scratch: Path) -> dict:
    """Train on TTM_LADDER's row counts in turn until a model reaches TTM_TARGET: the wall time of the command that
    first did (what a user who knew the size would wait) and of the whole ladder (what one who did not would)."""
    ladder, spent = [], 0.0
    for rows in TTM_LADDER:
        folder = scratch / f"rows{rows}"
        folder.mkdir(parents=True, exist_ok=True)
        proc, accuracy = once(rows, folder)
        spent += proc["wall_s"]
        ladder.append({"rows": rows, "accuracy": accuracy, "wall_s": round(proc["wall_s"], 1)})
        if accuracy >= TTM_TARGET:
            return {**proc, "rows_needed": rows, "accuracy": accuracy, "ladder_wall_s": spent, "ladder": ladder}
    return {**proc, "rows_needed": None, "accuracy": accuracy, "ladder_wall_s": spent, "ladder": ladder}


COLA_DEV = "data:cola/in_domain_dev.tsv"
GENERATE = ROOT / "recipes" / "cola-smollm2-generate.yaml"
LIKELIHOOD = ROOT / "recipes" / "cola-smollm2-likelihood.yaml"


def leg_eval(recipe: Path, extra: list[str], scratch: Path) -> dict:
    """`peftlab eval` of a recipe's untuned model: scoring time, rows/s and scores from its result.json."""
    proc = run_process(
        [PY, "-m", "peftlab", "eval", str(recipe), *extra, "--out", str(scratch / "e"), "--overwrite"],
        scratch / "log.txt",
    )
    r = json.loads((scratch / "e" / "result.json").read_text())
    m = r["metrics_best"]
    return {
        **proc,
        "seconds": r["eval_wall_s"],
        "rows": r["n_evaluated"],
        "rows_per_s": r["examples_per_s"],
        "accuracy": m.get("accuracy"),
        "mcc": m.get("mcc"),
        "unparsed": m.get("unparsed"),
        "precision": "bf16" if "precision=bf16" in extra else "fp32",
    }


def gold_cola(rows: int) -> list[str]:
    with open(resolve(COLA_DEV, "bench")) as f:
        return [line.split("\t")[1] for line in f.read().splitlines()[:rows]]


def leg_predict(recipe: Path, rows: int, scratch: Path) -> dict:
    """`peftlab predict` (batched): the scoring seconds it prints, accuracy of result_bench.txt against CoLA's gold."""
    proc = run_process(
        [
            PY,
            "-m",
            "peftlab",
            "predict",
            str(recipe),
            str(COLA_DEV),
            "--limit",
            str(rows),
            "--name",
            "bench",
            "--out",
            str(scratch),
            "--overwrite",
        ],
        scratch / "log.txt",
    )
    line = next(l for l in (scratch / "log.txt").read_text().splitlines() if l.startswith("predicted"))
    seconds = float(line.split(" in ")[1].split(" s ")[0])
    got = (scratch / "result_bench.txt").read_text().splitlines()
    return {
        **proc,
        "seconds": seconds,
        "rows": rows,
        "rows_per_s": rows / seconds,
        "accuracy": sum(a == g for a, g in zip(got, gold_cola(rows))) / rows,
    }


def leg_predict_one_by_one(rows: int, scratch: Path) -> dict:
    import yaml

    recipe = yaml.safe_load(GENERATE.read_text())
    spec = scratch / "job.json"
    spec.write_text(
        json.dumps(
            {
                "model": model_folder("smollm2-135m"),
                "data": str(resolve(COLA_DEV, "bench")),
                "rows": rows,
                "instruction": recipe["task"]["instruction"],
                "label_words": recipe["task"]["label_words"],
                "max_new_tokens": recipe["eval"]["max_new_tokens"],
                "result": str(scratch / "result.txt"),
            }
        )
    )
    proc = run_process(
        [PY, str(LEGS / "predict_one_by_one.py"), str(spec), str(scratch / "out.json")], scratch / "log.txt"
    )
    t = json.loads((scratch / "out.json").read_text())
    return {
        **proc,
        "seconds": t["seconds"],
        "rows": rows,
        "rows_per_s": rows / t["seconds"],
        "accuracy": t["accuracy"],
        "unparsed": t["unparsed"],
    }


SWEEP_E = """name: bench-gaps
description: "bench/run.py job (e): six short runs, to time the gaps between them"
base: {recipe}
output_dir: {out}
config: {{max_samples: 64, max_eval_samples: 32, epochs: 1, eval_at_start: false}}
variants:
  - {{method: lora, lora_rank: 4}}
  - {{method: lora, lora_rank: 8}}
  - {{method: lora, lora_rank: 16}}
  - {{method: dora, lora_rank: 8}}
  - {{name: head, method: head, lr: 2.0e-3}}
  - {{name: full, method: full, lr: 5.0e-5}}
"""


def leg_sweep_gaps(scratch: Path, env: dict | None = None) -> dict:
    """A 6-run sweep; per pair of consecutive runs, the seconds from the one's end (result.json written)
    to the next one's first optimizer step, and the part of it before the next process started. `env`
    turns a lever off: PEFTLAB_START_AHEAD=0 (each run's process started at its turn), PEFTLAB_FAST_EXIT=0
    (each run's process goes through the interpreter's teardown)."""
    sweep = scratch / "sweep.yaml"
    sweep.write_text(SWEEP_E.format(recipe=ROOT / "recipes" / "sst2-minilm-lora.yaml", out=scratch / "runs"))
    proc = run_process([PY, "-m", "peftlab", "sweep", str(sweep)], scratch / "log.txt", env=env or {})
    order = json.loads((scratch / "runs" / "bench-gaps" / "sweep.json").read_text())["runs"]
    lines = [
        json.loads((scratch / "runs" / "bench-gaps" / r["name"] / "result.json").read_text())["timeline"] for r in order
    ]
    gaps = [b["first_step"] - a["finished"] for a, b in zip(lines, lines[1:])]
    spawn = [b["process_started"] - a["finished"] for a, b in zip(lines, lines[1:])]
    return {
        **proc,
        "gap_s": statistics.median(gaps),
        "gap_max_s": max(gaps),
        "spawn_s": statistics.median(spawn),
        "gaps": gaps,
    }


SEQS, RANKS = (128, 256, 512, 1024), (4, 8, 16, 32, 64)


def run_scaling(scratch: Path, out: Path) -> dict:
    """Time and peak memory against sequence length (LoRA r=8 and full fine-tuning) and LoRA rank (at 256
    tokens, full fine-tuning beside it): one process per point, median of 3 steps after a warm-up."""
    model = model_folder("smollm2-135m")
    points = (
        [(seq, "lora", 8) for seq in SEQS]
        + [(seq, "full", 0) for seq in SEQS]
        + [(256, "lora", r) for r in RANKS if r != 8]
    )
    rows = []
    for seq, method, rank in points:
        log = scratch / f"scaling-{seq}-{method}-{rank}.txt"
        proc = run_process(
            [PY, str(LEGS / "scaling_point.py"), model, str(seq), method, str(rank)],
            log,
        )
        row = {**json.loads(log.read_text().strip().splitlines()[-1]), "peak_rss_mb": proc["peak_rss_mb"]}
        rows.append(row)
        print(
            f"  scaling {method} r={rank} seq={seq}: {row['step_s']:.1f} s/step, {row['peak_rss_mb'] / 1024:.2f} GiB",
            flush=True,
        )
    plot_scaling(rows, out / "scaling.png")
    lines = [
        "| method | rank | tokens per row | s/step (batch 2) | tokens/s | peak RSS | trainable |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['method']} | {r['rank'] or '-'} | {r['seq']} | {r['step_s']:.2f} | {r['tokens_per_s']:.0f} | "
        f"{r['peak_rss_mb'] / 1024:.2f} GiB | {r['trainable_params']:,} |"
        for r in rows
    ]
    return {"rows": rows, "table": "\n".join(lines) + "\n"}


def plot_scaling(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for method, label in (("lora", "LoRA r=8"), ("full", "full fine-tuning")):
        pts = sorted(
            (r["seq"], r["step_s"], r["peak_rss_mb"] / 1024)
            for r in rows
            if r["method"] == method and (method == "full" or r["rank"] == 8)
        )
        axes[0][0].plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
        axes[1][0].plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=label)
    ranks = sorted(
        (r["rank"], r["step_s"], r["peak_rss_mb"] / 1024) for r in rows if r["method"] == "lora" and r["seq"] == 256
    )
    full = next((r for r in rows if r["method"] == "full" and r["seq"] == 256), None)
    axes[0][1].plot([p[0] for p in ranks], [p[1] for p in ranks], "o-", label="LoRA")
    axes[1][1].plot([p[0] for p in ranks], [p[2] for p in ranks], "o-", label="LoRA")
    if full:
        axes[0][1].axhline(full["step_s"], color="C1", ls="--", label="full fine-tuning")
        axes[1][1].axhline(full["peak_rss_mb"] / 1024, color="C1", ls="--", label="full fine-tuning")
    for ax, (x, y) in zip(
        axes.flat,
        [
            ("tokens per row", "s per step (batch 2)"),
            ("LoRA rank (256 tokens)", "s per step"),
            ("tokens per row", "peak RSS (GiB)"),
            ("LoRA rank (256 tokens)", "peak RSS (GiB)"),
        ],
    ):
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_xscale("log", base=2)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle("smollm2-135m training step: time and memory against length and rank (CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def measure(legs: dict, repeats: int, scratch: Path, job: str) -> dict:
    """Each leg `repeats` times, interleaved (leg 1, leg 2, ..., leg 1, ...) so drift hits all alike."""
    runs = {leg: [] for leg in legs}
    for i in range(repeats):
        for leg, fn in legs.items():
            folder = scratch / f"{job}-{len(runs[leg])}-{leg.replace(' ', '_').replace('=', '-')}"
            folder.mkdir(parents=True, exist_ok=True)
            runs[leg].append(fn(folder))
            r = runs[leg][-1]
            print(
                f"  {job} {leg} #{i + 1}: {r['wall_s']:.1f} s wall, {r['peak_rss_mb'] / 1024:.2f} GiB peak RSS"
                + "".join(f", {k} {r[k]:.2f}" for k in ("train_tokens_per_s", "rows_per_s", "gap_s") if r.get(k)),
                flush=True,
            )
    return {leg: summarize(r) for leg, r in runs.items()}


# columns per kind of job: header, key, digits, scale, unit
PEAK_RSS = ("peak RSS", "peak_rss_mb", 2, 1 / 1024, " GiB")
COLUMNS = {
    "train": [
        ("wall", "wall_s", 1, 1, " s"),
        ("to first step", "time_to_first_step_s", 1, 1, " s"),
        ("train tokens/s", "train_tokens_per_s", 0, 1, ""),
        ("samples/s", "samples_per_s", 1, 1, ""),
        PEAK_RSS,
        ("train loss", "train_loss", 4, 1, ""),
    ],
    "score": [
        ("wall", "wall_s", 1, 1, " s"),
        ("scoring", "seconds", 1, 1, " s"),
        ("rows/s", "rows_per_s", 1, 1, ""),
        ("accuracy", "accuracy", 3, 1, ""),
        ("MCC", "mcc", 3, 1, ""),
        ("unparsed", "unparsed", 0, 1, ""),
        PEAK_RSS,
    ],
    "ttm": [
        ("rows needed", "rows_needed", 0, 1, ""),
        ("accuracy reached", "accuracy", 3, 1, ""),
        ("wall of that run", "wall_s", 1, 1, " s"),
        ("wall of the ladder", "ladder_wall_s", 1, 1, " s"),
        PEAK_RSS,
    ],
    "gaps": [
        ("wall", "wall_s", 1, 1, " s"),
        ("median gap", "gap_s", 2, 1, " s"),
        ("largest gap", "gap_max_s", 2, 1, " s"),
        ("of it before the next process started", "spawn_s", 2, 1, " s"),
        PEAK_RSS,
    ],
}
KIND = {"a": "train", "b": "train", "c": "score", "d": "score", "e": "gaps", "f": "ttm"}
SUMMARY_KEYS = sorted({c[1] for cols in COLUMNS.values() for c in cols} | {"train_tokens"})


def summarize(runs: list[dict]) -> dict:
    out = {k: stats([r[k] for r in runs]) for k in SUMMARY_KEYS if all(r.get(k) is not None for r in runs)}
    for k in ("precision", "lm_loss", "total_params", "trainable_params", "ladder"):
        if runs[0].get(k):
            out[k] = runs[0][k]
    return out


# ---------------------------------------------------------------- the table


def fmt(s: dict | None, digits: int = 0, scale: float = 1.0, unit: str = "") -> str:
    if not s:
        return "-"
    return f"{s['median'] * scale:.{digits}f} ({s['min'] * scale:.{digits}f}-{s['max'] * scale:.{digits}f}){unit}"


def median(s: dict, key: str) -> float | None:
    return s[key]["median"] if key in s else None


JOB_MODEL = {"a": "smollm2-135m", "b": "minilm-l6"}


def matmul_params(name: str | None) -> int | None:
    """MFU's parameter count: the model's parameters less its embedding tables (a lookup is no matmul;
    Kaplan et al.'s 6 N per token counts non-embedding N). Tied to the embeddings, SmolLM2's LM head
    is left out too: with the answer-token loss it runs on the answers only."""
    if not name:
        return None
    from transformers import AutoModel

    return AutoModel.from_pretrained(model_folder(name)).num_parameters(exclude_embeddings=True)


def flops_per_token(params: int, trained: int) -> int:
    """Matmul FLOPs per token of one training step, counted honestly: 2 N forward and 2 N for the
    activations' gradients over every weight, and 2 N more only for the weights that are trained (their
    own gradients). Full fine-tuning: 6 N. LoRA: 4 N for the frozen base plus 6 N for the adapter's own
    matrices (the 6 N of Kaplan et al. counted for a frozen base overstates MFU by half)."""
    return 4 * params + 2 * trained


def mfu(s: dict, params: int, trained: int, peak_gflops: float | None) -> str:
    """`trained`: the job's trainable parameters (every train job here is LoRA, the same adapter in every
    leg; peftlab's legs record the count), the adapter's and head's matrices on top of the frozen N."""
    if not peak_gflops or not params or "train_tokens_per_s" not in s:
        return "-"
    flops = flops_per_token(params + trained, trained)
    return f"{100 * flops * s['train_tokens_per_s']['median'] / (peak_gflops * 1e9):.1f}%"


def table(result: dict) -> str:
    cpu = result["cpu"]
    peak = result["peak_gflops"]
    lines = [
        f"Measured {result['date']} on {cpu['cpu_model']} ({cpu['cpu_count']} cores; {', '.join(cpu['cpu_flags'])}), "
        f"torch threads {result['torch_threads']}; matmul peak fp32 {peak['fp32']:.0f} GFLOP/s"
        + (f", bf16 {peak['bf16']:.0f} GFLOP/s" if peak.get("bf16") else "")
        + f". Median of {result['repeats']} (min-max); one process at a time.",
        "",
    ]
    for job, j in result["jobs"].items():
        cols = COLUMNS[KIND[job]]
        train = KIND[job] == "train"
        head = ["leg"] + [c[0] for c in cols] + (["MFU"] if train else [])
        lines += [f"### ({job}) {j['title']}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for leg, s in j["legs"].items():
            cells = [leg] + [fmt(s.get(key), d, scale, unit) for _, key, d, scale, unit in cols]
            if train:
                trained = next((x["trainable_params"] for x in j["legs"].values() if x.get("trainable_params")), 0)
                job_peak = j.get("peak_gflops") or peak  # a job measured in a run of its own: that run's peak
                leg_peak = job_peak.get("bf16" if s.get("precision") == "bf16" else "fp32")
                cells.append(mfu(s, j["params"], trained, leg_peak))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines += [f"- {text}" for text in j.get("ratios", []) + j.get("notes", [])]
        lines.append("")
    if result.get("scaling"):
        lines += [
            "### Scaling: sequence length and LoRA rank against full fine-tuning (one process per point; scaling.png)",
            "",
            result["scaling"]["table"],
        ]
    return "\n".join(lines).rstrip() + "\n"


def ratios(job: str, legs: dict) -> list[str]:
    """The comparisons the issue sets targets for, as ratios of medians."""
    out = []
    if KIND[job] == "train":
        for leg, s in legs.items():
            for other in ("plain", "llamafactory"):
                if leg.startswith("peftlab") and other in legs:
                    o = legs[other]
                    t = median(s, "train_tokens_per_s") / median(o, "train_tokens_per_s")
                    m = median(s, "peak_rss_mb") / median(o, "peak_rss_mb")
                    loss = median(s, "train_loss") - median(o, "train_loss")
                    out.append(
                        f"{leg} vs {other}: **{t:.2f}x** train tokens/s, {m:.2f}x peak RSS, train loss {loss:+.4f}"
                    )
    elif job == "c" and "generate + parse" in legs:
        g = legs["generate + parse"]
        for leg, s in legs.items():
            if leg != "generate + parse":
                out.append(
                    f"{leg} vs generate + parse: **{median(g, 'seconds') / median(s, 'seconds'):.1f}x** faster, "
                    f"accuracy {median(s, 'accuracy'):.3f} vs {median(g, 'accuracy'):.3f}, "
                    f"MCC {median(s, 'mcc'):.3f} vs {median(g, 'mcc'):.3f}"
                )
    elif job == "d":
        one = legs.get("one at a time (users' predict.py)")
        for leg, s in legs.items():
            if one and leg.startswith("peftlab"):
                out.append(
                    f"{leg} vs one at a time: **{median(one, 'seconds') / median(s, 'seconds'):.1f}x** faster, "
                    f"accuracy {median(s, 'accuracy'):.3f} vs {median(one, 'accuracy'):.3f}"
                )
    elif job == "f":
        for leg, s in legs.items():
            ladder = s.get("ladder", [])
            steps = ", ".join(f"{x['rows']} rows {x['accuracy']:.3f} in {x['wall_s']:.0f} s" for x in ladder)
            out.append(f"{leg}: {steps}" + ("" if "rows_needed" in s else f" (never reached {TTM_TARGET})"))
        ours = legs.get("peftlab (label likelihood)")
        for name, other in legs.items():
            if other is ours or not ours or not ours.get("rows_needed") or not other.get("rows_needed"):
                continue
            out.append(
                f"peftlab vs {name.split(' (')[0]}: **{median(other, 'wall_s') / median(ours, 'wall_s'):.1f}x** less "
                f"wall time to a model at {TTM_TARGET} accuracy "
                f"({median(other, 'ladder_wall_s') / median(ours, 'ladder_wall_s'):.1f}x counting the ladder)"
            )
    elif job == "e":
        for leg, s in legs.items():
            out.append(
                f"{leg}: median **{median(s, 'gap_s'):.2f} s** from one run's end to the next run's first "
                f"optimizer step (target 3 s)"
            )
    return out


TITLES = {
    "a": "SFT, smollm2-135m, LoRA r=8 q_proj/v_proj, alpaca_en_demo first {sft_rows} rows, cutoff 256, batch 8, 1 "
    "epoch",
    "b": "sequence classification, minilm-l6, LoRA r=8, first {cls_rows} SST-2 rows, batch 16, 1 epoch",
    "c": "an untuned LLM classifier (smollm2-135m) on {eval_rows} CoLA dev rows: generate + parse vs label scoring",
    "d": "{predict_rows} CoLA dev rows predicted by smollm2-135m: one at a time vs peftlab predict (batched)",
    "e": "a sweep of 6 short minilm-l6 runs (64 rows, 1 epoch each): the gaps between runs",
    "f": "time to a learned model: smollm2-135m on SST-2 to 0.80 accuracy on 200 dev sentences, LoRA r=8 on "
    "attention, 1 epoch on 250, 500, 1,000, 2,000 training rows in turn until a model gets there",
}


def ensure_llamafactory_venv() -> None:
    """LLaMA-Factory's own virtualenv, made once from bench/requirements-llamafactory.txt."""
    stamp = LF_VENV / ".installed"
    req = ROOT / "bench" / "requirements-llamafactory.txt"
    if stamp.is_file() and stamp.read_text() == req.read_text():
        return
    print(f"bench: creating {LF_VENV} for the LLaMA-Factory leg (~8 GB, a few minutes, once)", flush=True)
    pip = [str(LF_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([sys.executable, "-m", "venv", str(LF_VENV)], check=True)
    subprocess.run(pip + ["--upgrade", "pip"], check=True, stderr=subprocess.DEVNULL)
    subprocess.run(pip + ["-r", str(req)], check=True, stderr=subprocess.DEVNULL)
    subprocess.run([str(LF_VENV / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", "torchvision"], check=True)
    stamp.write_text(req.read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", default="a,b,c,d,e,f,scaling")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sft-rows", type=int, default=256)
    ap.add_argument("--cls-rows", type=int, default=2000)
    ap.add_argument("--eval-rows", type=int, default=500)
    ap.add_argument("--predict-rows", type=int, default=150)
    ap.add_argument(
        "--table", metavar="BENCH_JSON", help="only print (and rewrite beside it) the table of a bench.json"
    )
    ap.add_argument(
        "--skip-llamafactory",
        action="store_true",
        help="leave out jobs (a) and (f)'s LLaMA-Factory legs (said in the table)",
    )
    ap.add_argument("--legs", default="", help="only these legs (comma list of the table's leg names); default all")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args(argv)
    if args.table:
        result = json.loads(Path(args.table).read_text())
        for job, entry in result["jobs"].items():
            entry["ratios"] = ratios(job, entry["legs"])
        Path(args.table).with_suffix(".md").write_text(table(result))
        print(table(result))
        return 0
    import torch

    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    if {"a", "f"} & set(jobs) and not args.skip_llamafactory:
        ensure_llamafactory_venv()
    bf16 = torch.cuda.is_available() or cpu_has_fast_bf16()
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_info(),
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "peak_gflops": {"fp32": matmul_peak("fp32"), **({"bf16": matmul_peak("bf16")} if bf16 else {})},
        "jobs": {},
    }
    scratch = Path(tempfile.mkdtemp(prefix="peftlab-bench-"))
    print(f"bench: scratch in {scratch}; one process at a time", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        if job == "scaling":
            result["scaling"] = run_scaling(scratch, out)
            continue
        legs = job_legs(job, scratch, args)
        if args.legs:
            legs = {k: v for k, v in legs.items() if k in args.legs.split(",")}
        print(f"bench: job ({job}): {', '.join(legs)}", flush=True)
        measured = measure(legs, args.repeats, scratch, job)
        params = matmul_params(JOB_MODEL.get(job))
        entry = {
            "title": TITLES[job].format(**vars(args)),
            "params": params,
            "legs": measured,
            "ratios": ratios(job, measured),
            "notes": [],
        }
        if job in ("a", "f") and args.skip_llamafactory:
            entry["notes"].append("the LLaMA-Factory leg was skipped (--skip-llamafactory)")
        if args.legs:
            entry["notes"].append(f"legs run: {args.legs} (--legs)")
        result["jobs"][job] = entry
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "bench.md").write_text(table(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
