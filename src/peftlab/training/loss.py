"""The causal-LM loss from the answer tokens only, over the vocabulary in chunks (`train.chunked_loss`).

A causal LM's own loss projects every position of the batch onto the vocabulary (batch x length x
49,152 floats for SmolLM2, 262,144 for Gemma 3), upcasts them, and keeps them and their softmax for
backward, although SFT scores only the answer tokens and the prompt and padding positions are thrown
away. Here the decoder runs as usual (through the same wrappers: PEFT, DDP, autocast) but the model
is asked for no logits (`logits_to_keep` = no position); a forward hook on its decoder takes the last
hidden states, the positions whose next token is a label are picked, and the loss over them is
computed chunk by chunk with its gradient, so at most one chunk of logits exists at a time.

Why by hand: libraries that fuse the LM head with the cross-entropy (Liger-Kernel, cut-cross-entropy)
are Triton kernels for GPUs; none runs on a CPU, and none is needed on top of torch here. The sum is
the same as the model's own loss (transformers' ForCausalLMLoss: shift, sum, divide by the number of
label tokens), which tests/test_loss.py checks, gradients included.
"""

from __future__ import annotations

import inspect

import torch

CHUNK_ELEMENTS = 1 << 24  # logits per chunk: 16M floats (64 MiB), e.g. 341 tokens of a 49,152-word vocabulary
# Heads that change the logits after the projection; the fused loss would leave that out.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def _autocast_dtype(device_type: str, fallback: torch.dtype) -> torch.dtype:
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else fallback


class _ChunkedLinearCE(torch.autograd.Function):
    """sum over rows of cross_entropy(hidden @ weight.T + bias, target); the gradient is computed in the
    forward pass, chunk by chunk, and kept (hidden-sized), never the logits."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, chunk: int, dtype, need: tuple):
        w = weight.to(dtype)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need[0] else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need[1] else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need[2] else None
        grads = any(need)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk].to(dtype)
            t = target[start : start + chunk]
            logits = (h @ w.T).float()
            if bias is not None:
                logits += bias.float()
            lse = torch.logsumexp(logits, dim=-1)
            loss += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if not grads:
                continue
            g = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            g[torch.arange(len(t), device=g.device), t] -= 1  # d(sum CE)/d(logits) = softmax - one-hot
            if grad_h is not None:
                grad_h[start : start + chunk] = (g.to(dtype) @ w).to(hidden.dtype)
            if grad_w is not None:
                grad_w += g.T @ h.float()
            if grad_b is not None:
                grad_b += g.sum(0)
        ctx.save_for_backward(*(x for x in (grad_h, grad_w, grad_b) if x is not None))
        ctx.have = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        saved = iter(ctx.saved_tensors)
        gh, gw, gb = (next(saved) if have else None for have in ctx.have)
        return (
            None if gh is None else gh * grad_out.to(gh.dtype),
            None if gw is None else (gw * grad_out).to(ctx.dtypes[0]),
            None if gb is None else (gb * grad_out).to(ctx.dtypes[1]),
            None,
            None,
            None,
            None,
        )


def chunked_linear_cross_entropy(
    hidden: torch.Tensor, head: torch.nn.Linear, target: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """Summed cross-entropy of head(hidden) against target ([N, H] hidden states, [N] token ids); the matmuls
    run in the autocast dtype when autocast is on, the softmax in fp32 (as autocast does for a loss)."""
    chunk = chunk or max(1, CHUNK_ELEMENTS // head.weight.shape[0])
    dtype = _autocast_dtype(hidden.device.type, hidden.dtype)
    on = torch.is_grad_enabled()  # (inside Function.forward grad mode is always off)
    need = tuple(on and x is not None and x.requires_grad for x in (hidden, head.weight, head.bias))
    with torch.autocast(hidden.device.type, enabled=False):
        return _ChunkedLinearCE.apply(hidden, head.weight, head.bias, target, chunk, dtype, need)


def _base_model(model):
    """The transformers model inside PEFT / DDP wrappers."""
    model = getattr(model, "module", model)  # DDP
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports(model) -> str:
    """'' when the fused loss computes exactly the model's own loss, else why not."""
    base = _base_model(model)
    peft_config = getattr(getattr(model, "module", model), "active_peft_config", None)
    if peft_config is not None and peft_config.is_prompt_learning:
        return "prompt-learning methods put virtual tokens before the row"
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear:
        return f"the LM head is a {type(head).__name__}, not a plain Linear layer"
    if "logits_to_keep" not in inspect.signature(base.forward).parameters or not hasattr(base, "get_decoder"):
        return f"{type(base).__name__} takes no logits_to_keep"
    text = base.config.get_text_config()
    changed = [k for k in LOGIT_TRANSFORMS if getattr(text, k, None) not in (None, 1, 1.0)]
    return f"the model transforms its logits ({', '.join(changed)})" if changed else ""


def answer_loss(model, inputs: dict, num_items_in_batch=None) -> dict:
    """The model's loss (and an empty logits placeholder per row) from the positions whose next token is
    a label. `inputs` is the collator's batch with `labels` (-100 where no loss)."""
    base = _base_model(model)
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    captured = {}
    hook = base.get_decoder().register_forward_hook(lambda mod, args, out: captured.__setitem__("h", out[0]))
    try:
        model(**inputs, logits_to_keep=torch.zeros(0, dtype=torch.long, device=labels.device), use_cache=False)
    finally:
        hook.remove()
    hidden = captured["h"][:, :-1]
    target = labels[:, 1:]
    keep = target != -100
    loss = chunked_linear_cross_entropy(hidden[keep], base.get_output_embeddings(), target[keep])
    if num_items_in_batch is None:
        loss = loss / keep.sum().clamp(min=1)
    else:
        loss = loss / torch.as_tensor(num_items_in_batch, device=loss.device)
    return {"loss": loss, "logits": labels.new_zeros(labels.shape[0], 1, dtype=torch.float32)}
