"""The run folder, the unit of truth. Every file is written atomically (temporary file + rename),
so a reader never sees half a file and a killed run never leaves a broken one."""

from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path

import yaml

from peftlab.config.settings import TextLoader, config_diff
from peftlab.errors import UserError
from peftlab.runs import layout
from peftlab.runs.layout import Result


def write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = layout.temporary(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C or a full disk mid-write: leave no half file behind
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_yaml(path: Path, obj) -> None:
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, default=str, ensure_ascii=False) + "\n" for r in rows))


class UnreadableFile(UserError):
    """A run-folder file that exists but cannot be read. Never read it as empty: an empty config
    would pass the --resume check and an empty result would make a report row of defaults."""


FIX = "run again with --overwrite (a sweep: --rerun-changed), or delete the run folder"


def read_text(path: Path, fix: str) -> str | None:
    """The file's text; None when it does not exist (missing is not the same as corrupt)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise UnreadableFile(f"{path}: cannot be read ({e}); {fix}") from None


def read_json(path: Path, default=None, fix: str = FIX):
    """Parsed JSON; `default` only when the file does not exist; UnreadableFile when it is corrupt."""
    text = read_text(path, fix)
    if text is None:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UnreadableFile(f"{path}: corrupt or cut short (line {e.lineno}: {e.msg}); {fix}") from None


def read_yaml(path: Path, loader=yaml.SafeLoader, fix: str = FIX):
    """Parsed YAML; None when the file does not exist; UnreadableFile when it is corrupt."""
    text = read_text(path, fix)
    if text is None:
        return None
    try:
        return yaml.load(text, loader)
    except yaml.YAMLError as e:
        raise UnreadableFile(f"{path}: corrupt or cut short ({getattr(e, 'problem', e)}); {fix}") from None


def read_jsonl(path: Path, fix: str = FIX) -> list[dict]:
    """One dict per non-empty line; [] when the file does not exist; UnreadableFile naming a bad line."""
    text = read_text(path, fix)
    rows = []
    for n, line in enumerate((text or "").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UnreadableFile(f"{path}: line {n} is corrupt or cut short ({e.msg}); {fix}") from None
    return rows


def write_result(folder: Path, result: Result) -> None:
    """result.json, atomically; a finished run writes it last (a run is complete only when everything it
    promises is on disk). It always says its metric scale (layout.METRIC_SCALE_KEY)."""
    write_json(Path(folder) / layout.RESULT, {**result, layout.METRIC_SCALE_KEY: layout.METRIC_SCALE})


def read_result(folder: Path, default=None, fix: str = FIX, upgrade: bool = True) -> Result | None:
    """result.json; `default` when it does not exist; a file that exists but cannot be read raises
    UnreadableFile (never read as empty). An older peftlab's result is read on today's metric scale and
    names (layout.upgrade_result) unless `upgrade` is False (as written)."""
    result = read_json(Path(folder) / layout.RESULT, default, fix=fix)
    return layout.upgrade_result(result) if upgrade and result is not default else result


def written_on_old_scale(folder: Path) -> bool:
    """Whether the folder's result.json was written by a peftlab before layout.METRIC_SCALE_KEY."""
    raw = read_result(folder, upgrade=False)
    return isinstance(raw, dict) and layout.METRIC_SCALE_KEY not in raw


def read_history(folder: Path, fix: str = FIX) -> list[dict]:
    """metrics.jsonl, one dict per evaluation, on today's metric scale and names (an older peftlab's folder,
    told by its result.json, is upgraded line by line as read_result upgrades the result)."""
    lines = read_jsonl(Path(folder) / layout.METRICS, fix)
    return [layout.upgrade_metrics(line) for line in lines] if lines and written_on_old_scale(folder) else lines


def mark_folder(folder: Path, kind: str) -> None:
    """layout.MARKER, the first file of a run, evaluation or export folder: what --overwrite may replace."""
    write_text(
        Path(folder) / layout.MARKER,
        f"peftlab {kind} folder: `peftlab train/eval/export --overwrite` and a sweep's rerun replace only folders "
        f"that hold this file\n",
    )


def written_by_peftlab(folder: Path) -> bool:
    """Whether `folder` is a run or evaluation folder peftlab wrote: it holds layout.MARKER, or (made before
    the marker existed) a config.yaml and a result.json of a known status. Only such a folder is ever
    deleted or replaced by --overwrite: `--out ..` or a run_name that names the user's own folder must
    never cost them that folder."""
    folder = Path(folder)
    if (folder / layout.MARKER).is_file():
        return True
    if (folder / layout.EXPORT_NOTE).is_file():  # an export made before exports were marked
        try:
            return "from_run" in (read_json(folder / layout.EXPORT_NOTE, {}) or {})
        except UnreadableFile:
            return False
    try:
        result = read_result(folder)
    except UnreadableFile:
        result = None  # a damaged older run folder: config.yaml alone does not tell it from the user's own
    return (folder / layout.CONFIG).is_file() and isinstance(result, dict) and result.get("status") in layout.STATUSES


def check_overwrite(folder: Path, option: str = "--overwrite") -> None:
    """UserError unless `folder` is absent or was written by peftlab (written_by_peftlab)."""
    folder = Path(folder)
    if folder.exists() and not written_by_peftlab(folder):
        raise UserError(
            f"{option}: {folder} exists and is not a run, evaluation or export folder written by peftlab (it holds "
            f"no {layout.MARKER}, nor a config.yaml and result.json), so it is not deleted; choose another "
            f"folder (run_name=, output_dir= or --out), or move it away yourself"
        )


def saved_config_diff(run_dir: Path, cfg) -> list[str]:
    """How the run folder's config.yaml differs from cfg ('section.key: old -> new'); a missing or
    corrupt config.yaml is an error: without it nobody can tell what the folder's numbers mean."""
    saved = read_yaml(run_dir / layout.CONFIG, TextLoader)
    if saved is None:
        raise UserError(
            f"{run_dir}: config.yaml is missing, so it cannot be checked that the folder was run "
            f"with this config; {FIX}"
        )
    if not isinstance(saved, dict):
        raise UnreadableFile(f"{run_dir / layout.CONFIG}: not a mapping of sections; {FIX}")
    return config_diff(saved, cfg)


def replace_folder(tmp: Path, final: Path) -> None:
    """Move a fully written folder into place, replacing an older one."""
    old = layout.temporary(final, layout.OLD)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def write_folder(final: Path, fill) -> None:
    """The one atomic folder writer: fill(tmp) writes every file into layout.temporary(final), which
    becomes `final` in one rename (an older `final` goes only once the new one is in place); on any
    error, Ctrl-C included, the temporary folder is removed. A SIGKILL leaves it for clear_leftovers."""
    final = Path(final)
    if final.parent.is_dir():
        clear_leftovers(final.parent, final.name)  # an earlier, killed writer of the same folder
    tmp = layout.temporary(final)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        fill(tmp)
        replace_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


HEAD_FILE, WEIGHTS_NOTE = layout.HEAD_WEIGHTS, layout.WEIGHTS_NOTE


def save_model(
    model, tokenizer, final: Path, note: dict | None = None, head_only: bool = False, evaluation: dict | None = None
) -> None:
    """save_pretrained (adapter for peft models, else the whole model) + tokenizer, atomically.
    head_only (the head method): only the trained parameters, so 770 trained numbers are not saved as a
    second copy of the whole model. `note` (whole models and heads): README.md and peftlab.json say how
    to load the folder without peftlab, pooling included. `evaluation`: the metrics line of the
    evaluation these weights scored (layout.BEST_EVALUATION), in the same rename as the weights."""

    def fill(tmp: Path) -> None:
        tensors = save_head(model, tmp) if head_only else None
        if not head_only:
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if note:
            write_loader_note(tmp, note, tensors)
        if evaluation is not None:
            write_json(tmp / layout.BEST_EVALUATION, evaluation)

    write_folder(final, fill)


MEAN_POOLING_NOTE = (
    "**Mean pooling.** The classifier reads the masked mean of the last hidden states, not the "
    "[CLS] pooler that plain transformers uses (all-MiniLM was trained for mean pooling): call "
    "`peftlab.models.apply_pooling(model, 'mean')` before predicting, or the predictions change."
)


def save_head(model, folder: Path) -> list[str]:
    """The trained parameters alone (HEAD_FILE); returns their names."""
    from safetensors.torch import save_file

    tensors = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / HEAD_FILE))
    return sorted(tensors)


def write_loader_note(folder: Path, note: dict, tensors: list[str] | None) -> None:
    """README.md + WEIGHTS_NOTE of a run's weights folder; `tensors`: a head-only folder's parameter names."""
    cls, labels = note["auto_class"], note.get("labels") or []
    if tensors is not None:
        note = {**note, "tensors": tensors}
        base = note["base_model"]
        lines = [
            f"# Trained head of `{note['run']}` (peftlab, method head)",
            "",
            f"`{HEAD_FILE}` holds only the trained parameters ({', '.join(tensors[:4])}"
            f"{', ...' if len(tensors) > 4 else ''}); the rest is the base model `{base}`, unchanged.",
            "",
            "Load it without peftlab:",
            "",
            "```python",
            "from safetensors.torch import load_file",
            f"from transformers import {cls}",
            "",
            f"model = {cls}.from_pretrained({base!r}"
            + (f", num_labels={len(labels)}, id2label={dict(enumerate(labels))!r}" if labels else "")
            + ")",
            f"model.load_state_dict(load_file('{HEAD_FILE}'), strict=False)  # the head; the base stays",
            "```",
        ]
    else:
        lines = [
            f"# Best weights of `{note['run']}` (peftlab, method {note['method']})",
            "",
            f"A whole model: `{cls}.from_pretrained(<this folder>)`.",
        ]
    if note.get("pooling") == "mean":
        lines += ["", MEAN_POOLING_NOTE]
    write_json(folder / WEIGHTS_NOTE, note)
    write_text(folder / layout.LOADER_README, "\n".join(lines) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_leftovers(folder: Path, name: str = "") -> list[str]:
    """Tidy what a SIGKILLed writer left (names from layout.temporary): its temporary files and folders
    (`.NAME.tmp-PID`) are deleted; a folder it had moved aside to replace (`.NAME.old-PID`) is put back
    when NAME is missing (the kill fell between the two renames of replace_folder, so the old copy is
    the only one). Entries of a writer that is still alive are left alone; with `name`, only those of
    that file or folder. Returns what was done."""
    done = []
    for entry in sorted(Path(folder).glob(f".{glob.escape(name)}*" if name else ".*")):
        parsed = layout.parse_temporary(entry.name)
        if parsed is None or (name and parsed[0] != name) or _alive(parsed[2]):
            continue
        final = entry.with_name(parsed[0])
        if parsed[1] == layout.OLD and not final.exists():
            os.replace(entry, final)
            done.append(f"restored {final.name} from {entry.name}")
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        done.append(f"removed {entry.name}")
    return done


def run_status(run_dir: Path) -> str:
    try:
        result = read_result(run_dir)
    except UnreadableFile:
        return "unreadable"
    return (
        result.get("status", "unknown") if isinstance(result, dict) else ("started" if run_dir.exists() else "pending")
    )
