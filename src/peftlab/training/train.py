"""`peftlab train`: config -> data + model + method -> transformers.Trainer -> run folder.

Reads top to bottom: everything that can fail on bad input (data, labels, model, method, target
modules) happens before the run folder is created, so bad input leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
import sys
import time
import traceback
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import torch

from peftlab.config.settings import Config
from peftlab.data.formats import skipped_lines
from peftlab.data.mixing import record_mix
from peftlab.data.splits import load_splits
from peftlab.errors import UserError, closest
from peftlab.hardware import cpu_info
from peftlab.models.loading import DTYPES, load_tokenizer, position_limit, resolve_model
from peftlab.models.lora_init import EVA_BATCHES, loraplus_optimizer
from peftlab.models.methods import (
    MethodContext,
    apply_method,
    check_method_settings,
    is_peft,
    method_label,
    method_of,
)
from peftlab.runs import layout
from peftlab.runs.measure import (
    count_parameters,
    git_hash,
    library_versions,
    peak_memory,
    weights_size_mb,
)
from peftlab.runs.rundir import (
    HEAD_FILE,
    WEIGHTS_NOTE,
    check_overwrite,
    clear_leftovers,
    mark_folder,
    read_history,
    read_json,
    read_jsonl,
    read_result,
    run_status,
    save_model,
    saved_config_diff,
    write_jsonl,
    write_result,
    write_yaml,
    written_on_old_scale,
)
from peftlab.tasks.contract import TaskEnv, read_hook
from peftlab.tasks.label_counts import count_train_labels
from peftlab.tasks.registry import task_of
from peftlab.training.callbacks import (
    AdaLoraStep,
    ExtraSplits,
    QuietProgress,
    Recorder,
    TrackerSummary,
    loss_line,
)
from peftlab.training.cost import steps_per_epoch
from peftlab.training.plots import plot_loss
from peftlab.training.pruning import PruneTrial

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
REPORT_TO = ("none", "tensorboard", "mlflow")


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def default_run_name(cfg: Config) -> str:
    model = (
        Path(cfg.model.model).stem if ("/" in cfg.model.model or cfg.model.model.endswith(".gguf")) else cfg.model.model
    )
    name = f"{cfg.task.task}-{model}-{method_label(cfg.method)}-s{cfg.train.seed}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def run_dir_of(cfg: Config) -> Path:
    return Path(cfg.train.output_dir) / (cfg.train.run_name or default_run_name(cfg))


def resolve_metric(cfg: Config, task) -> str:
    metric = task.DEFAULT_METRIC if cfg.eval.metric_for_best == "auto" else cfg.eval.metric_for_best
    renamed = layout.upgrade_metrics({metric: None})
    if metric not in task.METRICS and list(renamed)[0] in task.METRICS:  # an older peftlab's name
        raise UserError(
            f"metric_for_best: '{metric}' is now called '{list(renamed)[0]}' (one name for exact match in every "
            f"task); write metric_for_best: {list(renamed)[0]}"
        )
    if metric not in task.METRICS:
        raise UserError(
            f"metric_for_best: '{metric}' is not a {cfg.task.task} metric{closest(metric, task.METRICS)}; "
            f"choose from {', '.join(task.METRICS)}"
        )
    return metric


def optimizer_names() -> list[str]:
    from transformers.training_args import OptimizerNames

    return [o.value for o in OptimizerNames]


def scheduler_names() -> list[str]:
    from transformers.trainer_utils import SchedulerType

    return [s.value for s in SchedulerType]


def check_choice(key: str, value: str, choices) -> None:
    if value not in choices:
        raise UserError(f"{key}: unknown value '{value}'{closest(value, choices)}; available: {', '.join(choices)}")


def check_at_least(low: int, section, keys: tuple, what: str = "") -> None:
    for key in keys:
        if getattr(section, key) < low:
            raise UserError(f"{key}: must be {what or f'at least {low}'}, got {getattr(section, key)}")


def check_fraction(key: str, value: float) -> None:
    if not 0 <= value < 1:
        raise UserError(f"{key}: {value} must be at least 0 and below 1")


def check_settings(cfg: Config) -> None:
    """Every setting transformers or peft would refuse deep inside (or silently misuse), refused by key
    before any file is read."""
    t, e, d = cfg.train, cfg.eval, cfg.data
    check_method_settings(cfg.method)
    check_choice("precision", t.precision, PRECISIONS)
    check_choice("group_by_length", str(t.group_by_length).lower(), ("auto", "true", "false"))
    check_choice("dtype", cfg.model.dtype, DTYPES)
    check_choice("optim", t.optim, optimizer_names())
    check_choice("lr_scheduler", t.lr_scheduler, scheduler_names())
    check_choice("report_to", t.report_to, REPORT_TO)
    check_at_least(1, t, ("epochs", "batch_size", "grad_accum", "save_steps", "logging_steps"))
    check_at_least(1, e, ("eval_batch_size", "max_new_tokens"))
    check_at_least(0, d, ("max_samples", "max_eval_samples"), "0 (all) or more")
    check_at_least(0, e, ("max_eval_generate", "shots", "early_stopping_patience"), "0 or more")
    if not t.lr >= 0:  # 0 is allowed: it trains nothing and leaves epoch 0's scores (a sanity check)
        raise UserError(f"lr: must be 0 or more, got {t.lr}")
    if t.weight_decay < 0 or t.max_grad_norm < 0:
        raise UserError(f"weight_decay ({t.weight_decay}) and max_grad_norm ({t.max_grad_norm}) must be 0 or more")
    check_fraction("warmup_ratio", t.warmup_ratio)
    if t.run_name:  # the run folder: output_dir is the place (a sweep's names were checked as it planned them)
        layout.check_folder_name(t.run_name, "run_name")
    if t.precision == "bf16" and not bf16_available():
        raise UserError(
            "precision: bf16 needs a GPU that supports it or a CPU with AVX512-BF16 / AMX, and this "
            "machine has neither (bf16 would run emulated, many times slower); use auto or fp32"
        )
    if cfg.task.max_length < 8:
        raise UserError(f"max_length: {cfg.task.max_length} is too short (at least 8 tokens)")


DDP_COMMANDS = (
    "`torchrun --nproc_per_node N -m peftlab train ...` or `accelerate launch --multi_gpu --num_processes N "
    "-m peftlab train ...` (batch_size is per process)"
)


def check_launch() -> None:
    """An FSDP or DeepSpeed `accelerate launch` on a machine without a CUDA GPU, refused before anything is read:
    the run would be plain data-parallel while its config says sharded (docs/guide.md has what was tried).
    accelerate keeps its FSDP plugin only for GPU-like distributed types, never MULTI_CPU, so on CPU every
    fsdp_config setting is dropped without a word; peftlab runs CPU processes as MULTI_CPU (precision_flags),
    which leaves a DeepSpeed config unused too."""
    if torch.cuda.is_available():
        return
    launches = {
        "ACCELERATE_USE_FSDP": ("FSDP", "accelerate shards only on GPUs: on CPU it drops every fsdp_config setting"),
        "ACCELERATE_USE_DEEPSPEED": ("DeepSpeed", "peftlab runs CPU processes as DDP, which leaves its config unused"),
    }
    for env, (what, reason) in launches.items():
        if os.environ.get(env, "false").lower() == "true":
            raise UserError(
                f"this run was started by `accelerate launch` with {what} in its config ({env}=true) on a machine "
                f"without a CUDA GPU: {reason}, so the processes would train plain data-parallel, nothing "
                f"sharded. On CPU run DDP: {DDP_COMMANDS}; for {what}, a machine with GPUs"
            )


def check_max_length(cfg: Config, model) -> None:
    """max_length, with the positions a prompt method's virtual tokens take before the text, within the
    model's position limit; refused before anything is written (beyond it a run trains until the first
    long row and dies there with a traceback, leaving its folder)."""
    found = position_limit(model)
    virtual = cfg.method.num_virtual_tokens if method_of(cfg.method.method).prompt else 0
    if found is None or cfg.task.max_length + virtual <= found[0]:
        return
    limit, why = found
    plus = f" + num_virtual_tokens {virtual}" if virtual else ""
    raise UserError(
        f"max_length: {cfg.task.max_length}{plus} tokens is more than model '{cfg.model.model}' can take in one "
        f"sequence ({limit}: {why}); set max_length: {limit - virtual} or less"
    )


def check_tracker_installed(report_to: str) -> None:
    """The package a report_to integration needs, asked for before anything is read or written (the
    Trainer would fail only once the model is built, with a message about PyTorch versions)."""
    if report_to == "mlflow":
        if importlib.util.find_spec("mlflow") is None:
            raise UserError(
                "report_to: mlflow needs the mlflow package (pip install mlflow-skinny; requirements.txt "
                "pins it), which is not installed; or use report_to: tensorboard or none"
            )
        if os.environ.get("DISABLE_MLFLOW_INTEGRATION", "").upper() == "TRUE":
            raise UserError(
                "report_to: mlflow, but DISABLE_MLFLOW_INTEGRATION=TRUE turns transformers' MLflow "
                "integration off; unset it or use report_to: none"
            )
    if report_to == "tensorboard" and not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        raise UserError(
            "report_to: tensorboard needs the tensorboard package (pip install tensorboard; "
            "requirements.txt pins it), which is not installed; or use report_to: none"
        )


@contextmanager
def tracker_env(report_to: str, run_dir: Path):
    """Where the report_to integration writes, told the way transformers reads it: TensorBoard in
    <run folder>/tensorboard (TENSORBOARD_LOGGING_DIR, read when the Trainer is built; transformers
    5 has no logging_dir argument), MLflow in MLFLOW_TRACKING_URI if the user set one, else a file
    store <run folder>/mlruns (read when its run starts, not ./mlruns). MLflow 3 keeps the file store
    only on request (MLFLOW_ALLOW_FILE_STORE; its sqlite default needs SQLAlchemy, which
    mlflow-skinny lacks), so peftlab's default asks for it. Set for this run only: one process can
    run several (tests)."""
    values = {}
    if report_to == "tensorboard":
        values["TENSORBOARD_LOGGING_DIR"] = str((run_dir / layout.TENSORBOARD).resolve())
    if report_to == "mlflow" and not os.environ.get("MLFLOW_TRACKING_URI"):
        values["MLFLOW_TRACKING_URI"] = (run_dir / layout.MLRUNS).resolve().as_uri()
        values["MLFLOW_ALLOW_FILE_STORE"] = os.environ.get("MLFLOW_ALLOW_FILE_STORE") or "true"
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def add_tracker_summary(trainer, recorder) -> None:
    """TrackerSummary first among the callbacks, before the integrations (see there); add_callback
    would put it last."""
    if trainer.args.report_to:
        handler = trainer.callback_handler
        handler.callbacks.insert(0, TrackerSummary(recorder, handler.callbacks))


def total_steps(n_train: int, t) -> int:
    return steps_per_epoch(n_train, t.batch_size, t.grad_accum, world_size()) * t.epochs


def check_run_dir(run_dir: Path, cfg: Config, resume: bool, overwrite: bool) -> dict | None:
    """Refuse to clobber an existing run folder; returns its result when --resume finds it complete."""
    if overwrite:
        check_overwrite(run_dir)  # a folder peftlab did not write is never deleted
    if not run_dir.exists() or overwrite:
        return None
    old = read_result(run_dir, {}) or {}
    if not resume:
        raise UserError(
            f"{run_dir} already exists (status: {old.get('status', 'unknown')}); "
            f"pass --resume to continue it, --overwrite to start again, or set run_name="
        )
    diff = saved_config_diff(run_dir, cfg)
    if diff:
        raise UserError(
            f"--resume: {run_dir} was run with a different config ({'; '.join(diff)}); "
            f"use the same config, another run_name, or --overwrite"
        )
    if old.get("status") != "completed" and on_old_scale(run_dir):
        raise UserError(
            f"--resume: {run_dir} was started by an older peftlab whose {layout.METRICS} scores are on another "
            f"scale or under other names (0-100 BLEU/ROUGE/exact match, `exact`), so its epochs cannot be compared "
            f"with new ones; run it again with --overwrite, or another run_name"
        )
    return old if old.get("status") == "completed" else None


def on_old_scale(run_dir: Path) -> bool:
    """Whether the folder's metrics.jsonl holds a metric that an older peftlab scored on another scale or name."""
    lines = read_jsonl(run_dir / layout.METRICS)
    return written_on_old_scale(run_dir) and any(layout.upgrade_metrics(line) != line for line in lines)


def create_run_dir(run_dir: Path, cfg: Config, overwrite: bool) -> None:
    if not is_main_process():
        return
    if overwrite:  # checked by check_run_dir before anything loaded (the Trainer may have made it since)
        shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / layout.MARKER).is_file():
        mark_folder(run_dir, "run")
    for line in clear_leftovers(run_dir):  # a killed earlier attempt of this run
        print(f"peftlab: {run_dir.name}: {line} (left by a stopped earlier attempt)", flush=True)
    write_yaml(run_dir / layout.CONFIG, cfg.to_dict())


def last_checkpoint(run_dir: Path) -> Path | None:
    """The latest checkpoint whose finished epochs were all evaluated. A save_steps checkpoint at an
    epoch's last step is written before that epoch's evaluation: resumed from it, a run killed during
    the evaluation would go on with the next epoch, and its metrics.jsonl and best epoch would silently
    lack that one. Such a checkpoint is passed over; the one before it redoes the epoch's last steps."""
    evaluated = {line.get("epoch") for line in read_jsonl(run_dir / layout.METRICS)}
    ckpts = []
    for p in (run_dir / layout.CHECKPOINTS).glob("checkpoint-*"):
        try:
            state = read_json(p / "trainer_state.json")
        except UserError:  # cut short by a kill while the checkpoint was written: an earlier one will do
            continue
        if isinstance(state, dict):
            finished = math.floor((state.get("epoch") or 0) + 1e-6)  # 1.0 at epoch 1's last step
            if all(epoch in evaluated for epoch in range(1, finished + 1)):
                ckpts.append(p)
    return max(ckpts, key=lambda p: int(p.name.split("-")[1]), default=None)


def bf16_available() -> bool:
    """bf16 autocast that runs in hardware: a CUDA GPU with bf16, or a CPU with AVX512-BF16 / AMX."""
    from peftlab.hardware import cpu_has_fast_bf16

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_fast_bf16()


def precision_flags(precision: str) -> dict:
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    # transformers' CPU autocast wants use_cpu; so do CPU processes of one run (accelerate's MULTI_CPU, the only
    # mode in which it wraps the model in DistributedDataParallel without a GPU: else the processes never
    # exchange gradients and each trains its own copy)
    cpu = (precision == "bf16" or world_size() > 1) and not torch.cuda.is_available()
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", **({"use_cpu": True} if cpu else {})}


def group_by_length(cfg: Config, model) -> bool:
    """train.group_by_length resolved (default auto). auto is on for an encoder (a model type with a
    masked-LM head) trained for sentence classification in one process, where three seeds of SST-2 showed
    the same accuracy at half the epoch time; token classification and QA keep uniform batches (no such
    evidence: a 60-step JNLPBA run, tests/test_ner.py, learned nothing with grouped batches); decoders
    keep uniform batches (no such evidence yet; their SFT rows are packed without padding instead), and
    so do multi-process runs (each process would group its own share, and a run would no longer match its
    one-process twin). The grouped order is seeded per epoch (seeded_length_groups), so a resumed run
    matches an uninterrupted one."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    value = str(cfg.train.group_by_length).lower()
    if value != "auto":
        return value == "true"
    config = getattr(model, "config", None)
    encoder = getattr(config, "model_type", None) in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    return world_size() == 1 and encoder and cfg.task.task == "classification"


def ordered_eval_trainer():
    """transformers' Trainer, evaluating in the dataset's order. With group_by_length, transformers 5 also
    length-groups (and shuffles) evaluation batches, so predictions come back in another order than the
    examples: the metrics stay right (labels travel with them), but every file and score that pairs a
    prediction with its example by position (predictions_*.jsonl, the paired tests, QA's windows, NER's
    words) would silently pair the wrong ones."""
    from torch.utils.data import SequentialSampler
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class OrderedEvalTrainer(Trainer):
        def _get_eval_sampler(self, eval_dataset):
            if eval_dataset is None or self.args.world_size > 1:  # distributed: accelerate shards in order
                return super()._get_eval_sampler(eval_dataset)
            return SequentialSampler(eval_dataset)

        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if type(sampler) is LengthGroupedSampler:
                return seeded_length_groups(sampler, self.args.seed)
            return sampler

    return OrderedEvalTrainer


def seeded_length_groups(sampler, seed: int):
    """transformers' length-grouped order, drawn each epoch from a generator seeded by (seed, epoch).
    transformers draws it from the global RNG, whose state when an epoch starts depends on everything
    that ran before; a resumed run restores that state as it was at the checkpoint, mid-epoch, so it drew
    another order than the uninterrupted run and no longer matched it (tests/test_repro_resume_ddp.py)."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

    class SeededLengthGroupedSampler(LengthGroupedSampler):
        def set_epoch(self, epoch: int) -> None:  # accelerate's data loader calls it before each epoch
            self.epoch = int(epoch)

        def __iter__(self):
            generator = torch.Generator().manual_seed(seed * 1_000_003 + getattr(self, "epoch", 0))
            return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))

    return SeededLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths)


def trainer_class(cfg: Config, task, model):
    """The Trainer (evaluating in order), or for a causal-LM loss with train.chunked_loss on a model where it
    is exact, one that computes the loss from the answer tokens only (peftlab.loss). Returns (class, how the
    loss is computed)."""
    from peftlab.training.loss import answer_loss, supports

    Trainer = ordered_eval_trainer()
    if not read_hook(task, "LM_LOSS"):
        return Trainer, None
    why_not = supports(model) if cfg.train.chunked_loss else "chunked_loss: false"
    if why_not:
        return Trainer, f"the model's own, over every position ({why_not})"

    class AnswerLossTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = answer_loss(model, inputs, num_items_in_batch)
            return (out["loss"], out) if return_outputs else out["loss"]

    return AnswerLossTrainer, "answer tokens only, vocabulary in chunks"


def build_trainer(cfg: Config, run_dir: Path, model, tokenizer, task, prepared, encoded, callbacks, env):
    from transformers import PrinterCallback, ProgressCallback, TrainingArguments

    t, e = cfg.train, cfg.eval
    args = TrainingArguments(
        output_dir=str(run_dir / layout.CHECKPOINTS),
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=e.eval_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        optim=t.optim,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        eval_strategy="epoch",
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=1,
        logging_steps=t.logging_steps,
        report_to=t.report_to,
        run_name=run_dir.name,
        gradient_checkpointing=t.gradient_checkpointing,
        include_num_input_tokens_seen="non_padding",
        train_sampling_strategy="group_by_length" if group_by_length(cfg, model) else "random",
        ddp_backend="gloo" if world_size() > 1 and not torch.cuda.is_available() else None,
        dataloader_num_workers=0,
        label_names=list(read_hook(task, "LABEL_NAMES")),
        log_level="warning",
        disable_tqdm=False,
        **precision_flags(t.precision),
    )
    cls, lm_loss = trainer_class(cfg, task, model)
    ratio = cfg.method.loraplus_lr_ratio
    trainer = cls(
        optimizers=(loraplus_optimizer(model, args, ratio) if ratio and is_peft(model) else None, None),
        model=model,
        args=args,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        data_collator=task.build_collator(tokenizer, cfg),
        processing_class=tokenizer,
        compute_metrics=task.build_compute_metrics(prepared, "validation", env),
        callbacks=callbacks,
        preprocess_logits_for_metrics=read_hook(task, "preprocess_logits"),
    )
    env.trainer = trainer
    trainer.peftlab_lm_loss = lm_loss
    # A per-example mean loss (classification heads) must not be rescaled by token counts across
    # devices nor exempted from the division by gradient-accumulation steps; the Trainer does
    # both for any model whose forward takes **kwargs, which is meant for summed LM losses.
    trainer.model_accepts_loss_kwargs = task.TOKEN_LEVEL_LOSS
    trainer.remove_callback(PrinterCallback)
    # the console's bars without the log dicts printed under them; where transformers chose another display
    # (its notebook table and bars in Jupyter, for peftlab.train), that one stays
    if any(type(c) is ProgressCallback for c in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(QuietProgress)
    return trainer


def unmark_prepared(trainer) -> None:
    """After trainer.evaluate() and before trainer.train() of a run in several processes: the evaluation had
    accelerate prepare the model for inference and mark it prepared, and train()'s prepare then hands the mark
    back unwrapped: no DistributedDataParallel, no gradient all-reduce, each process trains its own copy on its
    share of the batches (rank 0's is saved). Forgetting the mark lets train() wrap the model."""
    model = trainer.model
    if world_size() == 1 or not getattr(model, "_is_accelerate_prepared", False):
        return
    trainer.accelerator._models = [m for m in trainer.accelerator._models if m is not model]
    del model._is_accelerate_prepared
    if "_original_forward" in model.__dict__:  # mixed precision: the autocast wrapper, put on again by train()
        model.forward = model.__dict__.pop("_original_forward")


def weights_note(cfg: Config, resolved, model, notes: dict, prepared) -> dict:
    """What a run's model/ or head/ folder says about loading it (peftlab_weights.json, README.md)."""
    from peftlab.models.loading import auto_class_of

    return {
        "run": run_dir_of(cfg).name,
        "method": cfg.method.method,
        "base_model": cfg.model.model,
        "base_path": resolved.path,
        "auto_class": auto_class_of(model),
        "pooling": notes.get("pooling"),
        "labels": list(getattr(prepared, "labels", None) or []),
    }


def load_best(model, folder: Path) -> None:
    """Put the best epoch's weights (saved by the Recorder) back into the model, strictly: a key the
    model lacks, or a trained parameter the file lacks, is an error (a silent partial restore would
    report the best epoch's score for weights that are not the best epoch's)."""
    from safetensors.torch import load_file

    if is_peft(model):
        from peft import set_peft_model_state_dict

        saved = folder / "adapter_model.safetensors"
        result = set_peft_model_state_dict(model, load_file(saved))
        prompt = model.active_peft_config.is_prompt_learning
        # prompt-learning adapters are saved as their prompt encoder's output (p-tuning's MLP applied);
        # peft uses them as such only in inference mode, which is all that follows the reload
        if prompt:
            model.active_peft_config.inference_mode = True
        # the prompt is loaded into the prompt encoder apart from load_state_dict, which reports it as unused
        check_restored(model, saved, result, skip=("prompt_encoder.", "prompt_embeddings") if prompt else ())
    elif (folder / HEAD_FILE).is_file():  # the head method: its trained parameters, the base is loaded already
        saved = folder / HEAD_FILE
        state = load_file(saved)
        result = model.load_state_dict(state, strict=False)
        listed = set(read_json(folder / WEIGHTS_NOTE, {}).get("tensors", state))
        if result.unexpected_keys or listed != set(state):
            raise RuntimeError(
                f"{saved}: the head does not fit the model (not in the model: "
                f"{sorted(result.unexpected_keys)[:3]}; listed in {WEIGHTS_NOTE} but not in the file: "
                f"{sorted(listed - set(state))[:3]})"
            )
    else:
        saved = folder / "model.safetensors"
        state = load_file(saved)
        for pattern, name in getattr(model, "peftlab_key_mapping", {}).items():
            state = {re.sub(pattern, name, k): v for k, v in state.items()}
        check_restored(model, saved, model.load_state_dict(state, strict=False))


def check_restored(model, saved: Path, result, skip: tuple = ()) -> None:
    """A restore is whole when nothing in the file went unused and every trained parameter came from
    it. A parameter tied to another (an LM head sharing the embeddings) is saved once, under either
    name, so a missing name whose tensor is shared with a restored one is not a gap."""
    tensors = dict(model.named_parameters(remove_duplicate=False))
    restored = {tensors[k].data_ptr() for k in tensors if k not in set(result.missing_keys)}
    gaps = [
        k
        for k in result.missing_keys
        if k in tensors
        and tensors[k].requires_grad
        and tensors[k].data_ptr() not in restored
        and not any(s in k for s in skip)
    ]
    unused = [k for k in result.unexpected_keys if not any(s in k for s in skip)]
    if unused or gaps:
        raise RuntimeError(
            f"{saved}: the best weights do not restore whole (not in the model: "
            f"{sorted(unused)[:3]}; trained but not in the file: {gaps[:3]})"
        )


def run(cfg: Config, resume: bool = False, overwrite: bool = False, trial: dict | None = None) -> dict:
    """Train and evaluate one configuration; returns the result dict also written to result.json.
    `trial`: a sweep search's Optuna trial (training/pruning.py), which may stop the run early."""
    with tracker_env(cfg.train.report_to, run_dir_of(cfg)):
        return train_run(cfg, resume, overwrite, trial)


def train_run(cfg: Config, resume: bool, overwrite: bool, trial: dict | None = None) -> dict:
    """run() within the report_to integration's environment."""
    from transformers import set_seed

    started = time.time()
    task = task_of(cfg)
    check_settings(cfg)
    check_launch()
    check_tracker_installed(cfg.train.report_to)
    metric = resolve_metric(cfg, task)
    run_dir = run_dir_of(cfg)
    finished = check_run_dir(run_dir, cfg, resume, overwrite)
    if finished:
        print(f"peftlab: {run_dir} is already complete; nothing to do", flush=True)
        return finished
    splits = load_splits(cfg.data, cfg.train.seed)
    resolved = resolve_model(cfg.model.model, cfg.model.cache_dir)
    tokenizer = load_tokenizer(resolved.path, cfg.model.trust_remote_code)
    prepared = task.prepare(splits, cfg)
    encoded = {name: task.encode(ex, tokenizer, cfg) for name, ex in prepared.examples.items()}
    set_seed(cfg.train.seed)
    model, notes = task.build_model(resolved, prepared, cfg, tokenizer)
    check_max_length(cfg, model)
    set_seed(cfg.train.seed)
    batches = partial(first_batches, encoded["train"], task.build_collator(tokenizer, cfg), cfg.train.batch_size)
    ctx = MethodContext(task.TASK_TYPE, total_steps(len(encoded["train"]), cfg.train), resolved.path, batches)
    model = apply_method(model, cfg.method, ctx)
    params = count_parameters(model)

    main = is_main_process()
    method = method_of(cfg.method.method)
    head_only = method.head_only and not is_peft(model)
    note = None if is_peft(model) else weights_note(cfg, resolved, model, notes, prepared)
    weights_dir = run_dir / (layout.ADAPTER if is_peft(model) else layout.HEAD if head_only else layout.MODEL)
    ckpt = last_checkpoint(run_dir) if resume else None
    recorder = Recorder(
        run_dir / layout.METRICS,
        metric,
        cfg.eval.early_stopping_patience,
        main,
        save_best=lambda m, line: save_model(m, tokenizer, weights_dir, note, head_only, evaluation=line),
        resume_from=ckpt,
        select_last=method.prunes_ranks,
        saved=read_json(weights_dir / layout.BEST_EVALUATION) if ckpt else None,  # which evaluation is on disk
    )
    env = TaskEnv(cfg, tokenizer)
    # splits besides train/validation/test are scored with every validation evaluation (before the Recorder)
    more = {s: d for s, d in encoded.items() if s not in ("train", "validation", "test")}
    callbacks = [ExtraSplits(env, more, lambda s: task.build_compute_metrics(prepared, s, env))] if more else []
    callbacks += [recorder] + ([AdaLoraStep()] if method.prunes_ranks else [])
    pruning = PruneTrial(trial, metric, read_history(run_dir) if ckpt else []) if trial else None
    callbacks += [pruning] if pruning else []
    trainer = build_trainer(cfg, run_dir, model, tokenizer, task, prepared, encoded, callbacks, env)
    add_tracker_summary(trainer, recorder)
    if trainer.peftlab_lm_loss:
        notes["lm_loss"] = trainer.peftlab_lm_loss
    if mix := record_mix(splits["train"]):  # several training files: what each gave
        notes["train_files"] = mix
    if skipped := splits["train"].skipped:  # on_bad_lines: skip
        notes["skipped_rows"] = {"count": len(skipped), "first": skipped[:20]}
        print("peftlab: " + "\npeftlab: ".join(skipped_lines(skipped)), file=sys.stderr, flush=True)
    create_run_dir(run_dir, cfg, overwrite)  # the first write to disk
    base = describe_run(cfg, run_dir, metric, params, notes, prepared, encoded)
    if main:
        write_result(run_dir, {"status": "running", **base})
        print(
            f"peftlab: {run_dir.name}: {params['trainable_params']:,} of {params['total_params']:,} parameters "
            f"trainable ({params['trainable_pct']:.2f}%), {len(encoded['train'])} train / "
            f"{len(encoded['validation'])} validation examples",
            flush=True,
        )
    try:
        if cfg.eval.eval_at_start and not recorder.has_epoch(0):
            trainer.evaluate()
            unmark_prepared(trainer)
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
        trainer.accelerator.wait_for_everyone()  # rank 0 has written the best weights
        if weights_dir.exists():
            load_best(model, weights_dir)
        # a pruned trial is not the search's choice: its predictions would cost a pass over every split for nothing
        pruned = {"pruned": pruning.pruned} if pruning and pruning.pruned else {}
        extra = {} if pruned else finish_predictions(trainer, task, prepared, encoded, run_dir, main, env)
        result = {
            "status": "completed",
            **base,
            **pruned,
            **recorder.summary(),
            **extra,
            **measure_run(trainer, recorder, len(encoded["train"]), weights_dir),
            "optimizer_steps": trainer.state.global_step,
            "resumed": ckpt is not None,
            "wall_time_s": round(time.time() - started, 2),
        }
        if main:  # result.json last: a run is complete only when everything it promises is on disk
            plot_loss(trainer.state.log_history, f"{run_dir.name}", run_dir / layout.LOSS_PLOT)
            write_jsonl(run_dir / layout.TRAIN_LOG, [loss_line(h) for h in trainer.state.log_history if "loss" in h])
            result["timeline"]["finished"] = round(time.time(), 3)  # the run's end: its last file is written now
            write_result(run_dir, result)
    except KeyboardInterrupt:
        if main and run_status(run_dir) != "completed":  # a Ctrl-C just after the last write keeps the result
            write_result(run_dir, {"status": "interrupted", **base, "error": "interrupted; run again with --resume"})
        raise
    except Exception as exc:  # a full disk included: the reason is recorded, the best weights so far stay
        if main:
            write_result(
                run_dir,
                {
                    "status": "failed",
                    **base,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=8),
                },
            )
        raise
    if main and not cfg.train.keep_checkpoints:
        shutil.rmtree(run_dir / layout.CHECKPOINTS, ignore_errors=True)
    return result


def measure_run(trainer, recorder, n_train: int, weights_dir: Path) -> dict:
    """Throughput, memory, sizes and provenance of a finished run."""
    return {
        "train_tokens": trainer.state.num_input_tokens_seen,
        "train_tokens_per_s": recorder.rate(trainer.state.num_input_tokens_seen),
        "train_samples_per_s": recorder.rate(n_train * recorder.epochs_trained()),
        **peak_memory(),
        "adapter_dir": weights_dir.name,
        **timeline(recorder),
        "adapter_size_mb": weights_size_mb(weights_dir) if weights_dir.exists() else None,
        "world_size": world_size(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32",
        "group_by_length": trainer.args.train_sampling_strategy == "group_by_length",
        **cpu_info(),
        "torch_threads": torch.get_num_threads(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def timeline(recorder) -> dict:
    """When this process started (a sweep's warm-started child: when it was told to go) and began its first
    optimizer step (unix seconds); run() adds when it finished, as it writes result.json: what a sweep's
    gaps between runs are measured from (bench/run.py job e)."""
    import peftlab

    started, first = peftlab.PROCESS_STARTED, recorder.first_step_at
    warm = {"warm_started": round(peftlab.WARM_STARTED, 3)} if peftlab.WARM_STARTED else {}
    return {
        "timeline": {"process_started": round(started, 3), **warm, "first_step": first and round(first, 3)},
        "time_to_first_step_s": first and round(first - started, 2),
    }


def describe_run(cfg: Config, run_dir: Path, metric: str, params: dict, notes: dict, prepared, encoded) -> dict:
    """The result.json fields known before training starts."""
    rule = (
        "last epoch (AdaLoRA prunes ranks until the end)"
        if method_of(cfg.method.method).prunes_ranks
        else ("min" if metric == "loss" else "max")
    )
    return {
        "run_name": run_dir.name,
        "task": cfg.task.task,
        "model": cfg.model.model,
        "method": cfg.method.method,
        "method_label": method_label(cfg.method),
        **{k: getattr(cfg.method, k) for k in ("lora_init", "loraplus_lr_ratio", "method_args")},
        "metric_for_best": metric,
        "best_epoch_rule": rule,
        **params,
        **notes,
        "labels": getattr(prepared, "labels", None),
        "label_counts_train": count_train_labels(prepared),  # the report's majority-class baseline
        **getattr(prepared, "notes", {}),
        "n_train": len(encoded["train"]),
        "n_validation": len(encoded["validation"]),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # the code that makes the numbers, in every result.json (failed ones too): a sweep reruns a run of
        # another peftlab version with --rerun-changed, and a report names the code of each run it shows
        "versions": library_versions(),
        "git_hash": git_hash(),
    }


def first_batches(dataset, collator, batch_size: int):
    """The first EVA_BATCHES collated training batches, in order (the data-driven LoRA initialisations'
    pass before training: forward only)."""
    rows = [dataset[i] for i in range(min(len(dataset), EVA_BATCHES * batch_size))]
    return [collator(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]


def finish_predictions(trainer, task, prepared, encoded, run_dir: Path, main: bool, env) -> dict:
    """With the best weights loaded: write the predictions of every split but train; score the test split."""
    extra = {}
    for split in [s for s in encoded if s != "train"]:
        trainer.compute_metrics = task.build_compute_metrics(prepared, split, env)
        out = trainer.predict(encoded[split], metric_key_prefix=split)
        if main:
            task.write_predictions(run_dir / layout.predictions_file(split), prepared, split, out.predictions, env)
        if split == "test":
            extra["metrics_test"] = {k[5:]: v for k, v in out.metrics.items() if k.startswith("test_")}
    return extra
