"""Attention for packed batches (`packing`): each example attends to itself only, one SDPA call per example.

A packed batch is one row holding several examples, position ids restarting at each (transformers'
DataCollatorWithFlattening). With the `sdpa` implementation transformers masks it with one
block-diagonal mask over the whole row: attention then costs (sum of the lengths)^2 instead of the sum
of their squares, through SDPA's masked kernel. For SFT rows of SmolLM2 (8 rows of ~160 tokens) that was
6.5x the attention work of per-example attention and ate what dropping the padding saved.

Here the flattened row is cut at the example boundaries the collator passes (`cu_seq_lens_q`) and each
example runs SDPA with `is_causal`, no mask; the projections, MLPs and norms still see one padding-free
row. Every other call (padded batches, generation with a cache, a sliding-window layer whose example is
longer than its window, attention with a bias, soft-capping or sinks) goes to transformers' own `sdpa`
unchanged, with the mask transformers built for it (this implementation builds the same masks as `sdpa`).

Why by hand: the kernels that do this for varying lengths (flash-attn's varlen functions, behind
transformers' `flash_attention_2`) are CUDA-only; on a CPU transformers has only the masked path.
"""

from __future__ import annotations

NAME = "peftlab_packed_sdpa"
# arguments that change what attention computes beyond causal softmax(q k^T) v: left to sdpa's own path
_NOT_PLAIN = ("position_bias", "softcap", "s_aux", "sinks")


def packed_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' attention-function signature: query (batch, heads, length, dim), key/value (batch,
    key-value heads, length, dim); returns (batch, length, heads, dim) and no weights."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cuts = example_bounds(module, query, key, is_causal, kwargs)
    if cuts is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    rest = {k: v for k, v in kwargs.items() if not k.startswith(("cu_seq_lens", "max_length"))}
    outs = [
        sdpa_attention_forward(
            module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, dropout, scaling, True, **rest
        )[0]
        for a, b in zip(cuts[:-1], cuts[1:])
    ]
    return torch.cat(outs, dim=1), None


def example_bounds(module, query, key, is_causal, kwargs) -> list[int] | None:
    """The packed row's example boundaries when this call can attend example by example, else None."""
    bounds = kwargs.get("cu_seq_lens_q")
    length = query.shape[2]
    if (
        bounds is None
        or query.shape[0] != 1
        or key.shape[2] != length
        or not getattr(module, "is_causal", True)
        or is_causal is False
        or any(kwargs.get(k) is not None for k in _NOT_PLAIN)
    ):
        return None
    cuts = bounds.tolist() if hasattr(bounds, "tolist") else list(bounds)
    window = getattr(module, "sliding_window", None)
    if cuts[0] != 0 or cuts[-1] != length or (window and max(b - a for a, b in zip(cuts[:-1], cuts[1:])) > window):
        return None
    return cuts


def packs(model) -> bool:
    """Whether `packing: auto` packs this model: it attends through transformers' sdpa by the attention
    interface, so packed rows can attend example by example here."""
    sdpa = getattr(getattr(model, "config", None), "_attn_implementation", None) == "sdpa"
    return sdpa and getattr(model, "_supports_attention_backend", False)


def use_packed_attention(model) -> str:
    """Switch a model that attends with `sdpa` to `packed_sdpa` (same masks, same results; packed
    batches attend example by example). Returns the implementation the model runs with."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if not packs(model):
        return getattr(getattr(model, "config", None), "_attn_implementation", None) or ""
    AttentionInterface.register(NAME, packed_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return NAME
