"""Tuning methods, one table. PEFT methods are thin functions over the `peft` library;
`full`, `head` and `freeze` are requires_grad rules. Task heads are always trained (and saved
with the adapter through peft's modules_to_save). Each row also says what the rest of peftlab must
know about its method (which settings apply, whether it has virtual tokens, what export can do with
it), so a new method is one row and no code elsewhere compares method names."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from torch import nn

from peftlab.errors import UserError, closest


@dataclass
class MethodContext:
    task_type: str  # peft task type, e.g. "SEQ_CLS"
    total_steps: int  # optimizer steps in the whole run (AdaLoRA's schedule needs it)
    model_path: str  # for prompt-tuning's text initialisation (tokenizer)


# ---------------------------------------------------------------- structure helpers


def find_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The transformer block list: the longest ModuleList of identical blocks."""
    best = ("", None)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) and len({type(m) for m in mod}) == 1:
            if best[1] is None or len(mod) > len(best[1]):
                best = (name, mod)
    if best[1] is None:
        raise UserError(f"freeze: cannot find the transformer layers of {type(model).__name__}")
    return best


def head_names(model: nn.Module) -> list[str]:
    """Top-level modules outside the backbone: the task head (classifier, score, qa_outputs...)."""
    backbone = getattr(model, "base_model_prefix", "")
    return [name for name, _ in model.named_children() if name != backbone]


def linear_names(model: nn.Module) -> list[str]:
    """Distinct last name parts of the model's Linear/Conv1D modules (what lora_target can name)."""
    names = set()
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) or type(mod).__name__ == "Conv1D":
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def parse_targets(model: nn.Module, lora_target: str):
    """None (peft's per-architecture default), 'all-linear', or a checked list of module names."""
    if lora_target in ("", "auto"):
        return None
    if lora_target == "all-linear":
        return "all-linear"
    targets = [t.strip() for t in lora_target.split(",") if t.strip()]
    check_modules(model, targets, "lora_target")
    return targets


def check_modules(model: nn.Module, wanted: list[str], key: str) -> None:
    """Every name must be a module of the model (or the last parts of one); peft would silently skip
    an unknown modules_to_save entry."""
    names = [n for n, _ in model.named_modules()]
    for t in wanted:
        if not any(n == t or n.endswith("." + t) for n in names):
            raise UserError(
                f"{key}: module '{t}' does not exist in {type(model).__name__}"
                f"{closest(t, linear_names(model))}; its linear modules are: {', '.join(linear_names(model))}"
            )


def set_trainable(model: nn.Module, prefixes: list[str]) -> None:
    """Freeze everything, then unfreeze parameters whose name starts with one of the prefixes."""
    for name, p in model.named_parameters():
        p.requires_grad = any(name == pre or name.startswith(pre + ".") for pre in prefixes)


# ---------------------------------------------------------------- methods


def apply_full(model, m, ctx):
    for p in model.parameters():
        p.requires_grad = True
    return model


def apply_head(model, m, ctx):
    set_trainable(model, head_names(model))
    for name in head_names(model):  # a head tied to the input embeddings (SmolLM2's lm_head) is named after those
        for p in getattr(model, name).parameters():
            p.requires_grad = True
    return model


def apply_freeze(model, m, ctx):
    """Train the last N layers (first N for negative N), optionally only named sub-modules, plus the head."""
    prefix, layers = find_layers(model)
    n = m.freeze_layers
    if n == 0 or abs(n) > len(layers):
        raise UserError(
            f"freeze_layers: {n} must be between -{len(layers)} and {len(layers)} (not 0); "
            f"the model has {len(layers)} layers"
        )
    chosen = range(len(layers) - n, len(layers)) if n > 0 else range(0, -n)
    prefixes = [f"{prefix}.{i}" for i in chosen]
    parts = [s.strip() for s in m.freeze_modules.split(",") if s.strip()]
    if parts:
        subs = [
            f"{pre}.{name}"
            for pre in prefixes
            for name, _ in layers[0].named_modules()
            if name and any(part in name.split(".") or name.endswith(part) for part in parts)
        ]
        if not subs:
            inside = sorted({name for name, _ in layers[0].named_modules() if name})
            raise UserError(
                f"freeze_modules: none of {parts} is inside a layer; layer modules are: {', '.join(inside)}"
            )
        prefixes = subs
    set_trainable(model, prefixes + head_names(model) + list(m.modules_to_save))
    return model


def lora_kwargs(model, m) -> dict:
    layers = [int(i) for i in m.layers_to_transform] or None
    n = len(find_layers(model)[1]) if layers else 0
    if layers and max(layers) >= n:
        raise UserError(f"layers_to_transform: {layers} names a layer past the model's {n} (indices 0 to {n - 1})")
    check_modules(model, list(m.modules_to_save), "modules_to_save")
    return dict(
        target_modules=parse_targets(model, m.lora_target),
        layers_to_transform=layers,
        modules_to_save=list(m.modules_to_save) or None,
    )


def apply_lora(model, m, ctx, **extra):
    from peft import LoraConfig, get_peft_model

    conf = LoraConfig(
        task_type=ctx.task_type,
        r=m.lora_rank,
        lora_alpha=m.lora_alpha,
        lora_dropout=m.lora_dropout,
        **lora_kwargs(model, m),
        **extra,
    )
    return get_peft_model(model, conf)


def apply_adalora(model, m, ctx):
    from peft import AdaLoraConfig, get_peft_model

    # AdaLoRA starts at a higher rank and prunes down to lora_rank on average; it needs the
    # run's total steps for that schedule (the Trainer calls update_and_allocate, see train.py).
    tinit, tfinal = max(1, ctx.total_steps // 10), max(1, ctx.total_steps // 5)
    if tinit >= ctx.total_steps - tfinal:  # peft requires steps left for pruning between the two phases
        raise UserError(
            f"method adalora: the run has {ctx.total_steps} optimizer steps, too few for AdaLoRA's "
            f"schedule ({tinit} warm-up and {tfinal} final steps, pruning in between; at least 3); "
            f"raise epochs, lower batch_size or grad_accum, or use lora"
        )
    conf = AdaLoraConfig(
        task_type=ctx.task_type,
        init_r=int(m.lora_rank * 1.5),
        target_r=m.lora_rank,
        lora_alpha=m.lora_alpha,
        lora_dropout=m.lora_dropout,
        total_step=ctx.total_steps,
        tinit=tinit,
        tfinal=tfinal,
        **lora_kwargs(model, m),
    )
    model = get_peft_model(model, conf)
    regularize_only_in_training(model.base_model)
    return model


def regularize_only_in_training(tuner) -> None:
    """peft's AdaLoraModel.forward adds its orthogonal regularizer (orth_reg_weight x how far A and B are
    from orthogonal) to any loss the model returns, in evaluation too: a run's validation loss on a task
    with a head (classification, NER, QA) was the task's loss plus that (about 1 more on the tiny test
    models), not comparable with other methods' losses, chose the best epoch by it (metric_for_best: loss),
    and `peftlab eval` of the saved adapter, whose A and B are cut to the pruned ranks, added another
    amount (0.22 apart). Evaluations (training's and peftlab eval's) give the task's loss alone; the
    training loss keeps the regularizer, which it is for. peft's forward reads trainable_adapter_name, which
    a reloaded (not trainable) AdaLoRA lacks: evaluation no longer goes through it."""
    regularized, plain = tuner.forward, tuner.model.forward  # peft's forward calls model.forward directly too

    def forward(*args, **kwargs):
        return regularized(*args, **kwargs) if tuner.training else plain(*args, **kwargs)

    tuner.forward = forward


def apply_adapter(model, m, ctx, kind: str):
    """IA3 / LoHa / LoKr: same target rules as LoRA."""
    import peft

    targets = parse_targets(model, m.lora_target)
    check_modules(model, list(m.modules_to_save), "modules_to_save")
    common = dict(task_type=ctx.task_type, target_modules=targets, modules_to_save=list(m.modules_to_save) or None)
    if kind == "ia3":
        conf = peft.IA3Config(**common)
    elif kind == "loha":
        conf = peft.LoHaConfig(r=m.lora_rank, alpha=m.lora_alpha, module_dropout=m.lora_dropout, **common)
    else:
        conf = peft.LoKrConfig(r=m.lora_rank, alpha=m.lora_alpha, module_dropout=m.lora_dropout, **common)
    return peft.get_peft_model(model, conf)


def apply_prompt(model, m, ctx, kind: str):
    """Prompt tuning / P-tuning / prefix tuning: virtual tokens, backbone frozen, head trained."""
    import peft

    common = dict(task_type=ctx.task_type, num_virtual_tokens=m.num_virtual_tokens)
    if kind == "prompt-tuning":
        text = (
            dict(
                prompt_tuning_init="TEXT",
                prompt_tuning_init_text=m.prompt_init_text,
                tokenizer_name_or_path=ctx.model_path,
            )
            if m.prompt_init_text
            else {}
        )
        conf = peft.PromptTuningConfig(**common, **text)
    elif kind == "p-tuning":
        conf = peft.PromptEncoderConfig(encoder_hidden_size=m.encoder_hidden_size, **common)
    else:
        check_accepts_cache(model, ctx.task_type)
        conf = peft.PrefixTuningConfig(**common)
    return peft.get_peft_model(model, conf)


def check_accepts_cache(model: nn.Module, task_type: str) -> None:
    """Prefix tuning feeds its prefixes as past_key_values; refuse models that take none before training.
    The methods suggested instead must work for the task (QA refuses the other prompt methods too)."""
    import inspect

    instead = "lora, dora, ia3 or full" if task_type == "QUESTION_ANS" else "prompt-tuning or p-tuning"
    backbone = getattr(model, getattr(model, "base_model_prefix", ""), model)
    if not any("past_key_values" in inspect.signature(m.forward).parameters for m in (model, backbone)):
        raise UserError(
            f"prefix-tuning: {type(model).__name__}.forward takes no `past_key_values`, through which "
            f"peft feeds the prefixes (transformers 5 calls it `cache`; peft 0.21 still passes "
            f"past_key_values); use {instead} instead"
        )


@dataclass(frozen=True)
class Method:
    """A tuning method: how to apply it, and what it implies for the run, the tasks and export.

    uses_rank        lora_rank, lora_alpha and lora_dropout apply (and the run's name says -r<rank>)
    prompt           virtual tokens instead of weights: num_virtual_tokens applies, nothing to merge
    prepends_tokens  peft puts the virtual tokens before the input, so per-token outputs shift by
                     num_virtual_tokens (prefix tuning feeds its tokens as past_key_values instead)
    head_only        trains the task head alone: saved alone; ways without a head refuse it
    prunes_ranks     AdaLoRA: ranks are re-allocated after every optimizer step until the end, so the
                     Trainer asks for that each step and the last epoch's weights are the ones kept
    """

    name: str
    apply: Callable  # (model, method settings, MethodContext) -> the model to train
    uses_rank: bool = False
    prompt: bool = False
    prepends_tokens: bool = False
    head_only: bool = False
    prunes_ranks: bool = False
    summary: str = ""  # what it trains, in a line (`peftlab methods`, docs/methods.md)
    settings: tuple = ()  # the method section's keys it reads beside `method`

    def __post_init__(self):  # the usual settings of a rank or prompt method, unless the row names its own
        if not self.settings and (self.uses_rank or self.prompt):
            usual = (
                ("lora_rank", "lora_alpha", "lora_dropout", "lora_target")
                if self.uses_rank
                else ("num_virtual_tokens",)
            )
            object.__setattr__(self, "settings", usual)

    @property
    def can_merge(self) -> bool:
        """Whether export can fold the method into the base weights (and so convert them to GGUF): a prompt
        method's virtual tokens are inputs, not weights."""
        return not self.prompt


def refuse_unknown(model, m, ctx):
    """The apply of a name no row has: what the user typed, refused with the closest names."""
    check_method(m.method)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("full", apply_full, summary="every weight of the model"),
        Method("head", apply_head, head_only=True, summary="the task head alone, on a frozen backbone"),
        Method(
            "freeze",
            apply_freeze,
            summary="the last freeze_layers layers and the head; the rest frozen",
            settings=("freeze_layers",),
        ),
        Method("lora", apply_lora, uses_rank=True, summary="low-rank updates A·B beside the target weights"),
        Method(
            "dora",
            partial(apply_lora, use_dora=True),
            uses_rank=True,
            summary="LoRA on the weights' direction plus a trained magnitude per output",
        ),
        Method(
            "rslora",
            partial(apply_lora, use_rslora=True),
            uses_rank=True,
            summary="LoRA scaled by alpha/sqrt(rank) instead of alpha/rank",
        ),
        Method(
            "adalora",
            apply_adalora,
            uses_rank=True,
            prunes_ranks=True,
            summary="LoRA whose ranks are re-allocated between layers while it trains",
        ),
        Method(
            "ia3",
            partial(apply_adapter, kind="ia3"),
            summary="learned scaling vectors on the target modules' activations",
            settings=("lora_target",),
        ),
        Method(
            "loha",
            partial(apply_adapter, kind="loha"),
            uses_rank=True,
            summary="low-rank Hadamard product updates",
        ),
        Method(
            "lokr",
            partial(apply_adapter, kind="lokr"),
            uses_rank=True,
            summary="low-rank Kronecker product updates",
        ),
        Method(
            "prompt-tuning",
            partial(apply_prompt, kind="prompt-tuning"),
            prompt=True,
            prepends_tokens=True,
            summary="num_virtual_tokens trained embeddings before the input",
        ),
        Method(
            "p-tuning",
            partial(apply_prompt, kind="p-tuning"),
            prompt=True,
            prepends_tokens=True,
            summary="virtual tokens produced by a small trained encoder",
            settings=("num_virtual_tokens", "encoder_hidden_size"),
        ),
        Method(
            "prefix-tuning",
            partial(apply_prompt, kind="prefix-tuning"),
            prompt=True,
            summary="trained keys and values prepended in every layer",
        ),
    )
}


def methods_table() -> list[dict]:
    """One row per method: what it trains, the settings it reads beside `method`, whether export merges it."""
    return [
        {
            "method": m.name,
            "trains": m.summary,
            "settings": ", ".join(m.settings) or "-",
            "merge / GGUF": "yes" if m.can_merge else "no (its virtual tokens are inputs)",
        }
        for m in METHODS.values()
    ]


def method_of(name: str) -> Method:
    """The row of a method name. A name no row has gets a row with no capabilities, not an error: what
    only asks what a method implies (a run's name, a task's checks, export) may run before the name is
    checked, and check_method refuses it, with its suggestions, where the method is checked or applied."""
    return METHODS.get(name) or Method(name, refuse_unknown)


def check_method(name: str) -> None:
    if name not in METHODS:
        raise UserError(f"method: unknown method '{name}'{closest(name, METHODS)}; available: {', '.join(METHODS)}")


def check_method_settings(m) -> None:
    """The method section's numbers that peft would refuse with a traceback, or take and train nothing
    (lora_alpha 0 scales the adapter to zero), checked only for the method that uses them."""
    check_method(m.method)
    method = METHODS[m.method]
    ints = {"lora_rank": 1, "lora_alpha": 1} if method.uses_rank else {}
    if method.prompt:
        ints = {"num_virtual_tokens": 1, "encoder_hidden_size": 1}
    for key, low in ints.items():
        if getattr(m, key) < low:
            raise UserError(f"{key}: must be at least {low}, got {getattr(m, key)} (method {m.method})")
    if method.uses_rank and not 0 <= m.lora_dropout < 1:
        raise UserError(f"lora_dropout: {m.lora_dropout} must be at least 0 and below 1")
    if any(int(i) < 0 for i in m.layers_to_transform):
        raise UserError(f"layers_to_transform: layer indices start at 0, got {list(m.layers_to_transform)}")


def apply_method(model: nn.Module, m, ctx: MethodContext) -> nn.Module:
    """Apply config section `method` to the model; returns the (possibly peft-wrapped) model."""
    check_method(m.method)
    return METHODS[m.method].apply(model, m, ctx)


def is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)
