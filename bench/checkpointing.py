"""Activation checkpointing for job (a)'s step: none, selective (torch's create_selective_checkpoint_contexts:
matmul and SDPA outputs kept, everything else recomputed) and whole decoder layers, each in a process of
its own so that peak RSS is the step's.

SmolLM2-135M, LoRA r=8 on q_proj/v_proj, fp32, 8 alpaca rows per step packed as peftlab packs them
(each example attending to itself), peftlab's answer-token loss; median step time of the steps after the
first, and the process's peak RSS.

    python bench/checkpointing.py [--steps 5] [--out bench/results/checkpointing.md]
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
MODES = ("none", "selective", "layers")


def one(mode: str, steps: int) -> dict:
    import torch
    from compile_threads import batches, lora_model
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts
    from transformers import AutoTokenizer, DataCollatorWithFlattening

    from peftlab.models.loading import resolve_model
    from peftlab.training.loss import answer_loss

    aten = torch.ops.aten
    keep = {aten.mm.default, aten.addmm.default, aten.bmm.default}
    keep.add(aten._scaled_dot_product_flash_attention_for_cpu.default)

    def policy(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if op in keep else CheckpointPolicy.PREFER_RECOMPUTE

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m", "").path)
    data = [DataCollatorWithFlattening(return_flash_attn_kwargs=True)(b) for b in batches(tok, steps, 8, 256)]
    model = lora_model(packed=True)
    if mode != "none":
        kwargs = {"use_reentrant": False}
        if mode == "selective":
            kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, policy)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    times, losses = [], []
    for batch in data:
        t = time.perf_counter()
        loss = answer_loss(model, batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
        losses.append(round(loss.item(), 5))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    step = round(statistics.median(times[1:]), 2)
    return {"mode": mode, "step_s": step, "peak_rss_gib": round(peak, 2), "losses": losses}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "checkpointing.md"))
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one process per mode
    args = ap.parse_args(argv)
    if args.mode:
        print(json.dumps(one(args.mode, args.steps)))
        return 0
    from peftlab.hardware import cpu_info

    rows = []
    for mode in MODES:
        out = subprocess.run(
            [sys.executable, __file__, "--mode", mode, "--steps", str(args.steps)], capture_output=True, text=True
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    cpu = cpu_info()
    none = rows[0]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {cpu['cpu_model']} ({cpu['cpu_count']} logical CPUs; "
        f"{', '.join(cpu['cpu_flags'])}). Job (a)'s step, packed, fp32; median of {args.steps - 1} steps after "
        "the first; peak RSS of a process that ran only that setting.\n",
        "| checkpointing | step | step time vs none | peak RSS | freed vs none | losses |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['step_s']} s | {r['step_s'] / none['step_s']:.2f} | {r['peak_rss_gib']} GiB | "
            f"{none['peak_rss_gib'] - r['peak_rss_gib']:.2f} GiB | {', '.join(map(str, r['losses']))} |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
