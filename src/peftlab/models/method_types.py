"""What a tuning method is (the Method record of the METHODS table), what applying one is given
(MethodContext), and the helpers every method's apply uses to find the model's layers, head and target
modules. Its own module so that models/methods.py (the original methods and the table) and
models/peft_methods.py (the rest of peft's tuners) can both build rows without importing each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from torch import nn

from peftlab.errors import UserError, closest


@dataclass
class MethodContext:
    task_type: str  # peft task type, e.g. "SEQ_CLS"
    total_steps: int  # optimizer steps in the whole run (AdaLoRA's schedule needs it)
    model_path: str  # for prompt-tuning's text initialisation (tokenizer)
    # a few collated training batches, for the data-driven LoRA initialisations (EVA, CorDA); None where
    # no training data is at hand (peftlab eval re-applies nothing: it loads the saved adapter)
    batches: Callable[[], Iterable[dict]] | None = None


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


@dataclass(frozen=True)
class Method:
    """A tuning method: how to apply it, and what it implies for the run, the tasks and export.

    uses_rank        lora_rank applies (and the run's name says -r<rank>); LoRA's own rows also read
                     lora_alpha and lora_dropout
    prompt           virtual tokens instead of weights: num_virtual_tokens applies, nothing to merge
    prepends_tokens  peft puts the virtual tokens before the input, so per-token outputs shift by
                     num_virtual_tokens (prefix tuning feeds its tokens as past_key_values instead)
    head_only        trains the task head alone: saved alone; ways without a head refuse it
    prunes_ranks     AdaLoRA: ranks are re-allocated after every optimizer step until the end, so the
                     Trainer asks for that each step and the last epoch's weights are the ones kept
    merges           peft can fold it into the base weights (export --merge, then GGUF)
    lora_family      LoRA's own rows: lora_init and loraplus_lr_ratio apply
    catalog          one of peft's wider catalogue (models/peft_methods.py): tests/test_matrix.py trains it
                     on a sample of the task ways, the original rows on all of them
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
    kind: str = "reparametrised"  # additive | reparametrised | selective | prompt | full
    size: str = "-"  # what sets how much it trains
    paper: str = "-"
    peft_type: str = ""  # peft's PeftType name, for its default target modules; empty = not a peft tuner
    targets: tuple = ()  # ((family, "module,names"), ...): peftlab's defaults where peft has none
    refused: str = "-"  # the tasks and models it is refused on, and why
    merges: bool = True
    lora_family: bool = False
    catalog: bool = False
    rates: str = ""  # the `search: {lr: auto}` grid (LR_GRIDS) it takes; empty = told by what it trains

    def __post_init__(self):  # the usual settings of a rank or prompt method, unless the row names its own
        if not self.settings and (self.uses_rank or self.prompt):
            usual = (
                ("lora_rank", "lora_alpha", "lora_dropout", "lora_target")
                if self.uses_rank
                else ("num_virtual_tokens",)
            )
            object.__setattr__(self, "settings", usual)

    @property
    def lr_family(self) -> str:
        """Which LR_GRIDS row `search: {lr: auto}` gives this method."""
        if self.rates:
            return self.rates
        return "prompt" if self.prompt else "head" if self.head_only else "full" if self.kind == "full" else "adapter"

    @property
    def can_merge(self) -> bool:
        """Whether export can fold the method into the base weights (and so convert them to GGUF): a prompt
        method's virtual tokens are inputs, not weights."""
        return self.merges and not self.prompt


# `search: {lr: auto}` (sweep/search.py): three rates per family, the family's usual rate first; a factor of 2-5
# between neighbours, the span within which the users' reports found each family's best rate.
LR_GRIDS = {
    "full": [5.0e-5, 2.0e-5, 1.0e-4],  # full fine-tuning, freeze: every (or many) pretrained weights move
    "head": [2.0e-3, 5.0e-4, 1.0e-2],  # a fresh head on a frozen backbone
    "adapter": [5.0e-4, 1.0e-4, 2.0e-3],  # LoRA, DoRA and every other peft method with weights
    "prompt": [1.0e-2, 3.0e-3, 3.0e-2],  # virtual tokens: prompt / p-tuning / prefix tuning
}

FAMILIES = {"bert": "encoder", "llama": "llama", "gemma3_text": "gemma3", "gemma3": "gemma3"}


def family_of(model: nn.Module) -> str:
    """The packaged model family a model belongs to (encoder, llama, gemma3), else its model_type."""
    kind = getattr(getattr(model, "config", None), "model_type", "")
    return FAMILIES.get(kind, kind)
