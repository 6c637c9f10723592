"""What the dashboard reads: the sweeps and runs under RUNS_DIR, paths checked against traversal,
predictions normalized per task, and a sweep's live progress. Nothing here writes."""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil

from peftlab.report.evals import is_eval
from peftlab.report.tables import Run, collect, read_run
from peftlab.runs import layout
from peftlab.runs.measure import memory_label
from peftlab.runs.rundir import UnreadableFile, read_history, read_json, read_jsonl, read_result
from peftlab.sweep.progress import eta_now
from peftlab.sweep.terminal import ScreenLines

MAX_DEPTH = 4  # RUNS_DIR/study/part/run: deeper folders are not searched


class Refused(Exception):
    """A path that is not inside RUNS_DIR (or does not exist there): answered 404, never read."""


def inside(root: Path, rel: str) -> Path:
    """root/rel resolved (symlinks too); Refused unless it stays inside root. `rel` comes from a URL."""
    if "\x00" in rel or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
        raise Refused(rel)
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise Refused(rel)
    return path


def rel_of(root: Path, path: Path) -> str:
    return path.resolve().relative_to(root.resolve()).as_posix()


@dataclass
class Folder:
    """A sweep folder (it has sweep.json) or a plain folder of run folders (*/result.json)."""

    rel: str
    path: Path
    is_sweep: bool


def is_run_folder(path: Path) -> bool:
    return (path / layout.RESULT).is_file() or (path / layout.CONFIG).is_file()


def find_folders(root: Path) -> list[Folder]:
    """Every sweep folder and every folder holding runs under root, in path order (hidden folders,
    e.g. the UI's own .ui/, and anything inside a run folder are skipped)."""
    root = root.resolve()
    out = []

    def walk(path: Path, depth: int) -> None:
        if (path / layout.SWEEP_STATE).is_file():
            out.append(Folder(rel_of(root, path), path, True))
            return
        try:
            children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        if any((c / layout.RESULT).is_file() for c in children):
            out.append(Folder(rel_of(root, path) if path != root else ".", path, False))
        if depth < MAX_DEPTH:
            for c in children:
                if not is_run_folder(c):
                    walk(c, depth + 1)

    if root.is_dir():
        walk(root, 0)
    return out


def read_folder(folder: Folder) -> tuple[dict, list[Run]]:
    try:
        return collect(folder.path)
    except Exception as e:  # a broken sweep.json must not take the whole list down: it is shown as one row
        return {"name": folder.path.name, "error": str(e)}, []


def num(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def run_row(folder: Folder, run: Run) -> dict:
    """One line of the browse table."""
    r = run.result or {}
    metric = r.get("metric_for_best")
    best = (r.get("metrics_best") or {}).get(metric) if metric else None
    rel = run.name if folder.rel == "." else f"{folder.rel}/{run.name}"
    return {
        "id": rel,
        "sweep": folder.rel,
        "name": run.name,
        "group": run.group,
        "seed": run.seed,
        "status": run.status,
        "error": run.error,
        "task": r.get("task", ""),
        "model": r.get("model", ""),
        "method": ("eval" if is_eval(r) else r.get("method", "")) if r else run.settings.get("method", ""),
        "metric": metric or "",
        "best": num(best),
        "best_epoch": r.get("best_epoch"),
        "time_per_epoch_s": num(r.get("time_per_epoch_s")),
        "peak_memory_mb": num(r.get("peak_memory_mb")),
        "memory_kind": memory_label(r.get("peak_memory_kind")) if r.get("peak_memory_kind") else "",
        "trainable_params": num(r.get("trainable_params")),
    }


def all_runs(root: Path) -> tuple[list[dict], list[dict]]:
    """(folders with their status, runs) for the browse page."""
    folders, runs = [], []
    for f in find_folders(root):
        state, rs = read_folder(f)
        statuses = Counter(r.status for r in rs)
        folders.append(
            {
                "rel": f.rel,
                "name": state.get("name", f.path.name),
                "is_sweep": f.is_sweep,
                "description": state.get("description", ""),
                "error": state.get("error"),
                "live": live_pid(f.path) is not None,
                "n": len(rs),
                "statuses": dict(statuses),
            }
        )
        runs += [run_row(f, r) for r in rs]
    return folders, runs


def live_pid(folder: Path) -> int | None:
    """The pid of the `peftlab sweep` holding folder/.lock, if that process is alive (its pid is in the
    file; the lock itself is not tested, that could race with a sweep starting)."""
    lock = folder / layout.SWEEP_LOCK
    text = lock.read_text(encoding="utf-8").strip() if lock.is_file() else ""
    return int(text) if text.isdigit() and is_sweep_process(int(text)) else None


def is_sweep_process(pid: int, created: float | None = None) -> bool:
    """Whether pid is a live `peftlab sweep` process. With `created` (a dashboard job: the start time it
    read from the process it had just started) the pid and that start time are the identity: a recycled
    pid has another start time. The command line is not read then: until the new process has exec'd,
    psutil reads it as '' or as the dashboard's own, and a live sweep would flicker to "not running".
    Without it (a sweep folder's .lock, written by the sweep process itself, so long after its exec) the
    command line must be `peftlab sweep`'s: a recycled pid of another program is not it."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if created is not None:
            return abs(proc.create_time() - created) < 0.5
        cmd = " ".join(proc.cmdline())
    except (psutil.Error, OSError):
        return False
    return "peftlab" in cmd and "sweep" in cmd


def started_at(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def run_at(root: Path, rel: str) -> tuple[Folder, Run]:
    """The run folder root/rel, read as the report reads it (with its sweep.json entry when it has one:
    group, seed, settings, a failure's reason); only this run's files are read."""
    path = inside(root, rel)
    if not is_run_folder(path):
        raise Refused(rel)
    parent = path.parent
    folder = Folder(
        rel_of(root, parent) if parent != root.resolve() else ".", parent, (parent / layout.SWEEP_STATE).is_file()
    )
    state = read_json(parent / layout.SWEEP_STATE, None) if folder.is_sweep else None
    entries = state.get("runs", []) if isinstance(state, dict) else []
    entry = next((e for e in entries if e.get("name") == path.name), {"name": path.name})
    return folder, read_run(path, entry)


# -- predictions ----------------------------------------------------------------------------------


def prediction_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob("predictions_*.jsonl"))


def shorten(value, n: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= n else text[: n - 1] + "…"


def normalize(row: dict) -> dict:
    """{input, gold, predicted, wrong} of one prediction line, whatever the task wrote."""
    if "tags" in row and "predicted" in row:  # ner
        return {
            "input": " ".join(row.get("tokens", [])),
            "gold": " ".join(row["tags"]),
            "predicted": " ".join(row["predicted"]),
            "wrong": row["tags"] != row["predicted"],
        }
    if "answers" in row:  # extractive QA
        gold = " | ".join(row["answers"]) or "(no answer)"
        return {
            "input": row.get("question", ""),
            "gold": gold,
            "predicted": row.get("prediction") or "(no answer)",
            "wrong": not row.get("exact_match", row.get("exact")),  # "exact" in an older peftlab's files
        }
    if "reference" in row and "generated" in row:  # sft
        return {
            "input": row.get("prompt", row.get("instruction", "")),
            "gold": row["reference"],
            "predicted": row["generated"],
            "wrong": row["generated"].strip() != row["reference"].strip(),
        }
    if "answer" in row and "prediction" in row:  # multiple choice
        return {
            "input": row.get("question", ""),
            "gold": str(row["answer"]),
            "predicted": str(row["prediction"]),
            "wrong": row["answer"] != row["prediction"],
        }
    gold, pred = row.get("label"), row.get("prediction")  # classification
    text = (
        row.get("text")
        if "text" in row
        else " / ".join(str(v) for k, v in row.items() if k not in ("label", "prediction", "probabilities"))
    )
    return {"input": text, "gold": str(gold), "predicted": str(pred), "wrong": gold != pred}


def entity_counts(rows: list[dict]) -> list[dict]:
    """NER: per entity type, gold and predicted spans and exact matches (seqeval's span reading)."""
    from seqeval.metrics.sequence_labeling import get_entities

    gold, pred, hit = Counter(), Counter(), Counter()
    for r in rows:
        g, p = set(get_entities(list(r["tags"]))), set(get_entities(list(r["predicted"])))
        gold.update(t for t, _, _ in g)
        pred.update(t for t, _, _ in p)
        hit.update(t for t, _, _ in g & p)
    return [
        {
            "type": t,
            "gold": gold[t],
            "predicted": pred[t],
            "correct": hit[t],
            "missed": gold[t] - hit[t],
            "spurious": pred[t] - hit[t],
        }
        for t in sorted(set(gold) | set(pred))
    ]


def confusion(rows: list[dict], labels: list[str] | None) -> dict | None:
    """Classification / multiple choice: counts[gold][predicted] in the run's label order."""
    from sklearn.metrics import confusion_matrix

    pairs = [(n["gold"], n["predicted"]) for n in rows]
    names = [str(x) for x in labels] if labels else sorted({x for p in pairs for x in p})
    names += sorted({x for p in pairs for x in p} - set(names))  # e.g. an unparsed generated answer
    if len(names) > 30:
        return None
    m = confusion_matrix([g for g, _ in pairs], [p for _, p in pairs], labels=names)
    return {"labels": names, "matrix": m.tolist()}


def read_predictions(run_dir: Path, name: str, errors_only: bool, labels, limit: int = 500) -> dict:
    raw = read_jsonl(run_dir / name)
    rows = [normalize(r) for r in raw]
    out = {"file": name, "n": len(rows), "n_wrong": sum(r["wrong"] for r in rows), "entities": None, "confusion": None}
    if raw and "tags" in raw[0]:
        out["entities"] = entity_counts(raw)
    elif raw and "answers" not in raw[0] and "reference" not in raw[0]:
        out["confusion"] = confusion(rows, labels)
    shown = [dict(r, i=i) for i, r in enumerate(rows) if r["wrong"] or not errors_only]
    out["rows"] = [
        {**r, "input": shorten(r["input"]), "gold": shorten(r["gold"]), "predicted": shorten(r["predicted"])}
        for r in shown[:limit]
    ]
    out["truncated"] = len(shown) > limit
    return out


# -- a sweep's progress ---------------------------------------------------------------------------


def clean_log(text: str) -> list[str]:
    """A log as a terminal would have left it (a dashboard job's log holds the sweep's raw console)."""
    screen = ScreenLines()
    return [line for line in (screen.feed(text) + screen.finish()).splitlines() if line.strip()]


def tail(path: Path, n: int = 30, max_bytes: int = 65536) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - max_bytes))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return clean_log(text)[-n:]


def sweep_folders(root: Path, rel: str) -> list[Folder]:
    """A sweep folder, or a study folder's parts (each its own sweep folder)."""
    path = inside(root, rel)
    if (path / layout.SWEEP_STATE).is_file():
        return [Folder(rel, path, True)]
    parts = [f for f in find_folders(path) if f.is_sweep]
    if not parts:
        raise Refused(rel)
    return [Folder(rel_of(root, f.path), f.path, True) for f in parts]


def seconds_between(a: str | None, b: str | None) -> float | None:
    from datetime import datetime

    try:
        return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()
    except (TypeError, ValueError):
        return None


def progress(root: Path, rel: str) -> dict:
    """What the sweep page shows and the event stream pushes: each run's status and epoch, the run in
    progress with its loss so far and log tail, and the ETA of the sweep process itself: the progress
    record it keeps in sweep.json (sweep/progress.py), counted down since it was written; the parts of
    a study that are running add up."""
    parts, runs, current, live, records = [], [], None, False, []
    for f in sweep_folders(root, rel):
        state = read_json(f.path / layout.SWEEP_STATE, {}) or {}
        if live_pid(f.path) is not None:
            live = True
            records.append(state.get("progress"))
        parts.append(f.rel)
        for e in state.get("runs", []):
            run_dir = f.path / e["name"]
            try:
                result = read_result(run_dir) or {}
                history = read_history(run_dir)
            except UnreadableFile:
                result, history = {"status": "unreadable"}, []
            # the folder tells a run's live state, except where the sweep says it is not this plan's: a
            # failed rerun whose earlier (completed) folder was put back, or a run whose settings changed
            said = e.get("status", "pending")
            status = said if said in ("failed", "changed") else result.get("status") or said
            row = {
                "id": f"{f.rel}/{e['name']}",
                "name": e["name"],
                "part": f.rel,
                "status": status,
                "epoch": max((h.get("epoch", 0) for h in history), default=None),
                "duration_s": seconds_between(e.get("started_at"), e.get("finished_at")),
                "error": e.get("error") or result.get("error"),
            }
            if status == "running":
                current = (f, e["name"], run_dir)
            runs.append(row)
    out = {
        **starting(),
        "parts": parts,
        "live": live,
        "runs": runs,
        "done": sum(r["status"] == "completed" for r in runs),
        "total": len(runs),
    }
    if current:
        f, name, run_dir = current
        out["current"] = name
        out["loss"] = [
            [h["epoch"], h["loss"]]
            for h in read_jsonl(run_dir / layout.TRAIN_LOG)
            if isinstance(h.get("loss"), (int, float)) and "epoch" in h
        ]
        out["log"] = tail(f.path / layout.LOGS / layout.run_log(name))
        out["epoch"] = f"{out['loss'][-1][0]:.2f}" if out["loss"] else "0"
        out["epochs_planned"] = planned_epochs(run_dir)
    etas = [eta_now(r) for r in records]
    out["eta_s"] = sum(etas) if etas and None not in etas else None
    return out


def starting() -> dict:
    """The progress of a sweep with no runs yet (also what progress() fills in)."""
    return {
        "parts": [],
        "live": False,
        "runs": [],
        "current": None,
        "loss": [],
        "log": [],
        "eta_s": None,
        "done": 0,
        "total": 0,
        "time": time.time(),
    }


def planned_epochs(run_dir: Path) -> int | None:
    from peftlab.runs.rundir import read_yaml

    try:
        cfg = read_yaml(run_dir / layout.CONFIG) or {}
    except UnreadableFile:
        return None
    return num((cfg.get("train") or {}).get("epochs"))


def sweep_source(root: Path, rel: str) -> str | None:
    """The sweep file the folder was made from (sweep.json's source), to resume it."""
    folders = sweep_folders(root, rel)
    state = read_json(folders[0].path / layout.SWEEP_STATE, {}) or {}
    return state.get("source")


def listing(run_dir: Path) -> list[dict]:
    out = []
    for dirpath, dirnames, filenames in os.walk(run_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for n in sorted(filenames):
            if n.startswith("."):
                continue
            p = Path(dirpath) / n
            out.append({"rel": p.relative_to(run_dir).as_posix(), "size": p.stat().st_size})
    return out[:500]
