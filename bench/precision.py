"""fp32 vs bf16 autocast training through `peftlab train`, side by side in one run, one process at a time.

    .venv/bin/python bench/precision.py [--cls-rows 2000] [--sft-rows 256] [--repeats 3] [--jobs cls,sft]

Jobs (issue 9's (a) and (b)):
  sft  LoRA r=8 on q_proj,v_proj, SFT of smollm2-135m on the first --sft-rows rows of
       alpaca/llamafactory_demo/alpaca_en_demo.json, cutoff 256, batch 8, 1 epoch;
  cls  LoRA r=8 sequence classification of minilm-l6 on the first --cls-rows SST-2 training rows
       (300 dev rows scored), 1 epoch.
Each job runs fp32 and precision=bf16 alternately (fp32, bf16, fp32, ...) so drift hits both; figures
are medians of --repeats (min-max beside them), ratios are of medians. The bench also measures this
machine's own matmul peak (2048x2048, fp32 and bf16) and reports model FLOPs utilisation as
6 x parameters x train tokens/s against it — the usual approximation (forward 2N, backward 4N per
token); a LoRA backward skips the frozen weights' gradients, so the true figure is somewhat lower.
bf16 needs a CPU with AVX512-BF16/AMX or a GPU; elsewhere peftlab refuses it and the bench says so.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchlib import ROOT, stats

from peftlab.hardware import cpu_has_fast_bf16, cpu_info

SHARED = ROOT.parent / "shared" / "datasets"

JOBS = {
    "sft": lambda rows: ["model=smollm2-135m", "task=sft", "method=lora", "lora_rank=8", "lora_target=q_proj,v_proj",
                         f"train_file={SHARED / 'alpaca' / 'llamafactory_demo' / 'alpaca_en_demo.json'}",
                         f"max_samples={rows}", "max_eval_samples=8", "max_eval_generate=2", "max_new_tokens=8",
                         "max_length=256", "batch_size=8", "epochs=1", "eval_at_start=false"],
    "cls": lambda rows: [str(ROOT / "recipes" / "sst2-minilm-lora.yaml"), f"train_file={SHARED / 'sst2' / 'train.tsv'}",
                         f"validation_file={SHARED / 'sst2' / 'dev.tsv'}", f"max_samples={rows}",
                         "max_eval_samples=300", "epochs=1", "eval_at_start=false"],
}


def matmul_peak(dtype_name: str, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n matmul on this machine (median of repeats), all torch threads."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def train_once(job: str, rows: int, precision: str, folder: Path) -> dict:
    subprocess.run([sys.executable, "-m", "peftlab", "train", *JOBS[job](rows), f"precision={precision}",
                    f"output_dir={folder}", "run_name=r", "--overwrite"], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = json.loads((folder / "r" / "result.json").read_text())
    last = [json.loads(line) for line in (folder / "r" / "metrics.jsonl").read_text().splitlines()][-1]
    return {"time_per_epoch_s": result["time_per_epoch_s"], "train_tokens_per_s": result["train_tokens_per_s"],
            "peak_memory_mb": result["peak_memory_mb"], "train_loss": last.get("train_loss"),
            "eval_loss": last.get("loss"), "accuracy": last.get("accuracy"), "total_params": result["total_params"],
            "precision": result.get("precision")}


def summarize(runs: list[dict]) -> dict:
    out = {}
    for key in ("time_per_epoch_s", "train_tokens_per_s", "peak_memory_mb", "train_loss", "eval_loss", "accuracy"):
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            out[key] = stats(values)
    out["total_params"] = runs[0]["total_params"]
    return out


def table(result: dict) -> str:
    """The markdown table: one row per job x precision, then the bf16/fp32 ratios."""
    cpu = result["cpu"]
    lines = [f"{result['date']}, {cpu['cpu_model']} ({cpu['cpu_count']} cores; {', '.join(cpu['cpu_flags'])}); "
             f"matmul peak fp32 {result['peak_gflops']['fp32']:.0f} GFLOP/s"
             + (f", bf16 {result['peak_gflops']['bf16']:.0f} GFLOP/s" if "bf16" in result["peak_gflops"] else "")
             + f"; median of {result['repeats']} (min-max)", "",
             "| job | precision | time/epoch | train tokens/s | peak RSS | train loss | eval loss | accuracy | MFU |",
             "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda s, d=2: f"{s['median']:.{d}f} ({s['min']:.{d}f}-{s['max']:.{d}f})"  # noqa: E731
    for job, variants in result["jobs"].items():
        for precision, s in variants.items():
            peak = result["peak_gflops"].get(precision)
            mfu = 6 * s["total_params"] * s["train_tokens_per_s"]["median"] / (peak * 1e9) if peak else None
            lines.append(f"| {job} ({result['rows'][job]} rows) | {precision} | {fmt(s['time_per_epoch_s'], 1)} s | "
                         f"{fmt(s['train_tokens_per_s'], 0)} | {s['peak_memory_mb']['median'] / 1024:.2f} GiB | "
                         f"{fmt(s['train_loss'], 4) if 'train_loss' in s else '-'} | "
                         f"{fmt(s['eval_loss'], 4) if 'eval_loss' in s else '-'} | "
                         f"{fmt(s['accuracy'], 3) if 'accuracy' in s else '-'} | "
                         f"{'-' if mfu is None else f'{100 * mfu:.1f}%'} |")
    lines.append("")
    for job, r in result["ratios"].items():
        lines.append(f"- {job}: bf16 trains **{r['tokens_per_s']:.2f}x** the tokens/s of fp32, peak RSS "
                     f"{r['peak_memory']:.2f}x")
    if result.get("bf16_skipped"):
        lines.append(f"- bf16 not run: {result['bf16_skipped']}")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cls-rows", type=int, default=2000)
    ap.add_argument("--sft-rows", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", default="cls,sft")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    import torch

    gpu = torch.cuda.is_available()
    precisions = ["fp32"] + (["bf16"] if gpu or cpu_has_fast_bf16() else [])
    rows = {"cls": args.cls_rows, "sft": args.sft_rows}
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_info(),
              "torch_threads": torch.get_num_threads(), "gpu": torch.cuda.get_device_name() if gpu else None,
              "repeats": args.repeats, "rows": {j: rows[j] for j in jobs},
              "peak_gflops": {p: matmul_peak(p) for p in precisions}, "jobs": {}, "ratios": {},
              "bf16_skipped": "" if "bf16" in precisions else "this CPU has neither AVX512-BF16 nor AMX"}
    tmp = Path(tempfile.mkdtemp(prefix="peftlab-bench-precision-"))
    for job in jobs:
        runs = {p: [] for p in precisions}
        for i in range(args.repeats):
            for p in precisions:
                runs[p].append(train_once(job, rows[job], p, tmp / f"{job}-{p}-{i}"))
                print(f"{job} {p} #{i + 1}: {runs[p][-1]['time_per_epoch_s']:.1f} s/epoch", flush=True)
        result["jobs"][job] = {p: summarize(r) for p, r in runs.items()}
        if "bf16" in runs:
            s = result["jobs"][job]
            result["ratios"][job] = {
                "tokens_per_s": s["bf16"]["train_tokens_per_s"]["median"] / s["fp32"]["train_tokens_per_s"]["median"],
                "peak_memory": s["bf16"]["peak_memory_mb"]["median"] / s["fp32"]["peak_memory_mb"]["median"]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "precision.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "precision.md").write_text(table(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
