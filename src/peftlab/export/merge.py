"""`peftlab export RUN`: what comes after training, one flag each.

  --merge          fold the adapter into its base (peft's merge_and_unload) and write a standard HF
                   folder: safetensors, tokenizer, generation config, the task head, plus peftlab.json
                   (task, labels, pooling) and config.yaml, so `peftlab eval FOLDER` scores it as the
                   run did. Prompt-learning adapters (prompt/p-tuning) have nothing to fold: they are
                   exported as the adapter, with a note.
  --adapter-only   a copy of the adapter alone (the `saved_model/` graders load with plain peft).
  --gguf TYPES     GGUF files from the merged model (llama.cpp's converter and quantizer), written
                   beside it; `peftlab eval FOLDER/model-q8_0.gguf` runs one through llama.cpp.
Every output folder is written under a temporary name and renamed when complete, holding its lock
(export_lock): exports of one run side by side (a sweep's merged, f16, q8_0 and q4_0 rows on
`--workers 4` or Ray) take turns, and the later ones reuse what the first wrote.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path

from peftlab.errors import UserError
from peftlab.inference.session import Session, open_session, read_source
from peftlab.models.loading import auto_class_of
from peftlab.models.methods import is_peft, method_of
from peftlab.runs import layout
from peftlab.runs.rundir import (
    MEAN_POOLING_NOTE,
    check_overwrite,
    mark_folder,
    read_result,
    write_folder,
    write_json,
    write_text,
    write_yaml,
)

_HELD = threading.local()  # the export folders whose lock this thread holds (ensure_export -> run_export)


@contextmanager
def export_lock(folder: Path):
    """Hold one export folder's lock (flock on layout.export_lock beside it) while the folder is checked and
    written. Without it, four evaluations of one run started side by side each found no current export,
    each wrote the merged folder and replaced it, and the GGUF files another had just written into it,
    under one another (a failed rename, or an evaluation of a file that was gone). Reentrant within a
    thread: ensure_export holds it across run_export. The holder removes the file as it lets go, so nothing
    is left beside the user's folder; a waiter that got the lock of a removed file tries again. The kernel
    drops the lock of a process that dies, so a file a killed holder left never blocks."""
    folder = Path(folder).resolve()
    held = _HELD.__dict__.setdefault("folders", set())
    if folder in held:
        yield
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.with_name(layout.export_lock(folder.name))
    while True:
        fh = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "unknown"
            print(f"export: waiting for another export of {folder} (pid {pid}) to finish", flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            if os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino:
                break  # the file still at `path`: the lock every other exporter asks for
        except FileNotFoundError:
            pass
        fh.close()  # its holder removed it as it let go: ask for the lock of the file there now
    held.add(folder)
    try:
        fh.truncate(0)
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        held.discard(folder)
        path.unlink(missing_ok=True)  # before the lock goes: a waiter then sees that its file is gone
        fh.close()


def loader_note(note: dict) -> str:
    """README.md of an export folder: how to load it without peftlab."""
    pooling = note.get("pooling")
    lines = [
        f"# {note['from_run']} — exported by peftlab ({'merged' if note['merged'] else 'adapter'})",
        "",
        f"Task `{note['task']}`, method `{note['method']}`, base `{note['base_model']}`.",
        "",
        "Score it as the run did: `peftlab eval <this folder>` (reads peftlab.json and config.yaml).",
        "",
    ]
    if note["merged"]:
        lines += [f"Plain transformers: `{note['auto_class']}.from_pretrained(<this folder>)`."]
    else:
        lines += ["Plain peft: `PeftModel.from_pretrained(<base model>, <this folder>)` on the base named above."]
    if pooling == "mean":
        lines += ["", MEAN_POOLING_NOTE]
    if note.get("task") == "classification" and note.get("classify_by") in ("likelihood", "generate"):
        lines += [
            "",
            f"Labels are predicted by `{note['classify_by']}` scoring of the label words "
            f"{note.get('label_words')}: a causal LM, the prompts are in config.yaml.",
        ]
    return "\n".join(lines) + "\n"


def describe(session: Session, merged: bool) -> dict:
    cfg, result = session.cfg, session.source.result
    model = session.model
    base = getattr(model, "get_base_model", lambda: model)()
    return {
        "from_run": str(session.source.folder),
        "task": cfg.task.task,
        "classify_by": cfg.task.classify_by,
        "method": result.get("method"),
        "base_model": cfg.model.model,
        "merged": merged,
        "labels": result.get("labels"),
        "pooling": result.get("pooling"),
        "label_words": result.get("label_words"),
        "auto_class": auto_class_of(base),
        "best_epoch": result.get("best_epoch"),
        "metrics_best": result.get("metrics_best"),
        "run_finished_at": result.get("finished_at"),
    }  # which training of the run this is (see ensure_export)


def write_merged(session: Session, out: Path) -> str:
    """The merged model (or, for prompt learning, the adapter) + tokenizer + peftlab.json + config.yaml."""
    model, method = session.model, session.source.result.get("method")
    merged = not is_peft(model) or method_of(method).can_merge
    if is_peft(model) and merged:
        try:
            model = model.merge_and_unload()
        except (ValueError, NotImplementedError) as e:  # peft's own refusal (BEFT on a model without biases)
            raise UserError(
                f"export --merge: peft cannot merge this {method} adapter into {type(model.get_base_model()).__name__}"
                f" ({e}); export it with --adapter-only and load it with peft"
            ) from None
    note = describe(session, merged)
    cfg = session.cfg.to_dict()
    cfg["model"]["model"] = ""  # the folder itself is the model (`peftlab eval` fills it in)

    def fill(tmp: Path) -> None:
        mark_folder(tmp, "export")
        model.save_pretrained(tmp)
        session.tokenizer.save_pretrained(tmp)
        write_json(tmp / layout.EXPORT_NOTE, note)
        write_yaml(tmp / layout.CONFIG, cfg)
        write_text(tmp / layout.LOADER_README, loader_note(note))

    write_folder(out, fill)
    if merged:
        return f"merged {method} into {note['auto_class']} -> {out}"
    why = "their virtual tokens are inputs, not weights" if method_of(method).prompt else "peft has no merge for them"
    return f"{method} adapters cannot be merged ({why}): exported the adapter with a loader note -> {out}"


def copy_adapter(session: Session, out: Path) -> str:
    weights = session.source.weights

    def fill(tmp: Path) -> None:
        shutil.copytree(weights, tmp, dirs_exist_ok=True)
        mark_folder(tmp, "export")
        note = describe(session, merged=weights.name == layout.MODEL)
        write_json(tmp / layout.EXPORT_NOTE, note)
        if weights.name != layout.HEAD:  # a head folder's README already says how to put it on its base
            write_text(tmp / layout.LOADER_README, loader_note(note))

    write_folder(out, fill)
    return f"copied {weights.name}/ of {session.source.folder.name} -> {out}"


def run_export(
    run: str, out: str = "", merge: bool = False, adapter_only: bool = False, gguf: str = "", overwrite: bool = False
) -> list[str]:
    """Export a run folder; returns the lines to print."""
    if not (merge or adapter_only or gguf):
        raise UserError("export: say what to write: --merge, --adapter-only and/or --gguf f16,q8_0,q4_0,q4_k_m")
    cfg, source = read_source(run, [])
    if source.kind != "run":
        raise UserError(f"export: {run} is not a run folder (one written by `peftlab train`, with result.json)")
    types = [t.strip().lower() for t in gguf.split(",") if t.strip()]
    row = method_of(source.result.get("method"))
    if types and not row.can_merge:
        why = "its virtual tokens are inputs" if row.prompt else "peft cannot merge it into the weights"
        raise UserError(
            f"--gguf: a {source.result['method']} run has no merged weights to convert ({why}); "
            f"GGUF export needs a weight method such as lora or full"
        )
    if types:
        from peftlab.export.gguf import check_types

        check_types(types)
    run_dir = source.folder
    wanted = (["merged"] if merge or types else []) + (["adapter"] if adapter_only else [])
    if out and len(wanted) > 1:
        raise UserError(
            "--out names one folder, but both the merged model and the adapter were asked for; "
            "export them with two commands, or drop --out (RUN-merged/, RUN-saved_model/)"
        )
    targets = {
        "merged": run_dir.with_name(layout.merged_export(run_dir.name)),
        "adapter": run_dir.with_name(layout.adapter_export(run_dir.name)),
    }
    if out:
        if not Path(out).resolve().name:
            raise UserError(f"--out {out}: a file system root; give the path of the folder to write")
        targets[wanted[0]] = Path(out)

    def refuse_existing() -> None:
        for key in wanted:
            if targets[key].exists() and not overwrite:
                raise UserError(
                    f"{targets[key]} already exists; pass --overwrite to replace it, or --out another folder"
                )
            check_overwrite(targets[key])  # --overwrite replaces only a folder peftlab wrote

    refuse_existing()  # at once, before waiting for another exporter's lock
    with ExitStack() as locks:  # checked and written by one exporter at a time (in one order: no deadlock)
        for folder in sorted({targets[key].resolve() for key in wanted}):
            locks.enter_context(export_lock(folder))
        refuse_existing()  # again: another exporter may have written it while this one waited
        from peftlab.inference.session import load_eval_splits

        splits = load_eval_splits(cfg, "validation")  # the task's prepare gives the head its labels
        session = open_session(cfg, source, splits, ["validation"])
        lines = []
        if adapter_only:
            lines.append(copy_adapter(session, targets["adapter"]))
        if merge or types:
            lines.append(write_merged(session, targets["merged"]))
        if types:
            from peftlab.export.gguf import export_gguf

            files = export_gguf(targets["merged"], targets["merged"], types)
            lines += [f"gguf {t}: {p} ({p.stat().st_size / 2**20:.1f} MiB)" for t, p in files.items()]
    return lines


EXPORT_KINDS = ("merged", "f16", "bf16", "q8_0", "q4_0", "q4_k_m")


def ensure_export(run: str, kind: str) -> Path:
    """The merged folder (kind 'merged') or one GGUF file of a run, exported now unless it already is;
    `peftlab eval RUN --export KIND` and sweep rows such as `{of: lora, export: q8_0}` use it."""
    if kind not in EXPORT_KINDS:
        raise UserError(f"--export: '{kind}' is not one of {', '.join(EXPORT_KINDS)}")
    run_dir = Path(run)
    merged = (
        run_dir.parent / layout.EXPORTS / layout.merged_export(run_dir.name)
    )  # apart from run and evaluation folders
    from peftlab.export.gguf import export_gguf, gguf_path

    target = merged if kind == "merged" else gguf_path(merged, kind)
    # the check and the export under one lock: evaluations of this run side by side take turns, and
    # only the first exports the merged folder (the others add their GGUF file to it, or find it there)
    with export_lock(merged):
        if not is_export_of(merged, run_dir):
            run_export(run, out=str(merged), merge=True, gguf="" if kind == "merged" else kind, overwrite=True)
        elif kind != "merged" and not target.is_file():
            export_gguf(merged, merged, [kind])
    return target


def is_export_of(folder: Path, run_dir: Path) -> bool:
    """Whether `folder` was exported from the run's current training: a run trained again (same name,
    new weights) must never be evaluated through the export of its previous weights."""
    from peftlab.runs.rundir import read_json

    note = read_json(folder / layout.EXPORT_NOTE, None)
    result = read_result(run_dir)
    return (
        isinstance(note, dict)
        and isinstance(result, dict)
        and note.get("merged", False)
        and note.get("run_finished_at") is not None
        and note.get("run_finished_at") == result.get("finished_at")
    )


def export_to_evaluate(spec: str | None, kind: str, out: str | None) -> tuple[str, str]:
    """`peftlab eval RUN --export KIND`: the run's merged folder or GGUF file (exported now unless it
    already is) and the evaluation folder's default name; returns (what to evaluate, --out)."""
    if not spec or not Path(spec, "result.json").is_file():
        raise UserError(f"--export {kind}: give the run folder to export and evaluate, not {spec}")
    if out is None:
        out = str(Path(spec).with_name(f"{Path(spec).name}-{kind}-eval"))
    return str(ensure_export(spec, kind)), out
