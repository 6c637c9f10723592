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
corda       A, B from the weights and the covariance of the layers' inputs on a few training batches; the
            base keeps the residual, so the saved adapter is converted to plain LoRA of rank 2r at the end
loftq       the base replaced by its 4-bit quantisation, A, B fit to the error; peft needs bitsandbytes for
            it, so it is refused where that is not installed (as here: CPU, offline)
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

from peftlab.errors import UserError, closest

LORA_INITS = ("default", "gaussian", "pissa", "olora", "orthogonal", "eva", "corda", "loftq")
EVA_BATCHES = 4  # training batches EVA / CorDA read before training (forward passes, no update)
INITIAL = "peftlab_initial_adapter"  # attribute of a peft model whose saved adapter must be converted


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
    from peft.tuners.lora.config import CordaConfig

    if m.lora_init == "default":
        return {}
    if m.lora_init in ("eva", "corda") and ctx.batches is None:
        raise UserError(f"lora_init: {m.lora_init} reads training batches, and none are at hand here")
    extra = {
        "eva": {"eva_config": EvaConfig(rho=2.0)},
        "corda": {"corda_config": CordaConfig(corda_method="kpm")},
        "loftq": {"loftq_config": LoftQConfig(loftq_bits=4, loftq_iter=1)},
    }
    return {"init_lora_weights": m.lora_init, **extra.get(m.lora_init, {})}


def before_wrap(model, conf, m, ctx) -> None:
    """CorDA measures the inputs' covariance on the base model before peft wraps it."""
    if m.lora_init == "corda":
        import torch
        from peft.tuners.lora.corda import preprocess_corda
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

        if conf.target_modules is None:  # CorDA hooks the targets before peft resolves its default for them
            conf.target_modules = set(DEFAULTS.get(model.config.model_type, ["q_proj", "v_proj"]))

        def run_model():  # one row at a time: peft 0.21's covariance hook squeezes a batch of one
            with torch.no_grad():
                for batch in ctx.batches():
                    rows = without_labels(batch)
                    for i in range(len(next(iter(rows.values())))):
                        model(**{k: v[i : i + 1] for k, v in rows.items()})

        preprocess_corda(model, conf, run_model=run_model)


def after_wrap(model, m, ctx):
    """EVA's data pass on the wrapped model; for CorDA, the initial adapter kept for the conversion at the end."""
    import torch

    if m.lora_init == "eva":
        from peft import initialize_lora_eva_weights

        with torch.no_grad():
            initialize_lora_eva_weights(model, [without_labels(b) for b in ctx.batches()], show_progress_bar=False)
    if m.lora_init == "corda":
        folder = Path(tempfile.mkdtemp(prefix="peftlab-corda-")) / "initial"
        model.save_pretrained(str(folder))
        setattr(model, INITIAL, folder)
    return model


def without_labels(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in ("labels", "start_positions", "end_positions")}


def write_portable_adapter(model, folder: Path) -> None:
    """A CorDA adapter trained on a base whose weights it changed, rewritten as plain LoRA (rank 2r) on the
    original base, so `peftlab eval`, export and plain peft load it without the data pass."""
    initial = getattr(model, INITIAL, None)
    if initial is not None and folder.is_dir():
        model.save_pretrained(str(folder), path_initial_model_for_weight_conversion=str(initial))


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
