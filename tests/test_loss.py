"""The chunked answer-token loss (peftlab.training.loss) equals the model's own causal-LM loss, gradients included,
for LoRA and full fine-tuning, padded and packed batches, fp32 and bf16 autocast; and it is refused
where it could not be equal (prompt-learning methods)."""

from __future__ import annotations

import pytest
import torch

from peftlab.training.loss import answer_loss, chunked_linear_cross_entropy, supports


def batch(packed: bool):
    torch.manual_seed(1)
    ids = torch.randint(4, 30, (3, 12))
    labels = ids.clone()
    labels[:, :5] = -100  # prompt tokens
    labels[2, 9:] = -100  # padding of the shorter row
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    if not packed:
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
    from transformers import DataCollatorWithFlattening

    rows = [
        {"input_ids": ids[i][mask[i].bool()].tolist(), "labels": labels[i][mask[i].bool()].tolist()} for i in range(3)
    ]
    return DataCollatorWithFlattening(return_tensors="pt")(rows)


def lm(tiny_llama, lora: bool):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    model.config.use_cache = False  # as sft.build_model: without a cache transformers masks packed rows per example
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    return model


def own_loss_and_grads(model, inputs, num_items):
    loss = model(**inputs, num_items_in_batch=num_items).loss
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return loss.detach(), grads


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_answer_loss_equals_the_models_own(tiny_llama, lora, packed):
    model = lm(tiny_llama, lora)
    inputs = batch(packed)
    num_items = (inputs["labels"][:, 1:] != -100).sum()
    want, want_grads = own_loss_and_grads(model, inputs, num_items)
    out = answer_loss(model, inputs, num_items)
    out["loss"].backward()
    got_grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert supports(model) == ""
    assert torch.allclose(out["loss"], want, atol=1e-6), (out["loss"], want)
    assert set(got_grads) == set(want_grads) and len(got_grads) > 0
    for k in want_grads:
        assert torch.allclose(got_grads[k], want_grads[k], atol=1e-6, rtol=1e-4), k
    assert out["logits"].shape[0] == inputs["input_ids"].shape[0]


def test_chunks_and_autocast_do_not_change_the_sum():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True)
    hidden = torch.randn(37, 16, requires_grad=True)
    target = torch.randint(0, 50, (37,))
    want = torch.nn.functional.cross_entropy(head(hidden), target, reduction="sum")
    want.backward()
    want_grads = [hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()]
    for chunk in (1, 5, 37, 100):
        hidden.grad = head.weight.grad = head.bias.grad = None
        got = chunked_linear_cross_entropy(hidden, head, target, chunk=chunk)
        got.backward()
        assert torch.allclose(got, want, atol=1e-4)
        for g, w in zip([hidden.grad, head.weight.grad, head.bias.grad], want_grads):
            assert torch.allclose(g, w, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = chunked_linear_cross_entropy(hidden, head, target, chunk=8)
        ref = torch.nn.functional.cross_entropy(head(hidden).float(), target, reduction="sum")
    assert bf16.dtype == torch.float32 and abs(bf16.item() - ref.item()) < 1e-2 * abs(ref.item())
    with torch.no_grad():  # evaluation: no gradient work, same number
        assert torch.allclose(chunked_linear_cross_entropy(hidden, head, target, chunk=4), want, atol=1e-4)


def test_prompt_learning_is_left_to_the_models_own_loss(tiny_llama):
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama),
        PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    )
    assert "virtual tokens" in supports(model)
