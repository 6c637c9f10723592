"""LoRA's initialisations (`lora_init`) and LoRA+'s per-matrix learning rates (`loraplus_lr_ratio`), for
the rows of LoRA's own family (lora, dora, rslora), all through peft.

default     peft's own: A Kaiming-uniform, B zero (the update starts at zero)
gaussian    A Gaussian (1/r), B zero
pissa       A, B from the weights' top-r singular vectors; the base keeps the residual (peft re-derives it,
            exactly, when the adapter is loaded: a full SVD per adapted layer at load)
olora       A, B from a QR decomposition of the weights; the base keeps the residual (re-derived at load)
orthogonal  A and B orthogonal, the base untouched (lora_rank must be even)
eva         A from an SVD of the layers' inputs on a few training batches (EVA_BATCHES x batch_size rows,
            one forward pass each, before training), ranks redistributed by explained variance; B zero
corda       refused (REFUSED says why)
loftq       the base replaced by its 4-bit quantisation, A, B fit to the error; peft needs bitsandbytes for
            it, so it is refused where that is not installed (as here: CPU, offline)
"""

from __future__ import annotations

import importlib.util

from peftlab.errors import UserError, closest

LORA_INITS = ("default", "gaussian", "pissa", "olora", "orthogonal", "eva", "corda", "loftq")
# refused with the reason: peft has them, peftlab cannot yet give back what they trained
REFUSED = {
    "corda": "the CorDA adapter, converted to plain LoRA on the original base at the end of the run (the "
    "only form that loads without its data pass), did not reload in `peftlab eval` with peft 0.21.2 "
    "(tests/test_peft_methods.py); use pissa (weights only) or eva (data-driven, base untouched)",
}
EVA_BATCHES = 4  # training batches EVA reads before training (forward passes, no update)


def check_lora_settings(m, method) -> None:
    """lora_init and loraplus_lr_ratio: known values, only on LoRA's own rows, before anything is read."""
    if m.lora_init not in LORA_INITS:
        raise UserError(
            f"lora_init: unknown initialisation '{m.lora_init}'{closest(m.lora_init, LORA_INITS)}; "
            f"available: {', '.join(LORA_INITS)}"
        )
    used = [k for k, off in (("lora_init", "default"), ("loraplus_lr_ratio", 0.0)) if getattr(m, k) != off]
    if used and not method.lora_family:
        raise UserError(f"{used[0]}: applies to lora, dora and rslora, not to method {m.method}; leave it unset")
    if m.lora_init == "orthogonal" and m.lora_rank % 2:
        raise UserError(f"lora_init: orthogonal needs an even lora_rank, got {m.lora_rank}")
    if m.lora_init in ("pissa", "olora", "corda", "loftq") and m.method == "dora":
        raise UserError(
            f"lora_init: {m.lora_init} moves part of the weights into the adapter, which DoRA's magnitudes "
            f"(measured on the weights) do not follow in peft; use it with lora or rslora"
        )
    if m.lora_init in REFUSED:
        raise UserError(f"lora_init: {m.lora_init} is not offered yet: {REFUSED[m.lora_init]}")
    if m.lora_init == "loftq" and importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(
            "lora_init: loftq quantises the weights with bitsandbytes (peft 0.21 asks for it even on CPU), which "
            "is not installed; pip install bitsandbytes, or use pissa or olora"
        )
    if m.loraplus_lr_ratio < 0:
        raise UserError(f"loraplus_lr_ratio: must be 0 (off) or more, got {m.loraplus_lr_ratio}")


def init_kwargs(m, ctx) -> dict:
    """LoraConfig's keyword arguments for lora_init."""
    from peft import EvaConfig, LoftQConfig

    if m.lora_init == "default":
        return {}
    if m.lora_init == "eva" and ctx.batches is None:
        raise UserError(f"lora_init: {m.lora_init} reads training batches, and none are at hand here")
    extra = {
        "eva": {"eva_config": EvaConfig(rho=2.0)},
        "loftq": {"loftq_config": LoftQConfig(loftq_bits=4, loftq_iter=1)},
    }
    return {"init_lora_weights": m.lora_init, **extra.get(m.lora_init, {})}


def after_wrap(model, m, ctx):
    """EVA's data pass on the wrapped model."""
    import torch

    if m.lora_init == "eva":
        from peft import initialize_lora_eva_weights

        with torch.no_grad():
            initialize_lora_eva_weights(model, [without_labels(b) for b in ctx.batches()], show_progress_bar=False)
    return model


def without_labels(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in ("labels", "start_positions", "end_positions")}


def loraplus_optimizer(model, args, ratio: float):
    """LoRA+: B matrices learn `ratio` times faster than A, through peft's create_loraplus_optimizer and the
    optimizer class and arguments that `optim` names (transformers' own mapping)."""
    from peft.optimizers import create_loraplus_optimizer
    from transformers import Trainer

    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    kwargs = {k: v for k, v in kwargs.items() if k != "lr"}
    return create_loraplus_optimizer(
        model, cls, lr=args.learning_rate, loraplus_lr_ratio=ratio, weight_decay=args.weight_decay, **kwargs
    )
