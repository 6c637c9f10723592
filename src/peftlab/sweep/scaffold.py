"""`peftlab init DATA`: a commented config and a methods sweep for a user's own data file, sized to a time budget.

The data layer decides the task and columns (data/detect.py); here the model's tokenizer measures the texts'
token lengths (max_length), one measured training step of the model on this machine estimates the seconds per
training example, and the sweep's rows and epochs are picked so the whole sweep fits the budget. Both files are
validated with the loaders `peftlab train` and `peftlab sweep` use before they are put in place together.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from peftlab.config.settings import SECTIONS, field_index, load_config
from peftlab.data.detect import Detection, detect
from peftlab.errors import UserError
from peftlab.runs import layout
from peftlab.training.cost import evaluations

# The methods compared, each with the learning rate it needs (the demo sweep's, recipes/sweeps/), and its cost per
# training example relative to full fine-tuning: the demo's measured times per epoch on 2 CPU cores (2026-12-03, AMD
# EPYC: full 38.3 s, head 11.6 s, LoRA r=8 36.6 s, r=16 36.8 s, DoRA r=8 55.5 s; the 2026-12-06 run on a Xeon,
# docs/results/demo-sst2-minilm/report.json, gives the same ratios within 0.03).


def methods(full_lr: float, lora_lr: float, head_lr: float = 0.0) -> list[tuple[dict, float, str]]:
    """(variant, cost relative to full fine-tuning, what it trains) of each method compared; no head-only run
    where head_lr is 0 (a causal LM has no task head to train alone)."""
    rows = [({"name": "full", "method": "full", "lr": full_lr}, 1.0, "every weight trained")]
    if head_lr:
        rows.append(({"name": "head", "method": "head", "lr": head_lr}, 0.3, "the task head alone, the model frozen"))
    for rank in (8, 16):
        rows.append(
            ({"name": f"lora-r{rank}", "method": "lora", "lora_rank": rank, "lr": lora_lr}, 0.96, f"LoRA, rank {rank}")
        )
    rows.append(
        (
            {"name": "dora-r8", "method": "dora", "lora_rank": 8, "lr": lora_lr},
            1.45,
            "DoRA (weight-decomposed LoRA), rank 8",
        )
    )
    return rows


# The learning rates per task (full, LoRA/DoRA, head): the demo sweep's for classification, the JNLPBA recipes' for
# ner, the SQuAD 2.0 recipes' for qa, recipes/alpaca-smollm2-lora.yaml's for sft (a causal LM: no head-only run).
VARIANTS = {
    "classification": methods(5.0e-5, 5.0e-4, head_lr=2.0e-3),
    "multiple_choice": methods(5.0e-5, 5.0e-4, head_lr=2.0e-3),
    "ner": methods(2.0e-4, 1.0e-3, head_lr=2.0e-3),
    "qa": methods(1.0e-4, 2.0e-3, head_lr=2.0e-3),
    "sft": methods(2.0e-5, 2.0e-4),
}
BATCH = 16
EVAL_COST = 0.35  # an evaluated example costs a forward pass: about a third of a training step's
RUN_OVERHEAD = 10.0  # seconds each run spends starting its process (imports), besides loading the model
MIN_ROWS = 32
BUDGET = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_budget(text: str) -> float:
    """'10m', '1h', '1h30m', '90s', '45' (minutes) -> seconds."""
    t = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", t):
        t += "m"
    match = BUDGET.fullmatch(t)
    seconds = 0.0
    if match and any(match.groups()):
        h, m, s = (float(g) if g else 0.0 for g in match.groups())
        seconds = h * 3600 + m * 60 + s
    if seconds <= 0:
        raise UserError(f"--budget {text}: expected a time such as 10m, 1h, 1h30m or 90s")
    return seconds


def duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


@dataclass
class Measure:
    seconds_per_example: float  # one training example, full fine-tuning, forward + backward
    load_seconds: float  # loading the model once
    tokens: int  # the measured batch's length
    parameters: int


def measure_step(model_path: str, causal: bool, tokens: int) -> Measure:
    """Time forward + backward of a batch of BATCH random sequences of `tokens` tokens through the model with every
    weight trainable (what full fine-tuning does per step), after one warm-up step."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    started = time.perf_counter()
    model = (AutoModelForCausalLM if causal else AutoModel).from_pretrained(model_path, torch_dtype=torch.float32)
    load = time.perf_counter() - started
    model.train()
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (BATCH, tokens), generator=torch.Generator().manual_seed(0))
    steps = []
    for _ in range(3):
        begin = time.perf_counter()
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
        loss = out.logits.float().mean() if causal else out.last_hidden_state.mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        steps.append(time.perf_counter() - begin)
    parameters = sum(p.numel() for p in model.parameters())
    return Measure(min(steps[1:]) / BATCH, load, tokens, parameters)


def token_lengths(model_path: str, texts: list[str], limit: int | None) -> tuple[int, int]:
    """(max_length, p90 tokens): max_length covers 99% of a sample of the texts, in steps of 16, 32 to 512 (and the
    model's own limit)."""
    from peftlab.models.loading import load_tokenizer

    tokenizer = load_tokenizer(model_path)
    sample = texts[:: max(1, len(texts) // 2000)] or [""]
    lengths = sorted(len(ids) for ids in tokenizer(sample, truncation=False)["input_ids"])
    pick = lambda q: lengths[min(len(lengths) - 1, int(q * len(lengths)))]  # noqa: E731
    top = min(512, limit or 512)
    return max(32, min(top, 16 * math.ceil(pick(0.99) / 16))), max(8, pick(0.9))


@dataclass
class Plan:
    epochs: int
    max_samples: int  # 0 = all training rows
    max_eval_samples: int  # 0 = all validation rows
    seconds: float  # the sweep's estimated time


def size_sweep(train_rows: int, eval_rows: int, costs: list[float], m: Measure, budget: float) -> Plan:
    """Rows and epochs for the runs (each with its relative cost) to fit the budget, by the measured step time."""
    s, runs = m.seconds_per_example, len(costs)
    overhead = runs * (RUN_OVERHEAD + m.load_seconds)

    def total(n: int, v: int, epochs: int) -> float:
        # evaluations at epoch 0 and after each epoch, then the best weights' prediction pass (training/cost.py)
        passes = evaluations(epochs, eval_at_start=True) + 1
        return overhead + n * epochs * s * sum(costs) + runs * v * passes * s * EVAL_COST

    v = eval_rows
    while v > 100 and total(0, v, 2) - overhead > 0.25 * max(budget - overhead, 0):  # evaluation <= 1/4 of the time
        v = max(100, v // 2)
    for epochs in (5, 4, 3, 2):  # all the rows fit: as many epochs as fit (the best epoch is kept)
        if total(train_rows, v, epochs) <= budget:
            return Plan(epochs, 0, 0 if v == eval_rows else v, total(train_rows, v, epochs))
    spare = budget - total(0, v, 2)
    n = max(MIN_ROWS, min(train_rows, int(spare / (2 * s * sum(costs))) if spare > 0 else 0))
    return Plan(2, n, 0 if v == eval_rows else v, total(n, v, 2))


def comment_of(key: str) -> str:
    """A key's help text, cut at its first sentence-like break, as a YAML comment."""
    text = re.split(r"; |\.\s+(?=[A-Z])", field_index()[key][1].metadata["help"])[0]
    return textwrap.shorten(text, 100, placeholder=" ...")


def value_text(value) -> str:
    return (
        yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000, allow_unicode=True)
        .removesuffix("\n...\n")
        .strip()
    )


def comment_lines(head: list[str]) -> list[str]:
    """Comment lines of at most 118 characters; a wrapped line keeps its indent."""
    lines = []
    for line in head:
        indent = " " * (len(line) - len(line.lstrip()))
        lines += [f"# {part}" for part in textwrap.wrap(line, 116, subsequent_indent=indent + "  ")] or ["#"]
    return lines


def config_text(settings: dict, head: list[str]) -> str:
    """Sectioned YAML of the settings, each key with a comment from its help text; `head` comment lines on top."""
    index = field_index()
    lines = comment_lines(head)
    for section in SECTIONS:
        keys = [k for k in settings if index[k][0] == section]
        if not keys:
            continue
        lines.append(f"{section}:")
        rows = [(f"  {k}: {value_text(settings[k])}", comment_of(k)) for k in keys]
        width = max(len(r) for r, _ in rows) + 2
        lines += [f"{r:<{width}}# {c}" for r, c in rows]
    return "\n".join(lines) + "\n"


def sweep_text(name: str, plan: Plan, variants: list, head: list[str]) -> str:
    settings = {"epochs": plan.epochs}
    settings |= {"max_samples": plan.max_samples} if plan.max_samples else {}
    settings |= {"max_eval_samples": plan.max_eval_samples} if plan.max_eval_samples else {}
    lines = comment_lines(head)
    lines += [f"name: {value_text(name)}", f"base: {layout.CONFIG}", f"config: {value_text(settings)}", "variants:"]
    rows = [(f"  - {value_text(v)}", about) for v, _, about in variants]
    width = max(len(r) for r, _ in rows) + 2
    lines += [f"{r:<{width}}# {about}" for r, about in rows]
    return "\n".join(lines) + "\n"


def data_path(path: Path) -> str:
    """The data file as the config names it: relative to the current folder when inside it, else absolute."""
    absolute = path.resolve()
    try:
        return absolute.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(absolute)


def default_model(task: str) -> str:
    return "smollm2-135m" if task == "sft" else "minilm-l6"


def init(
    data: str,
    task: str = "",
    text_column: str = "",
    label_column: str = "",
    model: str = "",
    budget: str = "10m",
    out: str = "",
    validation: str = "",
    force: bool = False,
):
    """Detect, measure, size and write OUT/config.yaml and OUT/sweep.yaml; yields the lines to print."""
    from peftlab.models.loading import resolve_model

    seconds = parse_budget(budget)
    path = Path(data)
    folder = Path(out) if out else path.parent / re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)
    name = layout.check_folder_name(re.sub(r"[^A-Za-z0-9._-]+", "_", folder.resolve().name), "--out folder's name")
    written = [folder / layout.CONFIG, folder / layout.INIT_SWEEP]
    if not force and any(p.exists() for p in written):
        raise UserError(
            f"{folder}: already holds {' and '.join(p.name for p in written if p.exists())}; "
            f"give --force to replace them, or --out ANOTHER_FOLDER"
        )
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder}: a file, not a folder")
    det: Detection = detect(path, task, text_column, label_column)
    yield f"read {path}:"
    yield from (f"  {d}" for d in det.decisions)
    settings = {"model": model or default_model(det.task), "train_file": data_path(path)}
    if det.task == "multiple_choice":
        settings["mc_head"] = "classifier"  # a score per question + option: what an encoder can learn
    settings |= det.settings
    if settings["model"] == "minilm-l6":  # the recipes' LoRA/DoRA targets for it, with which their rates work
        settings["lora_target"] = "query,key,value,dense"
    if validation:
        if not Path(validation).is_file():
            raise UserError(f"--validation {validation}: no such file")
        settings["validation_file"] = data_path(Path(validation))
        yield f"  validation: {validation} (you gave it)"
        eval_rows = detect(validation, det.task, settings.get("text_column", ""), settings.get("label_column", "")).rows
        train_rows = det.rows
    else:
        ratio = 0.2 if det.rows < 1000 else 0.1
        settings["validation_ratio"] = ratio
        eval_rows = max(1, round(det.rows * ratio))
        train_rows = det.rows - eval_rows
        yield (
            f"  validation: {eval_rows:,} rows ({ratio:.0%}) split off the file with the seed (no validation "
            f"file given; --validation FILE gives one)"
        )
    resolved = resolve_model(settings["model"])
    causal = det.task == "sft"
    # qa: a context longer than max_length is read in overlapping windows, so max_length needs not cover it
    max_length, p90 = token_lengths(resolved.path, det.texts, 384 if det.task == "qa" else None)
    settings |= {"max_length": max_length, "batch_size": BATCH, "seed": 42}
    fits = "longer contexts are read in windows" if det.task == "qa" else "99% of the rows fit"
    yield f"  max_length: {max_length} ({fits}; 90% are under {p90} tokens)"
    for w in det.warnings:
        yield f"warning: {w}"
    m = measure_step(resolved.path, causal, p90)
    variants = VARIANTS[det.task]
    if det.sequences > 1:  # every option is a sequence of its own
        m.seconds_per_example *= det.sequences
    plan = size_sweep(train_rows, eval_rows, [c for _, c, _ in variants], m, seconds)
    rows = f"{plan.max_samples:,} of {train_rows:,}" if plan.max_samples else f"all {train_rows:,}"
    estimate = [
        f"estimate: {m.seconds_per_example * 1000:.1f} ms per training example for full fine-tuning of "
        f"{settings['model']} ({m.parameters / 1e6:.0f}M parameters), measured here on one step of {BATCH} x "
        f"{m.tokens} tokens"
        + (f" (x {det.sequences} options per example)" if det.sequences > 1 else "")
        + "; LoRA, DoRA and head-only runs are costed from it. An estimate: real runs vary.",
        f"sweep: {len(variants)} runs x {plan.epochs} epochs on {rows} training rows"
        + (f", {plan.max_eval_samples:,} validation rows" if plan.max_eval_samples else "")
        + f": about {duration(plan.seconds)} for a {budget} budget",
    ]
    yield from estimate
    if plan.seconds > seconds * 1.05:
        yield (
            f"warning: {budget} is too short for this model on this machine; the sweep needs about "
            f"{duration(plan.seconds)}"
        )
    if plan.max_samples and plan.max_samples < 200:
        yield f"warning: {plan.max_samples} training rows is few to compare methods on; a longer --budget gives more"
    head = [
        f"Written by `peftlab init {path.name}`: a config for {path.name}. What was decided, and why:",
        *(f"  {d}" for d in det.decisions),
        *(f"  warning: {w}" for w in det.warnings),
        "Change any key (`peftlab train --help` lists them all). Paths are relative to the folder you run",
        "peftlab from. Check the data with `peftlab data check` on this file.",
    ]
    sweep_head = [
        f"Written by `peftlab init {path.name}`: the methods compared on {path.name}, each with the learning",
        "rate it needs, sized to the time budget on the machine that wrote it:",
        *(f"  {line}" for line in estimate),
        "Run it with `peftlab sweep` on this file; raise max_samples or epochs when you have more time.",
    ]
    write_pair(folder, config_text(settings, head), sweep_text(name, plan, variants, sweep_head))
    yield f"wrote {written[0]} and {written[1]}"
    yield f"next: peftlab sweep {shlex.quote(str(written[1]))}"


def write_pair(folder: Path, config: str, sweep: str) -> None:
    """Both files checked by the loaders of `peftlab train` and `peftlab sweep`, then put in place together."""
    from peftlab.sweep.load import load_sweep

    folder.mkdir(parents=True, exist_ok=True)
    tmp = layout.temporary(folder / "init")  # the cleaner's naming rule: a killed init's folder is known
    tmp.mkdir()
    try:
        (tmp / layout.CONFIG).write_text(config, encoding="utf-8")
        (tmp / layout.INIT_SWEEP).write_text(sweep, encoding="utf-8")
        load_config(tmp / layout.CONFIG)
        load_sweep(tmp / layout.INIT_SWEEP, str(tmp / "runs"))
        for name in (layout.CONFIG, layout.INIT_SWEEP):
            os.replace(tmp / name, folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
