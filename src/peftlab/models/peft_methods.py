"""The rest of peft's tuners: one generic apply for every weight tuner peft registers, the check of a
method's `method_args` against its peft config class, and the rows of the METHODS table for the tuners
that apply to the packaged model families (encoder: BERT/MiniLM; decoders: SmolLM2/Llama, Gemma3).

A named row sets peftlab's defaults (lora_rank into the tuner's rank field where it has one, target
modules where peft has none for a family); any other peft type is reachable by its lowercased PeftType
name with method_args (a type a newer peft adds), or refused by name with the reason (UNSUPPORTED)."""

from __future__ import annotations

import dataclasses
from functools import partial

from torch import nn

from peftlab.errors import UserError, closest
from peftlab.models.method_types import Method, check_modules, family_of, parse_targets

# Fields of a peft config that peftlab sets itself; method_args may not.
OWN_FIELDS = {"task_type", "peft_type", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping"}

# Prompt-learning and composite types peftlab cannot drive, with the reason (a user asking gets it).
UNSUPPORTED = {
    "xlora": "X-LoRA mixes several LoRA adapters trained beforehand; train them as lora runs first",
    "poly": "Poly routes each example through adapters by a task id, which peftlab's tasks do not give",
    "multitask_prompt_tuning": "it needs a task id per example, which peftlab's tasks do not give",
    "adaption_prompt": "LLaMA-Adapter is a prompt method for causal LMs that peftlab's tasks do not wire in; "
    "use prompt-tuning or p-tuning",
    "cpt": "Context-aware Prompt Tuning needs its own collator of in-context examples and token-type masks",
    "trainable_tokens": "with peft 0.21.2 a run's reloaded predictions differ from the trained model's (found by "
    "tests/test_matrix.py on both tiny models); refused until that is understood",
    "cartridge": "it feeds a trained KV cache as past_key_values, which transformers 5 models no longer take "
    "(the mismatch bench/prefix_tuning.py shows for prefix-tuning, without its alias)",
}


def peft_types() -> dict[str, str]:
    """Lowercased PeftType name -> PeftType value, for every type the installed peft registers."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return {str(t.value).lower(): str(t.value) for t in PEFT_TYPE_TO_CONFIG_MAPPING}


def config_class(peft_type: str):
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils import PeftType

    return PEFT_TYPE_TO_CONFIG_MAPPING[PeftType(peft_type)]


def arg_fields(peft_type: str) -> dict[str, dataclasses.Field]:
    """The fields of a peft config that method_args may set."""
    return {f.name: f for f in dataclasses.fields(config_class(peft_type)) if f.name not in OWN_FIELDS}


def typed_args(name: str, peft_type: str, args: dict) -> dict:
    """method_args checked against the peft config class's fields: an unknown key refused with the
    closest field, a number or bool where the field's default is one converted or refused."""
    fields, out = arg_fields(peft_type), {}
    cls = config_class(peft_type).__name__
    for key, value in args.items():
        if key not in fields:
            raise UserError(
                f"method_args.{key}: {cls} (method {name}) has no field '{key}'{closest(key, fields)}; "
                f"its fields: {', '.join(sorted(fields))}"
            )
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = type(default) if isinstance(default, (bool, int, float)) else None
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is not None and type(value) is not kind:
            raise UserError(
                f"method_args.{key}: {cls}.{key} takes a {kind.__name__} (peft's default {default!r}), got {value!r}"
            )
        out[key] = value
    return out


def build_config(name: str, peft_type: str, base: dict, args: dict):
    """peft's config from peftlab's defaults (`base`) and the user's method_args (which win)."""
    cls = config_class(peft_type)
    try:
        return cls(**{**base, **typed_args(name, peft_type, args)})
    except (ValueError, TypeError) as e:
        raise UserError(f"method {name}: peft's {cls.__name__} refuses the settings: {e}; see method_args") from None


def wrap(model: nn.Module, conf, name: str):
    """get_peft_model, with peft's refusal of this model (a size that does not divide a layer, a module it
    cannot adapt) turned into a UserError naming the method, before anything is written."""
    import peft

    try:
        return peft.get_peft_model(model, conf)
    except (ValueError, TypeError, KeyError, NotImplementedError, AttributeError, RuntimeError) as e:
        raise UserError(
            f"method {name}: peft cannot apply it to {type(model).__name__}: {e}; change its size with "
            f"method_args (see `peftlab methods`), lora_target, or use another method"
        ) from None


def apply_peft_tuner(model, m, ctx, peft_type: str, rank_field: str = "", targets: tuple = (), families=()):
    """Any peft weight tuner: peftlab's targets, rank and modules_to_save, then the user's method_args."""
    family = family_of(model)
    if families and family not in families:
        raise UserError(
            f"method {m.method}: not on {type(model).__name__} ({family}); it applies to {', '.join(families)}"
        )
    fields = arg_fields(peft_type)
    base = {"task_type": ctx.task_type}
    chosen = parse_targets(model, m.lora_target)
    if chosen is None and dict(targets).get(family):
        chosen = dict(targets)[family].split(",")
    if chosen is not None and "target_modules" in fields:
        base["target_modules"] = chosen
    if rank_field:
        base[rank_field] = m.lora_rank
    if m.modules_to_save and "modules_to_save" in fields:
        check_modules(model, list(m.modules_to_save), "modules_to_save")
        base["modules_to_save"] = list(m.modules_to_save)
    if m.layers_to_transform and "layers_to_transform" in fields:
        base["layers_to_transform"] = [int(i) for i in m.layers_to_transform]
    return wrap(model, build_config(m.method, peft_type, base, m.method_args), m.method)


def default_targets(row: Method, model_type: str) -> str:
    """The modules a row adapts on a family by default: peftlab's own, else peft's mapping for it."""
    import peft.utils.constants as constants

    if not row.peft_type or row.prompt:
        return "-"
    own = dict(row.targets).get({"bert": "encoder", "llama": "llama", "gemma3_text": "gemma3"}[model_type])
    if own:
        return own
    for name in (row.peft_type, row.peft_type.replace("_", "")):
        mapping = getattr(constants, f"TRANSFORMERS_MODELS_TO_{name}_TARGET_MODULES_MAPPING", None)
        if mapping and mapping.get(model_type):
            return ",".join(mapping[model_type])
    return "peft's rule (all linear)" if row.peft_type in ("OSF", "SHADOW") else "-"


def tuner(name, peft_type, summary, kind="reparametrised", rank="", size="-", paper="-", **extra) -> Method:
    """A row of peft's catalogue; `rank`: the peft field lora_rank sets (then the row uses_rank)."""
    targets, families = extra.pop("targets", ()), extra.pop("families", ())
    settings = (("lora_rank",) if rank else ()) + ("lora_target", "method_args")
    return Method(
        name,
        partial(apply_peft_tuner, peft_type=peft_type, rank_field=rank, targets=targets, families=families),
        uses_rank=bool(rank),
        summary=summary,
        settings=settings,
        kind=kind,
        size=f"lora_rank -> {rank}" if rank else size,
        paper=paper,
        peft_type=peft_type,
        targets=targets,
        catalog=True,
        **extra,
    )


HF = "https://huggingface.co/papers/"
PEFT_ROWS = (
    tuner("vera", "VERA", "shared frozen random A, B; trained scaling vectors per layer", size="method_args.r "
          "(256; shared, may exceed the layer)", paper=HF + "2310.11454"),
    tuner("pvera", "PVERA", "VeRA with a probabilistic (sampled) scaling", size="method_args.r (256)",
          paper="https://arxiv.org/abs/2512.07703"),
    tuner("fourierft", "FOURIERFT", "a few trained spectral coefficients of the weight update",
          size="method_args.n_frequency (1000; at most in x out)", paper=HF + "2405.03003"),
    tuner("waveft", "WAVEFT", "a few trained wavelet coefficients of the weight update",
          size="method_args.n_frequency (2592; at most in x out)"),
    tuner("oft", "OFT", "an orthogonal block-diagonal rotation of the weights",
          size="method_args.oft_block_size (32)", paper=HF + "2306.07280"),
    tuner("boft", "BOFT", "orthogonal butterfly-factorised rotations of the weights",
          size="method_args.boft_block_size (4)", paper=HF + "2311.06243"),
    tuner("hra", "HRA", "lora_rank Householder reflections of the weights", rank="r", paper=HF + "2405.17484"),
    tuner("road", "ROAD", "trained 2-D rotations of output-feature pairs",
          size="method_args.group_size (64; divides out features)", paper=HF + "2409.00119"),
    tuner("ln_tuning", "LN_TUNING", "the LayerNorm / RMSNorm weights alone", kind="selective",
          targets=(("encoder", "LayerNorm"),), paper=HF + "2312.11420", merges=False,
          refused="export --merge: peft 0.21.2's merge changes the predictions (tests/test_matrix.py, Llama)"),
    tuner("beft", "BEFT", "the biases of the value projections", kind="selective",
          paper="https://arxiv.org/abs/2509.15974",
          refused="export --merge on models without biases (Llama, Gemma3): nothing to fold them into"),
    tuner("vblora", "VBLORA", "low-rank updates mixed from a shared trained vector bank", rank="r",
          size="lora_rank -> r; method_args.vector_length (256; divides in features), num_vectors (256)",
          paper=HF + "2405.15179"),
    tuner("miss", "MISS", "a shared trained shard of the weight matrix (MiSS)", rank="r", paper=HF + "2409.15371"),
    tuner("shira", "SHIRA", "a sparse high-rank update (a fixed random mask)", rank="r"),
    tuner("c3a", "C3A", "circular-convolution updates", size="method_args.block_size (256; divides in and out)",
          paper=HF + "2407.19342"),
    tuner("delora", "DELORA", "decoupled low-rank updates (bounded norm, trained strength)", rank="r",
          paper=HF + "2503.18225"),
    tuner("randlora", "RANDLORA", "full-rank updates from frozen random low-rank bases", rank="r",
          paper=HF + "2502.00987"),
    tuner("gralora", "GRALORA", "granular LoRA: k x k blocks of small low-rank updates", rank="r"),
    tuner("glora", "GLORA", "generalised LoRA: weight, bias and prompt updates", rank="r"),
    tuner("deft", "DEFT", "LoRA with decomposed (frozen-direction) updates", rank="r"),
    tuner("hira", "HIRA", "high-rank updates: a Hadamard product with the weights", rank="r",
          paper="https://openreview.net/pdf?id=TwJrTz9cRS"),
    tuner("lily", "LILY", "low-rank updates with shared high-dimension experts", rank="r",
          paper="https://arxiv.org/abs/2407.09946", merges=False, refused="export --merge: peft cannot merge it"),
    tuner("peanut", "PEANUT", "low-rank updates through a small non-linear adapter of the weights", rank="r",
          paper="https://arxiv.org/abs/2410.01870"),
    tuner("psoft", "PSOFT", "orthogonal fine-tuning in a principal subspace", rank="r",
          paper="https://openreview.net/forum?id=FSHrinMArK"),
    tuner("tinylora", "TINYLORA", "LoRA with a tiny trained core between frozen SVD factors", rank="r",
          paper="https://arxiv.org/abs/2602.04118"),
    tuner("unilora", "UNILORA", "LoRA whose parameters index one shared trained vector", rank="r",
          paper="https://arxiv.org/abs/2506.00799"),
    tuner("adamss", "ADAMSS", "updates in adaptive multi-subspaces of the weights", size="method_args.r (100)"),
    tuner("osf", "OSF", "updates orthogonal to the weights' principal subspace"),
    tuner("frod", "FROD", "a trained rotation of the weights' frozen decomposition"),
    tuner("supertuning", "SUPERTUNING", "a few trained entries of the weight update", size="method_args.r",
          paper="https://arxiv.org/abs/2607.09287"),
    tuner("shadow", "SHADOW", "a small trained shadow network beside the frozen layers", kind="additive",
          families=("llama", "gemma3"), merges=False,
          refused="encoders (peft's ShadowCarrier fails in BERT); export --merge: its network is not a weight update"),
)  # fmt: skip


def by_name(name: str) -> Method | None:
    """A row for a peft type no named row has (`method: <PeftType lowercased>`); None if peft has none."""
    peft_type = peft_types().get(name)
    if peft_type is None:
        return None
    return tuner(name, peft_type, f"peft's {config_class(peft_type).__name__}, by name", size="method_args")
