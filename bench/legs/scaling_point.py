"""One point of the scaling plot (bench/run.py --jobs scaling): SmolLM2-135M trained for a few optimizer
steps on random token rows of exactly SEQ tokens, by LoRA of rank R on q_proj/v_proj or by full
fine-tuning, with peftlab's answer-token loss (every token a label). Prints one JSON line: the median
step time and tokens/s; the runner takes the process's peak RSS from the kernel.

    python bench/legs/scaling_point.py MODEL_DIR SEQ METHOD RANK [--batch 2] [--steps 3]"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("seq", type=int)
    ap.add_argument("method", choices=["lora", "full"])
    ap.add_argument("rank", type=int)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    from peftlab.training.loss import answer_loss

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    model.config.use_cache = False
    if args.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=["q_proj", "v_proj"])
        )
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(100, 40000, (args.batch, args.seq))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    times = []
    for step in range(args.steps + 1):  # the first step warms up (allocations, kernels): not counted
        t = time.perf_counter()
        answer_loss(model, batch)["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step:
            times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        json.dumps(
            {
                "seq": args.seq,
                "method": args.method,
                "rank": args.rank,
                "batch": args.batch,
                "step_s": step_s,
                "tokens_per_s": args.batch * args.seq / step_s,
                "trainable_params": trainable,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
