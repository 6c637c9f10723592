"""Speed of the after-training commands, side by side in one run, one process at a time.

    .venv/bin/python bench/after_training.py [--rows 150] [--repeats 3] [--out bench/results]

Jobs, on CoLA dev sentences with SmolLM2-135M-Instruct (untuned, so nothing to train first):
  predict   `peftlab predict` batched (the default) vs eval_batch_size=1 (one row at a time, as the
            users' predict.py does), the first --rows rows, label likelihood;
  classify  label likelihood vs generate + parse (`classify_by: generate`, max_new_tokens 4), the
            same rows through `peftlab eval`, with their accuracies (equal or better, faster?);
  backend   label likelihood through transformers (dequantized Q4_1) vs llama.cpp (the Q4_1 GGUF).
Each figure is the median of --repeats runs (min-max beside it); ratios are of medians. The wall
time is the scoring alone as the command measures it (model loading excluded; it is the same for
both sides). The CPU model and its flags go into the result file: speed depends on them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from benchlib import ROOT, stats

from peftlab.hardware import cpu_info

COLA_DEV = "data:cola/in_domain_dev.tsv"  # a named data set (peftlab data list)
LIKELIHOOD = ROOT / "recipes" / "cola-smollm2-likelihood.yaml"
GENERATE = ROOT / "recipes" / "cola-smollm2-generate.yaml"


def timed_eval(args: list[str], folder: Path) -> dict:
    """One `peftlab eval`/`predict` process; returns its result.json (eval) or its measured line (predict)."""
    subprocess.run(
        [sys.executable, "-m", "peftlab", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    return json.loads((folder / "result.json").read_text())


def predict_seconds(extra: list[str], rows: int, tmp: Path) -> float:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "peftlab",
            "predict",
            str(LIKELIHOOD),
            COLA_DEV,
            *extra,
            "--limit",
            str(rows),
            "--name",
            "bench",
            "--out",
            str(tmp),
            "--overwrite",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    line = next(l for l in out.stdout.splitlines() if l.startswith("predicted"))
    return float(line.split(" in ")[1].split(" s ")[0])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--skip-llamacpp", action="store_true", help="leave out the llama.cpp backend (said in the table)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="peftlab-bench-"))
    n = args.rows
    jobs: dict[str, dict] = {}

    def repeat(name, fn):
        values = [fn(i) for i in range(args.repeats)]
        jobs[name] = {"seconds": stats([v[0] for v in values]), "accuracy": values[-1][1]}
        print(f"{name}: median {jobs[name]['seconds']['median']:.2f} s", flush=True)

    repeat("predict batched", lambda i: (predict_seconds([], n, tmp), None))
    repeat("predict one row at a time", lambda i: (predict_seconds(["eval_batch_size=1"], n, tmp), None))
    common = [f"max_eval_samples={n}", "max_samples=64"]

    def eval_job(recipe, extra):
        def run(i):
            folder = tmp / f"e{abs(hash((str(recipe), tuple(extra), i)))}"
            r = timed_eval(["eval", str(recipe), *common, *extra, "--out", str(folder), "--overwrite"], folder)
            return r["eval_wall_s"], r["metrics_best"]["accuracy"]

        return run

    repeat("label likelihood (transformers)", eval_job(LIKELIHOOD, []))
    repeat("generate + parse (transformers)", eval_job(GENERATE, ["extra_eval_file=", "max_eval_generate=0"]))
    if not args.skip_llamacpp:
        repeat("label likelihood (llama.cpp, Q4_1 GGUF)", eval_job(LIKELIHOOD, ["backend=llamacpp"]))
    med = lambda k: jobs[k]["seconds"]["median"]  # noqa: E731
    ratios = {
        "batched predict vs one at a time": med("predict one row at a time") / med("predict batched"),
        "label likelihood vs generate + parse": med("generate + parse (transformers)")
        / med("label likelihood (transformers)"),
    }
    if not args.skip_llamacpp:
        ratios["llama.cpp vs transformers (label likelihood)"] = med("label likelihood (transformers)") / med(
            "label likelihood (llama.cpp, Q4_1 GGUF)"
        )
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_info(),
        "rows": n,
        "repeats": args.repeats,
        "jobs": jobs,
        "speedups": ratios,
        "llamacpp_skipped": args.skip_llamacpp,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "after_training.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"{n} CoLA dev rows, smollm2-135m, median of {args.repeats} (min-max); {result['cpu']['cpu_model']}",
        "",
        "| job | wall time | rows/s | accuracy |",
        "|---|---|---|---|",
    ]
    for name, j in jobs.items():
        s = j["seconds"]
        acc = "-" if j["accuracy"] is None else f"{j['accuracy']:.3f}"
        lines.append(
            f"| {name} | {s['median']:.2f} s ({s['min']:.2f}-{s['max']:.2f}) | {n / s['median']:.1f} | {acc} |"
        )
    lines += ["", *[f"- {k}: **{v:.1f}x**" for k, v in ratios.items()]]
    if args.skip_llamacpp:
        lines.append("- llama.cpp leg skipped (--skip-llamacpp)")
    (out / "after_training.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
