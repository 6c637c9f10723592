"""Tuning methods, one table. PEFT methods are thin functions over the `peft` library;
`full`, `head` and `freeze` are requires_grad rules. Task heads are always trained (and saved
with the adapter through peft's modules_to_save). Each row also says what the rest of peftlab must
know about its method (which settings apply, whether it has virtual tokens, what export can do with
it), so a new method is one row and no code elsewhere compares method names."""

from __future__ import annotations

from functools import partial

from torch import nn

from peftlab.errors import UserError, closest
from peftlab.models import lora_init
from peftlab.models.method_types import (  # noqa: F401  (re-exported: the names callers know)
    LR_GRIDS,
    Method,
    MethodContext,
    check_modules,
    find_layers,
    head_names,
    linear_names,
    parse_targets,
    set_trainable,
)
from peftlab.models.peft_methods import (
    PEFT_ROWS,
    UNSUPPORTED,
    build_config,
    by_name,
    default_targets,
    typed_args,
    wrap,
)

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
    base = dict(
        task_type=ctx.task_type,
        r=m.lora_rank,
        lora_alpha=m.lora_alpha,
        lora_dropout=m.lora_dropout,
        **lora_kwargs(model, m),
        **extra,
        **lora_init.init_kwargs(m, ctx),
    )
    conf = build_config(m.method, "LORA", base, m.method_args)
    return lora_init.after_wrap(wrap(model, conf, m.method), m, ctx)


def apply_adalora(model, m, ctx):
    # AdaLoRA starts at a higher rank and prunes down to lora_rank on average; it needs the
    # run's total steps for that schedule (the Trainer calls update_and_allocate, see train.py).
    tinit, tfinal = max(1, ctx.total_steps // 10), max(1, ctx.total_steps // 5)
    if tinit >= ctx.total_steps - tfinal:  # peft requires steps left for pruning between the two phases
        raise UserError(
            f"method adalora: the run has {ctx.total_steps} optimizer steps, too few for AdaLoRA's "
            f"schedule ({tinit} warm-up and {tfinal} final steps, pruning in between; at least 3); "
            f"raise epochs, lower batch_size or grad_accum, or use lora"
        )
    base = dict(
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
    model = wrap(model, build_config(m.method, "ADALORA", base, m.method_args), m.method)
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
    targets = parse_targets(model, m.lora_target)
    check_modules(model, list(m.modules_to_save), "modules_to_save")
    base = dict(task_type=ctx.task_type, target_modules=targets, modules_to_save=list(m.modules_to_save) or None)
    if kind != "IA3":
        base.update(r=m.lora_rank, alpha=m.lora_alpha, module_dropout=m.lora_dropout)
    return wrap(model, build_config(m.method, kind, base, m.method_args), m.method)


def apply_prompt(model, m, ctx, kind: str):
    """Prompt tuning / P-tuning / prefix tuning: virtual tokens, backbone frozen, head trained."""
    base = dict(task_type=ctx.task_type, num_virtual_tokens=m.num_virtual_tokens)
    if kind == "PROMPT_TUNING" and m.prompt_init_text:
        base.update(
            prompt_tuning_init="TEXT", prompt_tuning_init_text=m.prompt_init_text, tokenizer_name_or_path=ctx.model_path
        )
    elif kind == "P_TUNING":
        base["encoder_hidden_size"] = m.encoder_hidden_size
    elif kind == "PREFIX_TUNING":
        check_accepts_cache(model, ctx.task_type)
    return wrap(model, build_config(m.method, kind, base, m.method_args), m.method)


def check_accepts_cache(model: nn.Module, task_type: str) -> None:
    """Prefix tuning feeds its prefixes as past_key_values; refuse models that take none before training.
    transformers 5 renamed the argument `cache` and still maps the old name onto it (a deprecate_kwarg
    decorator, until 5.40.0: bench/prefix_tuning.py shows it working with 5.24); peft's causal-LM wrapper
    passes it through, its other task wrappers refuse a signature without the name. Once the decorator is
    gone past_key_values would be dropped silently, so this reads the decorator off the source.
    The methods suggested instead must work for the task (QA refuses the other prompt methods too)."""
    instead = "lora, dora, ia3 or full" if task_type == "QUESTION_ANS" else "prompt-tuning or p-tuning"
    backbone = getattr(model, getattr(model, "base_model_prefix", ""), model)
    if task_type == "CAUSAL_LM" and any(takes_past_key_values(m) for m in (model, backbone)):
        return
    # peft's classification, token and QA wrappers look for the name in the signature itself, and refuse
    why = "peft 0.21's task heads look for it by name" if task_type != "CAUSAL_LM" else "it would be dropped"
    raise UserError(
        f"prefix-tuning: {type(model).__name__}.forward takes no `past_key_values`, through which peft feeds "
        f"the prefixes (transformers 5 calls it `cache`; {why}); use {instead} instead"
    )


def takes_past_key_values(module: nn.Module) -> bool:
    import inspect

    forward = type(module).forward
    if "past_key_values" in inspect.signature(forward).parameters:
        return True
    try:
        return 'deprecate_kwarg("past_key_values"' in inspect.getsource(forward)
    except (OSError, TypeError):  # no source at hand: only the signature can tell
        return False


def refuse_unknown(model, m, ctx):
    """The apply of a name no row has: what the user typed, refused with the closest names."""
    check_method(m.method)


HF = "https://huggingface.co/papers/"
LORA_SETTINGS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "lora_init", "loraplus_lr_ratio")
LORA = dict(uses_rank=True, lora_family=True, peft_type="LORA", paper=HF + "2106.09685", settings=LORA_SETTINGS)
PROMPT = dict(prompt=True, kind="prompt", size="num_virtual_tokens")
QA_PROMPT = "qa (start/end logits no longer line up); multiple choice with a head (2-D inputs only)"

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("full", apply_full, summary="every weight of the model", kind="full"),
        Method(
            "head",
            apply_head,
            head_only=True,
            summary="the task head alone, on a frozen backbone",
            kind="selective",
            refused="likelihood scoring (cls-likelihood, mc-likelihood): no head to train",
        ),
        Method(
            "freeze",
            apply_freeze,
            summary="the last freeze_layers layers and the head; the rest frozen",
            settings=("freeze_layers",),
            kind="selective",
            size="freeze_layers",
            rates="full",
        ),
        Method("lora", apply_lora, summary="low-rank updates A·B beside the target weights", **LORA),
        Method(
            "dora",
            partial(apply_lora, use_dora=True),
            summary="LoRA on the weights' direction plus a trained magnitude per output",
            **{**LORA, "paper": HF + "2402.09353"},
        ),
        Method(
            "rslora",
            partial(apply_lora, use_rslora=True),
            summary="LoRA scaled by alpha/sqrt(rank) instead of alpha/rank",
            **{**LORA, "paper": HF + "2312.03732"},
        ),
        Method(
            "adalora",
            apply_adalora,
            uses_rank=True,
            prunes_ranks=True,
            summary="LoRA whose ranks are re-allocated between layers while it trains",
            peft_type="ADALORA",
            paper=HF + "2303.10512",
            refused="runs of fewer than 3 optimizer steps (its pruning schedule)",
        ),
        Method(
            "ia3",
            partial(apply_adapter, kind="IA3"),
            summary="learned scaling vectors on the target modules' activations",
            settings=("lora_target", "method_args"),
            kind="additive",
            peft_type="IA3",
            paper=HF + "2205.05638",
        ),
        Method(
            "loha",
            partial(apply_adapter, kind="LOHA"),
            uses_rank=True,
            summary="low-rank Hadamard product updates",
            peft_type="LOHA",
            paper=HF + "2108.06098",
        ),
        Method(
            "lokr",
            partial(apply_adapter, kind="LOKR"),
            uses_rank=True,
            summary="low-rank Kronecker product updates",
            peft_type="LOKR",
            paper=HF + "2309.14859",
        ),
        Method(
            "prompt-tuning",
            partial(apply_prompt, kind="PROMPT_TUNING"),
            prepends_tokens=True,
            summary="num_virtual_tokens trained embeddings before the input",
            peft_type="PROMPT_TUNING",
            paper=HF + "2104.08691",
            refused=QA_PROMPT,
            **PROMPT,
        ),
        Method(
            "p-tuning",
            partial(apply_prompt, kind="P_TUNING"),
            prepends_tokens=True,
            summary="virtual tokens produced by a small trained encoder",
            settings=("num_virtual_tokens", "encoder_hidden_size"),
            peft_type="P_TUNING",
            paper=HF + "2103.10385",
            refused=QA_PROMPT,
            **PROMPT,
        ),
        Method(
            "prefix-tuning",
            partial(apply_prompt, kind="PREFIX_TUNING"),
            summary="trained keys and values prepended in every layer",
            peft_type="PREFIX_TUNING",
            paper=HF + "2101.00190",
            refused="every way with transformers 5.24 and peft 0.21.2: the task heads need `past_key_values` in "
            "the signature (transformers 5 calls it `cache`), and the generating ways (sft, generate) would score "
            "answers without the prefix, which generate() drops (bench/prefix_tuning.py)",
            **PROMPT,
        ),
        *PEFT_ROWS,
    )
}


def methods_table() -> list[dict]:
    """One row per method: what it is and trains, what sets its size, its default targets on each packaged
    family, its paper, where it is refused, and whether export merges it."""
    return [
        {
            "method": m.name,
            "kind": m.kind,
            "trains": m.summary,
            "size": m.size if m.size != "-" or not m.uses_rank else "lora_rank",
            "settings": ", ".join(m.settings) or "-",
            "targets (encoder / llama / gemma3)": " / ".join(
                default_targets(m, t) for t in ("bert", "llama", "gemma3_text")
            ),
            "paper": m.paper,
            "refused on": m.refused,
            "merge / GGUF": "yes" if m.can_merge else "no (its virtual tokens are inputs)" if m.prompt else "no",
            "lr: auto": ", ".join(f"{r:g}" for r in LR_GRIDS[m.lr_family]),
        }
        for m in METHODS.values()
    ]


def method_of(name: str) -> Method:
    """The row of a method name: a named row, or one built for a peft type asked for by name. A name peft
    does not have either gets a row with no capabilities, not an error: what only asks what a method implies
    (a run's name, a task's checks, export) may run before the name is checked, and check_method refuses
    it, with its suggestions, where the method is checked or applied."""
    named = METHODS.get(name) or METHODS.get(name.replace("_", "-"))  # peft's p_tuning is our p-tuning
    return named or (None if name in UNSUPPORTED else by_name(name)) or Method(name, refuse_unknown)


def check_method(name: str) -> None:
    if name in UNSUPPORTED:
        raise UserError(f"method: peft's {name} is not available in peftlab: {UNSUPPORTED[name]}")
    if method_of(name).apply is refuse_unknown:
        raise UserError(
            f"method: unknown method '{name}'{closest(name, METHODS)}; available: {', '.join(METHODS)} "
            f"(and any other peft type by its lowercased name; `peftlab methods` lists them)"
        )


def check_method_settings(m) -> None:
    """The method section's numbers that peft would refuse with a traceback, or take and train nothing
    (lora_alpha 0 scales the adapter to zero), checked only for the method that uses them; method_args
    against the method's peft config class."""
    check_method(m.method)
    method = method_of(m.method)
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
    if m.method_args and not method.peft_type:
        raise UserError(f"method_args: method {m.method} is not a peft tuner and takes none; leave it empty")
    if method.peft_type:
        typed_args(m.method, method.peft_type, m.method_args)
    lora_init.check_lora_settings(m, method)


def method_label(m) -> str:
    """How a report and a run's default name call the method as configured: lora-r8-pissa-lp16."""
    method = method_of(m.method)
    parts = [m.method] + ([f"r{m.lora_rank}"] if method.uses_rank else [])
    parts += [m.lora_init] if m.lora_init != "default" else []
    parts += [f"lp{m.loraplus_lr_ratio:g}"] if m.loraplus_lr_ratio else []
    return "-".join(parts)


def apply_method(model: nn.Module, m, ctx: MethodContext) -> nn.Module:
    """Apply config section `method` to the model; returns the (possibly peft-wrapped) model."""
    check_method(m.method)
    return method_of(m.method).apply(model, m, ctx)


def is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)
