"""Whether peft's prefix tuning reaches a transformers 5 model: a minimal reproduction of the mismatch.

peft's prefix tuning trains a key/value prefix for every layer and hands it to the model as
`past_key_values`. transformers 5 renamed that argument of every model's forward to `cache`; peft 0.21.2
still passes `past_key_values`. transformers maps the old name onto the new one with a
`deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")` decorator, so it works, with a
FutureWarning, until 5.40.0; after that the prefix would be dropped or refused. This builds a tiny random
Llama (no download), wraps it with peft's PrefixTuningConfig, and compares its output with the bare
model's: `diagnose()` says whether the prefix reached the attention ("works"), was silently dropped
("ignored": the output equals the bare model's), or made the forward fail ("error: ...").
`diagnose_generate()` asks the same of generate(), which passes a cache of its own and drops the prefix
("ignored"): so peftlab refuses prefix tuning on every way that scores by generating (sft, cls-generate,
mc-generate; tasks/sft.py), and the task heads refuse it for the signature (models/methods.py,
check_accepts_cache, reads the same decorator). Run by tests/test_peft_methods.py, which fails the day either
answer changes.

    PYTHONPATH=src .venv/bin/python bench/prefix_tuning.py

Says forward "works", generate "ignored" with torch 2.13.0+cpu, transformers 5.24.0, peft 0.21.2 (the
script prints the versions).
"""

from __future__ import annotations

import inspect


def diagnose() -> str:
    import peft
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, intermediate_size=64, **size)).eval()
    ids = torch.randint(0, 64, (1, 6))
    with torch.no_grad():
        bare = model(input_ids=ids).logits
        wrapped = peft.get_peft_model(model, peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
        for p in wrapped.prompt_encoder.parameters():  # a prefix far from zero, so its effect cannot hide
            p.normal_(0, 3)
        try:
            out = wrapped(input_ids=ids).logits
        except Exception as e:  # noqa: BLE001 - the reproduction reports whatever the libraries raise
            return f"error: {type(e).__name__}: {e}"
    return "ignored" if torch.allclose(out, bare, atol=1e-6) else "works"


def diagnose_generate() -> str:
    """The same wrapped model's greedy generate(): "ignored" when its first step's scores equal the bare
    model's (the prefix dropped: generate passes a cache of its own), "works" when the prefix changes them."""
    import peft
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, intermediate_size=64, **size)).eval()
    ids = torch.randint(0, 64, (1, 6))
    settings = dict(max_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True)
    with torch.no_grad():
        bare = model.generate(input_ids=ids, pad_token_id=0, **settings).scores[0]
        wrapped = peft.get_peft_model(model, peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
        for p in wrapped.prompt_encoder.parameters():
            p.normal_(0, 3)
        try:
            out = wrapped.generate(input_ids=ids, pad_token_id=0, **settings).scores[0]
        except Exception as e:  # noqa: BLE001 - the reproduction reports whatever the libraries raise
            return f"error: {type(e).__name__}: {e}"
    return "ignored" if torch.allclose(out, bare, atol=1e-5) else "works"


def versions() -> str:
    import peft
    import torch
    import transformers

    return f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}"


def main() -> None:
    from transformers import LlamaForCausalLM

    takes = "past_key_values" in inspect.signature(LlamaForCausalLM.forward).parameters
    print(versions())
    print(f"LlamaForCausalLM.forward takes past_key_values: {takes}")
    print(f"prefix tuning, forward: {diagnose()}")
    print(f"prefix tuning, generate: {diagnose_generate()}")


if __name__ == "__main__":
    main()
