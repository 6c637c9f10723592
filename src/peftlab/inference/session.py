"""Inference outside training: the one path that `peftlab eval`, `predict` and `export` share with the
evaluation done during training.

A task's inference is its own hooks — prepare (prompts, labels), encode, build_compute_metrics (which
for the generating ways generates and parses) and write_predictions — run through a transformers
Trainer that never trains (`Trainer.predict`, as train.py does for the best weights). So a prompt, a
parse rule or a metric exists once, and an evaluation scores exactly what training's epoch 0 scored.
The llama.cpp backend (gguf files) replaces only the model call; see inference/llamacpp.py.

Where the model comes from (`read_source`):
  config   a YAML config and/or key=value: its `model` (named, HF folder, hub id, .gguf), untrained
  run      a run folder: its config.yaml, its best weights (adapter/ or head/ on the base, or model/)
  export   a folder written by `peftlab export --merge` (peftlab.json + config.yaml + the model)
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from peftlab.config.settings import Config, load_config
from peftlab.data.formats import Split
from peftlab.data.splits import load_splits
from peftlab.errors import UserError
from peftlab.inference.tokens import count_tokens
from peftlab.models.loading import ResolvedModel, load_tokenizer, resolve_model
from peftlab.runs import layout
from peftlab.runs.rundir import read_json, read_result
from peftlab.tasks.contract import TaskEnv
from peftlab.tasks.registry import task_of
from peftlab.tasks.shots import apply_shots
from peftlab.training.callbacks import SKIP_KEYS

BACKENDS = ("auto", "transformers", "llamacpp")


@dataclass
class Source:
    kind: str  # config | run | export
    folder: Path | None = None  # the run or export folder
    weights: Path | None = None  # a run's adapter/ or model/ folder
    result: dict = field(default_factory=dict)  # the run's result.json (labels, pooling)

    def describe(self, cfg: Config) -> str:
        if self.kind == "config":
            return f"base model {cfg.model.model}"
        return f"{self.kind} {self.folder}"


def read_source(spec: str | None, overrides: list[str]) -> tuple[Config, Source]:
    """Config and model source from a run folder, an export folder, a .gguf next to an export, or a YAML."""
    path = Path(spec) if spec else None
    if spec and "=" in spec and not path.exists():
        return load_config(None, [spec, *overrides]), Source("config")
    if path is None or path.suffix in (".yaml", ".yml"):
        return load_config(path, overrides), Source("config")
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"{path}: GGUF file not found")
        note = path.parent / layout.EXPORT_NOTE
        if not note.is_file():
            raise UserError(
                f"{path}: a bare GGUF file says nothing about the task; give a config instead "
                f"(`peftlab eval my.yaml model={path}`), or export it with `peftlab export` so that "
                f"peftlab.json and config.yaml sit beside it"
            )
        return load_config(path.parent / layout.CONFIG, [f"model={path}", *overrides]), Source("export", path.parent)
    if not path.is_dir():
        raise UserError(f"{path}: not a run folder, an export folder, a .gguf file nor a YAML config")
    if (path / layout.EXPORT_NOTE).is_file():
        return load_config(path / layout.CONFIG, [f"model={path}", *overrides]), Source("export", path)
    if not (path / layout.RESULT).is_file() or not (path / layout.CONFIG).is_file():
        raise UserError(
            f"{path}: no result.json and config.yaml; pass a run folder written by `peftlab train`, a "
            f"folder written by `peftlab export`, or a YAML config"
        )
    result = read_result(path)
    if not isinstance(result, dict):
        raise UserError(f"{path / layout.RESULT}: cannot be read; the run folder is damaged (train it again)")
    if result.get("kind") == "eval":
        raise UserError(
            f"{path}: an evaluation folder holds scores, not weights; pass the run folder it evaluated "
            f"({(result.get('source') or {}).get('folder') or (result.get('source') or {}).get('model')})"
        )
    if result.get("status") != "completed":
        raise UserError(
            f"{path}: the run is {result.get('status', 'unknown')}, so its weights are not its final best; "
            f"finish it with `peftlab train {path / layout.CONFIG} --resume`"
        )
    weights = next((path / d for d in layout.WEIGHT_DIRS if (path / d).is_dir()), None)
    if weights is None:
        raise UserError(
            f"{path}: no adapter/ or model/ folder (status: {result.get('status', 'unknown')}); "
            f"the run saved no weights: finish it with `peftlab train {path / layout.CONFIG} --resume`"
        )
    cfg = load_config(path / layout.CONFIG, overrides)
    return cfg, Source("run", path, weights, result)


def pick_backend(cfg: Config) -> str:
    backend = cfg.eval.backend
    if backend not in BACKENDS:
        raise UserError(f"backend: '{backend}' is not one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "llamacpp" if cfg.model.model.endswith(".gguf") else "transformers"
    elif backend == "llamacpp" and not cfg.model.model.endswith(".gguf") and cfg.model.model not in gguf_named():
        raise UserError(
            f"backend: llamacpp runs .gguf files; model '{cfg.model.model}' is not one (export one "
            f"with `peftlab export RUN --gguf q8_0`)"
        )
    if backend == "llamacpp" and cfg.task.task == "multiple_choice" and cfg.task.mc_head == "classifier":
        raise UserError(
            "backend llamacpp: multiple choice by a trained classifier head: the head has no GGUF form; "
            "use mc_head: likelihood or generate, or backend: transformers"
        )
    return backend


def gguf_named() -> list[str]:
    from peftlab.models.loading import NAMED_MODELS

    return [n for n, m in NAMED_MODELS.items() if m.path.endswith(".gguf")]


@dataclass
class Session:
    """Everything needed to score splits: the task, its prepared examples and the model."""

    cfg: Config
    source: Source
    task: object
    prepared: object
    tokenizer: object
    encoded: dict
    env: TaskEnv
    backend: str
    resolved: ResolvedModel
    shots: list = field(default_factory=list)
    model: object = None
    trainer: object = None


def resolve_for(cfg: Config, source: Source) -> ResolvedModel:
    """The model folder to load: a run's model/ keeps the pooling the run used (from result.json)."""
    resolved = resolve_model(cfg.model.model, cfg.model.cache_dir) if cfg.model.model else None
    if source.kind == "run" and source.weights.name == layout.MODEL:
        pooling = source.result.get("pooling") or (resolved.pooling if resolved else "auto")
        return ResolvedModel(cfg.model.model, str(source.weights), pooling, "folder")
    if resolved is None:
        raise UserError("model: not set; name a model (e.g. model=smollm2-135m), a folder or a .gguf file")
    if source.kind == "export":
        note = read_json(source.folder / layout.EXPORT_NOTE, {}) or {}
        return dataclasses.replace(resolved, pooling=note.get("pooling") or resolved.pooling)
    return resolved


def open_session(cfg: Config, source: Source, splits: dict[str, Split], evaluated: list[str]) -> Session:
    """Prepare the splits (with few-shot prompts), encode the evaluated ones and load the model."""
    from peftlab.training.train import check_max_length, check_settings

    task = task_of(cfg)
    check_settings(cfg)  # the same refusals as `peftlab train` (eval_batch_size 0, shots < 0, ...)
    backend = pick_backend(cfg)
    if source.result.get("labels") and not cfg.data.label_names:
        cfg.data.label_names = list(source.result["labels"])  # the run's label order, whatever the data shows
    resolved = (
        resolve_for(cfg, source)
        if backend == "transformers"
        else ResolvedModel(cfg.model.model, gguf_tokenizer_folder(cfg), "last", "gguf")
    )
    tokenizer = load_tokenizer(resolved.path, cfg.model.trust_remote_code)
    prepared = task.prepare(splits, cfg)
    shots = apply_shots(prepared.examples, cfg.eval.shots, cfg.train.seed, evaluated)
    encoded = {s: task.encode(prepared.examples[s], tokenizer, cfg) for s in evaluated}
    env = TaskEnv(cfg, tokenizer)
    session = Session(cfg, source, task, prepared, tokenizer, encoded, env, backend, resolved, shots)
    if backend == "transformers":
        session.model = load_model(session)
        check_max_length(cfg, session.model)  # max_length=... on the command line: refused before any row is scored
        session.trainer = build_eval_trainer(session)
    return session


def gguf_tokenizer_folder(cfg: Config) -> str:
    """The HF tokenizer of a .gguf model: prompts are tokenized by the same tokenizer on both backends."""
    spec = cfg.model.model
    folder = Path(spec).parent
    note = read_json(folder / layout.EXPORT_NOTE, None) if spec.endswith(".gguf") else None
    if isinstance(note, dict) and (folder / "tokenizer_config.json").is_file():
        return str(folder)  # an export folder: its tokenizer sits beside the gguf files
    return resolve_model(spec, cfg.model.cache_dir).path  # dequantized once and cached, tokenizer included


def load_model(session: Session):
    """The task's model on the resolved weights; a run's adapter is put on it with plain peft."""
    cfg, source = session.cfg, session.source
    model, _ = session.task.build_model(session.resolved, session.prepared, cfg, session.tokenizer)
    if source.kind == "run" and source.weights.name == layout.ADAPTER:
        model = load_adapter(model, source.weights, cfg)
    elif source.kind == "run" and source.weights.name == layout.HEAD:  # the trained head on its base
        from peftlab.training.train import load_best

        load_best(model, source.weights)
    model.eval()
    return model


def load_adapter(model, folder: Path, cfg: Config):
    from peft import PeftConfig, PeftModel

    saved = PeftConfig.from_pretrained(str(folder))
    base = Path(str(saved.base_model_name_or_path or "")).name
    try:
        model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
        if saved.peft_type == "ADALORA":  # the task's loss, as the run's evaluations report it
            from peftlab.models.methods import regularize_only_in_training

            regularize_only_in_training(model.base_model)
        return model
    except (RuntimeError, ValueError, KeyError) as e:
        raise UserError(
            f"{folder}: the adapter does not fit model '{cfg.model.model}' (it was trained on "
            f"'{base or 'unknown'}'): {str(e).splitlines()[0][:300]}; evaluate the run folder with "
            f"the model it was trained on"
        ) from None


def build_eval_trainer(session: Session):
    """train.build_trainer with nothing to train: the same collator, metrics hooks and precision."""
    import tempfile

    from peftlab.training.train import build_trainer

    split = next(iter(session.encoded))
    encoded = {"train": session.encoded[split], "validation": session.encoded[split]}
    folder = Path(tempfile.mkdtemp(prefix="peftlab-eval-"))  # the Trainer wants an output_dir; nothing lands there
    # predict() logs nothing, and a run's report_to must not ask an evaluation for the tracker's package
    quiet = dataclasses.replace(session.cfg, train=dataclasses.replace(session.cfg.train, report_to="none"))
    trainer = build_trainer(
        quiet, folder, session.model, session.tokenizer, session.task, session.prepared, encoded, [], session.env
    )
    shutil.rmtree(folder, ignore_errors=True)  # predict() never writes to it
    return trainer


@dataclass
class Scored:
    metrics: dict
    predictions: object  # what the task's write_predictions takes (logits, scores, ...)
    seconds: float
    tokens: int  # input tokens processed (non-padding)


def score_split(session: Session, split: str) -> Scored:
    """Metrics and raw predictions of one split, from the task's own hooks."""
    tokens = count_tokens(session.encoded[split])
    started = time.perf_counter()
    if session.backend == "llamacpp":
        from peftlab.inference.llamacpp import score_split_llamacpp

        metrics, predictions = score_split_llamacpp(session, split)
    else:
        trainer = session.trainer
        trainer.compute_metrics = session.task.build_compute_metrics(session.prepared, split, session.env)
        out = trainer.predict(session.encoded[split], metric_key_prefix=split)
        predictions = out.predictions
        metrics = {k[len(split) + 1 :]: v for k, v in out.metrics.items() if k.startswith(f"{split}_")}
    seconds = time.perf_counter() - started
    for key in SKIP_KEYS - {"epoch"}:  # the Trainer's timings; ours are measured around the whole scoring
        metrics.pop(key, None)
    return Scored(metrics, predictions, seconds, tokens)


EVAL_SPLITS = ("validation", "test", "extra")


def load_eval_splits(cfg: Config, split: str) -> dict:
    """The run's splits; without a train_file the evaluated file also gives the label set (no shots then)."""
    if split not in EVAL_SPLITS:
        raise UserError(f"--split: '{split}' is not one of {', '.join(EVAL_SPLITS)}")
    data = cfg.data
    if not data.train_file:
        file = {"validation": data.validation_file, "test": data.test_file, "extra": data.extra_eval_file}[split]
        if not file:
            raise UserError(
                f"{split}: no file to evaluate; set validation_file= (and train_file= for few-shot "
                f"examples and the label set)"
            )
        data.train_file = file
        if cfg.eval.shots:
            raise UserError("shots: few-shot examples come from train_file, which is not set")
    splits = load_splits(data, cfg.train.seed)
    if split not in splits:
        key = {"test": "test_file` or `test_ratio", "extra": "extra_eval_file"}.get(split, "validation_file")
        raise UserError(f"--split {split}: `{key}` is not set in the config")
    return splits
