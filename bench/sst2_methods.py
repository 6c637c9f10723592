"""Compare full / head / lora r=8 / dora r=8 on SST-2 with minilm-l6, one run at a time.

    .venv/bin/python bench/sst2_methods.py [--max-samples 4000] [--epochs 2] [--out runs/bench-sst2]

Each run is its own `peftlab train` process (clean peak-memory figures; runs never overlap, so
timings are not distorted by each other). Prints a markdown table from the runs' result.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "sst2-minilm-lora.yaml"
# Learning rates per method: full fine-tuning wants a small one, adapters and heads larger ones.
VARIANTS = {
    "full": ["method=full", "lr=5e-5"],
    "head": ["method=head", "lr=2e-3"],
    "lora-r8": ["method=lora", "lora_rank=8", "lr=5e-4"],
    "dora-r8": ["method=dora", "lora_rank=8", "lr=5e-4"],
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-samples", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default="runs/bench-sst2")
    ap.add_argument("--only", nargs="*", default=list(VARIANTS))
    args = ap.parse_args()
    for name in args.only:
        cmd = [
            sys.executable,
            "-m",
            "peftlab",
            "train",
            str(RECIPE),
            *VARIANTS[name],
            f"run_name={name}",
            f"output_dir={args.out}",
            f"max_samples={args.max_samples}",
            f"epochs={args.epochs}",
            "--overwrite",
        ]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    # the table covers every variant that has a finished run in --out (so one can be rerun alone)
    results = [Path(args.out) / name / "result.json" for name in VARIANTS]
    rows = [json.loads(p.read_text()) for p in results if p.is_file()]
    print(
        "\n| method | acc (ep 0) | f1 (ep 0) | acc (best) | f1 (best) | best epoch | time/epoch | peak RSS | "
        "trainable |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        e0, best = r["metrics_epoch0"], r["metrics_best"]
        print(
            f"| {r['run_name']} | {e0['accuracy']:.3f} | {e0['f1']:.3f} | {best['accuracy']:.3f} | {best['f1']:.3f} "
            f"| {r['best_epoch']} | {r['time_per_epoch_s']:.0f} s | {r['peak_memory_mb'] / 1024:.2f} GiB "
            f"| {r['trainable_params']:,} ({r['trainable_pct']:.3f}%) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
