"""`peftlab eval SOURCE`: score a base model (zero- or few-shot), a run's best weights, a merged
export or a .gguf file on a task's labeled data, and write an evaluation folder shaped like a run
folder, so that `peftlab report` puts every kind of row in one table.

The folder: config.yaml (resolved), metrics.jsonl (one line, as epoch 0), predictions_<split>.jsonl,
result.json (kind "eval": metrics, wall time, examples/s, input tokens/s, peak memory, size on
disk, the few-shot examples shown, where the weights came from). Nothing is written before the
data, the model and the weights have loaded, and every file is written atomically.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from peftlab.config.settings import Config
from peftlab.data.formats import skipped_lines
from peftlab.errors import UserError
from peftlab.inference.predict import check_out_folder
from peftlab.inference.session import (
    Scored,
    Session,
    Source,
    load_eval_splits,
    open_session,
    read_source,
    score_split,
)
from peftlab.runs import layout
from peftlab.runs.measure import (
    MEMORY_WORDS,
    folder_size_mb,
    git_hash,
    library_versions,
    peak_memory,
    weights_size_mb,
)
from peftlab.runs.rundir import (
    check_overwrite,
    mark_folder,
    read_json,
    read_result,
    write_folder,
    write_jsonl,
    write_result,
    write_yaml,
)


def default_eval_dir(cfg: Config, source: Source, split: str) -> Path:
    """Next to the run folder it evaluates (so a sweep's report sees it), else under output_dir."""
    shots = f"-{cfg.eval.shots}shot" if cfg.eval.shots else ""
    suffix = f"-{split}" if split != "validation" else ""
    if source.kind in ("run", "export"):
        gguf = f"-{Path(cfg.model.model).stem}" if cfg.model.model.endswith(".gguf") else ""
        return source.folder.parent / f"{source.folder.name}{gguf}-eval{shots}{suffix}"
    return Path(cfg.train.output_dir) / f"eval-{cfg.task.task}-{Path(cfg.model.model).stem}{shots}{suffix}"


def row_label(session: Session) -> str:
    """How the row shows in a report when it is not part of a sweep."""
    cfg, source = session.cfg, session.source
    if source.kind == "run":
        return (
            f"{source.result.get('method', 'run')} (adapter)"
            if source.weights.name == layout.ADAPTER
            else str(source.result.get("method", "run"))
        )
    if session.backend == "llamacpp" or cfg.model.model.endswith(".gguf"):
        from peftlab.inference.llamacpp import gguf_file_of

        return f"{gguf_file_of(cfg.model.model).stem} ({session.backend})"
    if source.kind == "export":
        return "merged"
    return f"{cfg.eval.shots}-shot" if cfg.eval.shots else "zero-shot"


def size_on_disk(session: Session) -> dict:
    """MiB of what must be on disk to run this model: base + adapter, a merged folder, or the gguf file."""
    cfg, source = session.cfg, session.source
    if session.backend == "llamacpp":
        from peftlab.inference.llamacpp import gguf_file_of

        return {"size_on_disk_mb": round(gguf_file_of(cfg.model.model).stat().st_size / 2**20, 3)}
    if source.kind == "export":
        # not its GGUF files, nor one another export is writing into it now (a temporary: not the model)
        files = [
            f
            for f in source.folder.iterdir()
            if f.is_file() and f.suffix != ".gguf" and layout.parse_temporary(f.name) is None
        ]
        return {"size_on_disk_mb": round(sum(f.stat().st_size for f in files) / 2**20, 3)}
    base_path = Path(session.resolved.path)
    base = folder_size_mb(base_path) if base_path.is_dir() else None
    if source.kind == "run" and source.weights.name == layout.ADAPTER:
        adapter = weights_size_mb(source.weights)
        return {
            "size_on_disk_mb": None if base is None else round(base + adapter, 3),
            "adapter_size_mb": adapter,
            "base_size_mb": base,
        }
    return {"size_on_disk_mb": base}


def describe_source(session: Session) -> dict:
    source = session.source
    out = {"kind": source.kind, "backend": session.backend, "model": session.cfg.model.model}
    if source.folder:
        out["folder"] = str(source.folder)
    if source.weights:
        out["weights"] = str(source.weights)
    if source.kind == "run":
        out.update(
            run=source.result.get("run_name"),
            run_method=source.result.get("method"),
            run_best_epoch=source.result.get("best_epoch"),
            run_finished_at=source.result.get("finished_at"),  # which training of the run was scored
        )
    elif source.kind == "export":
        note = read_json(source.folder / layout.EXPORT_NOTE, {}) or {}
        out["run_finished_at"] = note.get("run_finished_at") if isinstance(note, dict) else None
    return out


def eval_result(session: Session, split: str, scored: Scored, out_dir: Path, started: float, metric: str) -> dict:
    cfg = session.cfg
    metrics = {"epoch": 0, **scored.metrics}
    n = len(session.encoded[split])
    return {
        "kind": "eval",
        "status": "completed",
        "run_name": out_dir.name,
        "task": cfg.task.task,
        "model": cfg.model.model,
        "method": row_label(session),
        "source": describe_source(session),
        "split": split,
        "shots": cfg.eval.shots,
        "shots_shown": session.shots,
        "metric_for_best": metric,
        "best_epoch": 0,
        "epochs_run": 0,
        "metrics_epoch0": metrics,
        "metrics_best": metrics,
        "metrics_last": metrics,
        "n_evaluated": n,
        "eval_wall_s": round(scored.seconds, 3),
        "examples_per_s": round(n / scored.seconds, 3) if scored.seconds else None,
        "tokens_per_s": round(scored.tokens / scored.seconds, 1) if scored.seconds else None,
        "input_tokens": scored.tokens,
        **peak_memory(cuda=session.backend != "llamacpp"),  # llama.cpp runs on the CPU: torch allocates nothing
        **size_on_disk(session),
        "labels": getattr(session.prepared, "labels", None),
        "trainable_params": 0,
        "total_params": model_params(session),
        "trainable_pct": 0.0,
        "versions": library_versions(),
        "git_hash": git_hash(),
        "wall_time_s": round(time.time() - started, 2),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def model_params(session: Session) -> int | None:
    if session.model is None:
        return None
    return int(sum(p.numel() for p in session.model.parameters()))


def run_eval(
    spec: str | None,
    overrides: list[str],
    split: str = "validation",
    out: str | None = None,
    overwrite: bool = False,
    started: float | None = None,
) -> tuple[dict, Path]:
    """Evaluate; returns (result, evaluation folder). `peftlab eval RUN --export KIND` exports first
    (export/merge.py: export_to_evaluate) and evaluates what that wrote; `started` (unix seconds) is
    then when the export began, which the wall time counts from."""
    started = time.time() if started is None else started
    cfg, source = read_source(spec, overrides)
    out_dir = Path(out) if out else default_eval_dir(cfg, source, split)
    if overwrite:
        check_overwrite(out_dir)  # --overwrite replaces an evaluation or run folder, never any other folder
    check_eval_folder(out_dir, overwrite)
    metric = metric_of(cfg)
    own_validation = bool(cfg.data.train_file or cfg.data.validation_file)  # else it is cut from the scored file
    splits = load_eval_splits(cfg, split)
    tune = split != "validation" and cfg.task.task == "qa" and "null_threshold" not in run_best(source)
    session = open_session(cfg, source, splits, [split, "validation"] if tune else [split])
    print(
        f"peftlab: evaluating {source.describe(cfg)} on {len(session.encoded[split])} {split} examples "
        f"({session.backend}{f', {cfg.eval.shots}-shot' if cfg.eval.shots else ''})",
        flush=True,
    )
    threshold_from = validation_threshold(session, split, own_validation)
    scored = score_split(session, split)
    result = eval_result(session, split, scored, out_dir, started, metric)
    if threshold_from:
        result["null_threshold_from"] = threshold_from
    if skipped := splits["train"].skipped:  # on_bad_lines: skip left rows out (of any split read): say so
        result["skipped_rows"] = {"count": len(skipped), "first": skipped[:20]}
        print("peftlab: " + "\npeftlab: ".join(skipped_lines(skipped)), file=sys.stderr, flush=True)
    write_eval_folder(session, split, scored, result, out_dir)
    return result, out_dir


def run_best(source: Source) -> dict:
    return source.result.get("metrics_best") or {}


def validation_threshold(session: Session, split: str, own_validation: bool) -> str | None:
    """SQuAD 2.0 scored on test (or extra): the no-answer threshold tuned on validation, never on the
    scored split's own answers: a run's recorded one (what its own test evaluation used), else the one
    validation gives when scored now. Returns where it came from; None where no threshold applies."""
    prepared = session.prepared
    if split == "validation" or getattr(prepared, "thresholds", None) is None or not prepared.with_null:
        return None
    if "null_threshold" in run_best(session.source):
        prepared.thresholds["validation"] = float(run_best(session.source)["null_threshold"])
        return f"{session.source.folder}: metrics_best (its validation split)"
    if not own_validation:
        raise UserError(
            f"--split {split}: SQuAD 2.0 decides 'no answer' with a threshold tuned on validation, and this "
            f"config has no validation data but rows cut from the file it scores; set validation_file= "
            f"(or train_file=), or evaluate a run folder, whose threshold is recorded"
        )
    print("peftlab: tuning the no-answer threshold on the validation split first", flush=True)
    score_split(session, "validation")  # the task's metrics tune thresholds["validation"] on its rows
    return "validation split, scored first"


def check_eval_folder(out_dir: Path, overwrite: bool) -> None:
    """The evaluation folder may be written: new, or (with --overwrite) an evaluation folder or an empty
    one. A file, or a folder of something else, is refused before anything loads: --overwrite replaces
    the whole folder, and must never take a user's file or folder with it."""
    check_out_folder(out_dir, "--out")
    if not out_dir.exists():
        return
    if not overwrite:
        raise UserError(f"{out_dir} already exists; pass --overwrite to replace it, or --out another folder")
    try:
        result = read_result(out_dir)
    except UserError:
        result = None
    if any(out_dir.iterdir()) and not (isinstance(result, dict) and result.get("kind") == "eval"):
        raise UserError(
            f"--out {out_dir}: the folder holds something other than an evaluation (no result.json of "
            f"`peftlab eval`), and --overwrite would delete it; name a new folder"
        )


def metric_of(cfg: Config) -> str:
    """The task's metric_for_best, resolved before anything loads (a wrong one fails first)."""
    from peftlab.tasks.registry import task_of
    from peftlab.training.train import resolve_metric

    return resolve_metric(cfg, task_of(cfg))


def write_eval_folder(session: Session, split: str, scored: Scored, result: dict, out_dir: Path) -> None:
    """Every file into a temporary folder first, then one rename: no half-written evaluation folder."""

    def fill(tmp: Path) -> None:
        mark_folder(tmp, "evaluation")
        write_yaml(tmp / layout.CONFIG, session.cfg.to_dict())
        write_jsonl(tmp / layout.METRICS, [result["metrics_epoch0"]])
        session.task.write_predictions(
            tmp / layout.predictions_file(split), session.prepared, split, scored.predictions, session.env
        )
        write_result(tmp, result)

    write_folder(out_dir, fill)


def format_eval_summary(result: dict) -> str:
    shown = [
        k
        for k in ("accuracy", "f1", "mcc", "map@3", "exact_match", "rougeL", "bleu4", "unparsed")
        if k in result["metrics_best"]
    ]
    metric = result["metric_for_best"]
    keys = list(dict.fromkeys([metric, *shown]))
    values = "   ".join(
        f"{k} {result['metrics_best'][k]:.4f}"
        if isinstance(result["metrics_best"].get(k), float)
        else f"{k} {result['metrics_best'].get(k)}"
        for k in keys
        if k in result["metrics_best"]
    )
    size = result.get("size_on_disk_mb")
    return (
        f"eval {result['run_name']}  [{result['method']}] on {result['n_evaluated']} {result['split']} examples\n"
        f"{values}\nwall {result['eval_wall_s']:.1f} s   {result['examples_per_s']} examples/s   "
        f"{result['tokens_per_s']} input tokens/s   peak memory {result['peak_memory_mb']:.0f} MiB "
        f"({MEMORY_WORDS.get(result.get('peak_memory_kind'), 'unknown kind')})   "
        f"size on disk {'-' if size is None else f'{size:.1f} MiB'}"
    )
