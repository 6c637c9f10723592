"""torch.compile and thread settings for job (a)'s training step, measured against peftlab's defaults.

Job (a)'s step (SmolLM2-135M, LoRA r=8 on q_proj/v_proj, fp32, 8 alpaca rows cut at 256 tokens, peftlab's
answer-token loss) timed over the same batches, one setting at a time in this one process:

- eager, packed rows (peftlab's default: `packing: auto`, each example attending to itself);
- eager, padded rows (`packing: false`);
- `torch.compile` (inductor) of the padded model: the packed step cuts its attention at example boundaries
  known only at run time, which compile cannot trace, so compile is tried where it can win, the padded one
  (its first step pays the compilation and is reported apart);
- torch's intra-op threads 1 and, where the machine has more logical CPUs than cores, all of them.

    python bench/compile_threads.py [--steps 6] [--out bench/results/compile_threads.md]

Medians of --steps steps after one warm-up step per setting; CPU model and flags in the header."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))


def batches(tok, n: int, size: int, length: int) -> list[list[dict]]:
    from run import ALPACA, resolve

    feats = []
    for r in json.loads(resolve(ALPACA, "bench").read_text())[: n * size]:
        msgs = [
            {"role": "user", "content": (r["instruction"] + "\n" + r.get("input", "")).strip()},
            {"role": "assistant", "content": r["output"]},
        ]
        prompt = tok(tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True))["input_ids"]
        ids = tok(tok.apply_chat_template(msgs, tokenize=False))["input_ids"][:length]
        labels = [-100] * min(len(prompt), len(ids)) + ids[len(prompt) :]
        feats.append({"input_ids": ids, "labels": labels[: len(ids)]})
    return [feats[i : i + size] for i in range(0, len(feats), size)]


def lora_model(packed: bool = False):
    """Job (a)'s model; `packed`: attending example by example in packed rows, as peftlab packs them."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from peftlab.models.loading import resolve_model

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m", "").path, attn_implementation="sdpa")
    model.config.use_cache = False
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    if packed:
        from peftlab.models.attention import use_packed_attention

        use_packed_attention(model)
    return get_peft_model(model, lora)


def timed_steps(model, collated: list[dict], step_of) -> tuple[float, list[float], float]:
    """(first step's seconds, the later steps' seconds, the mean loss)."""
    import torch

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    times, losses = [], []
    for batch in collated:
        t = time.perf_counter()
        loss = step_of(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
        losses.append(loss.item())
    return times[0], times[1:], sum(losses) / len(losses)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "compile_threads.md"))
    args = ap.parse_args(argv)
    import torch
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, DataCollatorWithFlattening

    from peftlab.hardware import cpu_info
    from peftlab.models.loading import resolve_model
    from peftlab.training.loss import answer_loss

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m", "").path)
    data = batches(tok, args.steps + 1, 8, 256)
    padded = [DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)(b) for b in data]
    packed = [DataCollatorWithFlattening(return_flash_attn_kwargs=True)(b) for b in data]
    real_tokens = sum(len(f["input_ids"]) for b in data[1:] for f in b)
    default_threads = torch.get_num_threads()
    logical = os.cpu_count() or default_threads

    def loss_of(model, batch):
        return answer_loss(model, batch)["loss"]

    rows = []

    def measure(name: str, model, collated, threads: int, step_of=loss_of):
        torch.set_num_threads(threads)
        first, rest, loss = timed_steps(model, collated, step_of)
        torch.set_num_threads(default_threads)
        med = statistics.median(rest)
        rows.append(
            {
                "setting": name,
                "threads": threads,
                "first_step_s": round(first, 2),
                "step_s": round(med, 2),
                "tokens_per_s": round(real_tokens / sum(rest), 1),
                "mean_loss": round(loss, 4),
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    measure("eager, packed (default)", lora_model(packed=True), packed, default_threads)
    measure("eager, packed, 1 thread", lora_model(packed=True), packed, 1)
    if logical > default_threads:
        measure(f"eager, packed, {logical} threads", lora_model(packed=True), packed, logical)
    measure("eager, padded", lora_model(), padded, default_threads)
    try:
        compiled = lora_model()
        compiled.base_model.model.model.compile()  # the decoder: its layers, norms, rotary embedding
        measure("torch.compile (inductor), padded", compiled, padded, default_threads)
    except Exception as e:  # noqa: BLE001 (a compile that fails here is a figure too)
        rows.append({"setting": "torch.compile (inductor), padded", "error": f"{type(e).__name__}: {e}"[:300]})
        print(json.dumps(rows[-1]), flush=True)

    cpu = cpu_info()
    head = (
        f"Measured {time.strftime('%Y-%m-%d')} on {cpu['cpu_model']} ({cpu['cpu_count']} logical CPUs; "
        f"{', '.join(cpu['cpu_flags']) or 'flags unknown'}), torch {torch.__version__}, default threads "
        f"{default_threads}. Job (a)'s step: SmolLM2-135M, LoRA r=8 q_proj/v_proj, fp32, 8 alpaca rows cut at 256 "
        f"tokens, answer-token loss; median of {args.steps} steps after the first, tokens/s over the real "
        f"(non-padding) tokens of those steps.\n\n"
    )
    lines = ["| setting | threads | first step | step (median) | tokens/s | mean loss |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['setting']} | | failed: {r['error']} | | | |")
        else:
            lines.append(
                f"| {r['setting']} | {r['threads']} | {r['first_step_s']} s | {r['step_s']} s | "
                f"{r['tokens_per_s']} | {r['mean_loss']} |"
            )
    Path(args.out).write_text(head + "\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps({"header": head.strip(), "rows": rows}, indent=1) + "\n")
    print(head + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
