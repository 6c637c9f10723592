"""Where job (a)'s training memory goes: the bytes autograd keeps for the backward pass, by the module that
saved them, for one SmolLM2-135M step with LoRA r=8 on q_proj/v_proj (job (a)'s adapter) over a batch of
8 x 256 tokens in fp32. The LM head is left out (peftlab's answer-token loss runs it on the answer tokens
only, a vocabulary chunk at a time); what is left is what a step must hold until its backward.

    python bench/saved_activations.py [--batch 8] [--length 256]   -> prints a Markdown table

torch's saved-tensor hooks see every tensor a step keeps (counted once per storage); not peak RSS, which adds
the weights, the allocator's slack and the backward's own transients."""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

KINDS = (
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "act_fn",
    "input_layernorm", "post_attention_layernorm", "self_attn", "norm", "embed_tokens", "rotary_emb",
)  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=256)
    args = ap.parse_args(argv)
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from peftlab.hardware import cpu_info
    from peftlab.models.loading import resolve_model

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m", "").path)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    body = model.get_base_model().model  # the decoder layers, without the LM head
    stack, seen, saved = [], set(), collections.Counter()

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key not in seen:
            seen.add(key)
            saved[stack[-1] if stack else "residual stream and the rest"] += t.untyped_storage().nbytes()
        return t

    def enter(kind):
        def hook(module, args):
            stack.append(kind)  # returns None: the module's inputs stay as they are

        return hook

    def leave(module, args, output):
        stack.pop()  # returns None: a forward hook's return value would replace the module's output

    for name, module in body.named_modules():
        kind = name.split(".")[-1]
        if kind in KINDS:
            module.register_forward_pre_hook(enter(kind))
            module.register_forward_hook(leave)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.length))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        hidden = body(input_ids=ids).last_hidden_state
    hidden.float().pow(2).mean().backward()  # the backward runs: what was saved was needed
    total = sum(saved.values())
    tokens = args.batch * args.length
    cpu = cpu_info()
    print(f"{cpu['cpu_model']} ({', '.join(cpu['cpu_flags'])}); torch {torch.__version__}; batch {args.batch} x "
          f"{args.length} tokens, fp32, LoRA r=8 q_proj/v_proj\n")  # fmt: skip
    print(f"Saved for the backward pass: **{total / 2**30:.2f} GiB** ({total / tokens / 2**20:.2f} MiB per token)\n")
    print("| saved by | GiB | share |\n|---|---|---|")
    for kind, size in saved.most_common():
        print(f"| {kind} | {size / 2**30:.3f} | {size / total:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
