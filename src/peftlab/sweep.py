"""`peftlab sweep SWEEP.yaml`: many runs from one file, each in its own `peftlab train` process.

A sweep file holds a base config and the runs to make from it:

    name: sst2-minilm-methods        # sweep folder name (default: the file's stem)
    output_dir: runs/sweeps          # where the sweep folder goes (default: runs)
    base: sst2-minilm-lora.yaml      # optional config file (relative to this file, or to the cwd)
    config: {epochs: 2}              # optional overrides of the base, flat or in sections
    variants:                        # an explicit list; each may override any config key
      - {name: full, method: full, lr: 5.0e-5}
      - {method: lora, lora_rank: 8} # unnamed: named by its settings (lora-r8)
    grid: {seed: [1, 2, 3]}          # cartesian product, crossed with the variants

Why a process per run: peak memory is then the run's own, and a crash (or an out-of-memory kill)
takes one run down, not the sweep. The sweep folder holds one run folder per run, `sweep.json`
(the plan and each run's status), `logs/` and `report/`. Running the sweep again skips finished
runs, resumes interrupted ones from their last checkpoint and retries failed ones from scratch;
a run folder is reused only if its config.yaml equals the config planned now (else the sweep stops
before running anything, or reruns it with --rerun-changed). `.lock` keeps a second sweep out.
"""
from __future__ import annotations

import codecs
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .child import WarmStart, child_env
from .config import SECTIONS, Config, build_config, read_yaml_mapping, typed_settings
from .errors import UserError, closest
from .reuse import plan_todo, run_status, sweep_lock
from .rundir import UnreadableFile, read_json, write_json, write_text, write_yaml
from .terminal import ScreenLines

SWEEP_KEYS = ("name", "output_dir", "base", "config", "variants", "grid", "description", "report_epochs")
# How a setting shows in a run name: lora_rank=8 -> r8, seed=1 -> s1, lr=5e-4 -> lr0.0005.
SHORT = {"lora_rank": "r", "lora_r": "r", "seed": "s", "lr": "lr", "learning_rate": "lr", "epochs": "ep",
         "num_virtual_tokens": "vt", "freeze_layers": "last", "batch_size": "bs", "max_samples": "n"}


@dataclass
class PlannedRun:
    name: str              # run folder name
    group: str             # the variant without its seed: runs of one group are averaged over seeds
    settings: dict         # what this run sets on top of the base (variant + grid point)
    cfg: Config
    seed: int
    kind: str = "train"    # train | eval (a baseline, or an evaluation of another run of the sweep)
    of: str = ""           # eval: the run folder name it evaluates; empty = the config's model, untrained
    export: str = ""       # eval of a run: merged | f16 | q8_0 | q4_0 | q4_k_m (exported first)


@dataclass
class Sweep:
    name: str
    source: Path
    folder: Path
    runs: list[PlannedRun] = field(default_factory=list)
    description: str = ""
    report_epochs: list = field(default_factory=list)  # the report's extra table: the metric after these epochs


def slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", str(value)).strip("_")


def name_of(settings: dict) -> str:
    """Run name from settings: the method first, then short key+value pairs (lora-r8-lr0.0005)."""
    parts = [slug(settings["method"])] if "method" in settings else []
    for key, value in settings.items():
        if key in ("method", "name"):
            continue
        if isinstance(value, (list, dict)):
            value = "_".join(map(str, value.values() if isinstance(value, dict) else value))
        parts.append(f"{SHORT.get(key, key + '_')}{slug(value)}")
    return "-".join(parts) or "base"


def flat_settings(data: dict) -> dict:
    """Sectioned or flat settings -> flat {key: value} (for names and display)."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in SECTIONS:
            out.update(value)
        else:
            out[key] = value
    return out


def check_keys(data: dict, where: str, keys: tuple = SWEEP_KEYS, what: str = "sweep key",
               holder: str = "a sweep file") -> None:
    for key in data:
        if key not in keys:
            raise UserError(f"{where}: unknown {what} '{key}'{closest(str(key), keys)}; {holder} has "
                            f"{', '.join(keys)} (config keys go under `config:`, `variants:` or `grid:`)")


def grid_points(grid, where: str) -> list[dict]:
    if not grid:
        return [{}]
    if not isinstance(grid, dict):
        raise UserError(f"{where}: `grid:` must map config keys to lists, e.g. grid: {{seed: [1, 2, 3]}}")
    keys, values = list(grid), []
    for key in keys:
        vals = grid[key] if isinstance(grid[key], list) else [grid[key]]
        if not vals:
            raise UserError(f"{where}: grid key '{key}' has an empty list")
        values.append(vals)
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def find_base(base: str, sweep_file: Path) -> Path:
    for candidate in (sweep_file.parent / base, Path(base)):
        if candidate.is_file():
            return candidate
    raise UserError(f"{sweep_file}: base config '{base}' not found next to the sweep file nor in {Path.cwd()}")


def load_sweep(path: str | Path, output_dir: str | None = None):
    """Read a sweep file and expand it into planned runs; every run's config is validated here. A file
    with `parts:` is a study (study.py): several sweeps of one design, returned as a Study."""
    path = Path(path)
    data = read_yaml_mapping(path)
    if "parts" in data:
        from .study import load_study

        return load_study(path, data, output_dir)
    check_keys(data, str(path))
    return sweep_from(data, path, output_dir)


def config_layers(data: dict, path: Path, where: str, between: list = (), split: bool = False):
    """A sweep mapping's `base:` file and `config:` overrides, as config layers (`between`: layers that go
    over the base and under the config; split=True: (base layers, config layers))."""
    layers = []
    if data.get("base"):
        if not isinstance(data["base"], str):
            raise UserError(f"{where}: `base:` is the path of a config file; put settings written here under "
                            f"`config:` instead (e.g. config: {{model: minilm-l6, epochs: 2}})")
        base_file = find_base(data["base"], path)
        layers.append((read_yaml_mapping(base_file), str(base_file)))
    if data.get("config"):
        if not isinstance(data["config"], dict):
            raise UserError(f"{where}: `config:` must be a mapping of config keys")
        layers.append((data["config"], f"{where}: config"))
    n_base = 1 if data.get("base") else 0
    if split:
        return layers[:n_base], layers[n_base:]
    return layers[:n_base] + list(between) + layers[n_base:]


def sweep_from(data: dict, path: Path, output_dir: str | None = None, pre_layers: list = (),
               where: str = "", between: list = ()) -> Sweep:
    """The planned runs of one sweep mapping; `pre_layers` (a study's base file) come first, `between`
    (a study's config:) over this mapping's base file and under its config:."""
    where = where or str(path)
    base_layers = list(pre_layers) + config_layers(data, path, where, between)
    variants = data.get("variants") or [{}]
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise UserError(f"{where}: `variants:` must be a list of mappings, e.g. - {{method: lora, lora_rank: 8}}")
    points = grid_points(data.get("grid"), where)
    # settings typed by their fields (lr: 5.0e-4 -> 0.0005), so names and sweep.json show numbers as
    # numbers and a string key's `no` as "no"
    typed_points = [typed_settings(p, f"{where}: grid") for p in points]
    typed_variants = [typed_settings(flat_settings({k: v for k, v in variant.items() if k not in ("name", *EVAL_KEYS)}),
                                     f"{where}: variants[{i}]") for i, variant in enumerate(variants)]
    seed_varies = (len({p.get("seed") for p in typed_points}) > 1
                   or len({v.get("seed") for v in typed_variants}) > 1)

    name = slug(data.get("name") or path.stem)
    folder = Path(output_dir or data.get("output_dir") or "runs") / name
    sweep = Sweep(name, path, folder, description=str(data.get("description") or ""),
                  report_epochs=report_epochs_of(data.get("report_epochs"), where))
    seen: dict[str, int] = {}
    for i, variant in enumerate(variants):
        variant = dict(variant)
        given = variant.pop("name", None)
        kind, of, export = read_eval_keys(variant, f"{where}: variants[{i}]")
        for key in ("output_dir", "run_name"):
            if key in flat_settings(variant):
                raise UserError(f"{where}: variants[{i}]: '{key}' is set by the sweep; remove it")
        for point, typed_point in zip(points, typed_points):
            at = f"{where}: variants[{i}]" + (f" x grid {point}" if point else "")
            settings = {**typed_variants[i], **typed_point}
            cfg = build_config(base_layers + [(variant, f"{where}: variants[{i}]"), (point, f"{where}: grid")])
            group_settings = {k: v for k, v in settings.items() if k != "seed"}
            group = slug(given) if given else name_of(group_settings)
            run_name = f"{group}-s{cfg.train.seed}" if seed_varies else group
            if run_name in seen:
                raise UserError(f"{at}: two runs would both be named '{run_name}' (also variants[{seen[run_name]}]); "
                                f"give the variants distinct `name:`s")
            seen[run_name] = i
            cfg.train.output_dir, cfg.train.run_name = str(folder), run_name
            target = evaluated_run(of, cfg.train.seed, seed_varies, sweep.runs, at)
            sweep.runs.append(PlannedRun(run_name, group, settings, cfg, cfg.train.seed, kind, target, export))
    return sweep


def report_epochs_of(value, where: str) -> list[int]:
    """The epochs of the report's extra table; sweep files keep scalars as their text (config.py), so
    each item is read as a whole number here."""
    if value is None:
        return []
    items = value if isinstance(value, list) else []
    epochs = [int(e) for e in items if re.fullmatch(r"\s*\d+\s*", str(e))]
    if not items or len(epochs) != len(items) or min(epochs) < 1:
        raise UserError(f"{where}: `report_epochs:` must be a list of epoch numbers (1 or more), e.g. [1, 5, 10]; "
                        f"got {value!r}")
    return sorted(set(epochs))


EVAL_KEYS = ("kind", "of", "export")  # variant keys that make a row an evaluation, not a training run


def read_eval_keys(variant: dict, where: str) -> tuple[str, str, str]:
    """Pop `kind: eval`, `of: <variant name>`, `export: <type>` from a variant (in place)."""
    from .export import EXPORT_KINDS

    kind, of, export = (str(variant.pop(k, "") or "") for k in EVAL_KEYS)
    kind = kind or ("eval" if of or export else "train")
    if kind not in ("train", "eval"):
        raise UserError(f"{where}: kind: '{kind}' is not train or eval")
    if export and not of:
        raise UserError(f"{where}: export: {export} needs `of:` (the variant whose run is exported)")
    if export and export not in EXPORT_KINDS:
        raise UserError(f"{where}: export: '{export}' is not one of {', '.join(EXPORT_KINDS)}")
    return kind, slug(of) if of else "", export


def evaluated_run(of: str, seed: int, seed_varies: bool, planned: list, where: str) -> str:
    """The run folder an `of:` row evaluates: the named variant's run with the same seed, planned earlier."""
    if not of:
        return ""
    name = f"{of}-s{seed}" if seed_varies else of
    match = next((r for r in planned if r.name == name), None)
    if match is None or match.kind != "train":
        trained = ", ".join(r.group for r in planned if r.kind == "train") or "none"
        raise UserError(f"{where}: of: '{of}' names no training variant listed before it (trained: {trained})")
    return name


# -- running ------------------------------------------------------------------------------------

def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def describe(settings: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in settings.items()) or "(base config)"


def print_plan(sweep: Sweep) -> None:
    print(f"sweep {sweep.name}: {len(sweep.runs)} runs -> {sweep.folder}")
    width = max(len(r.name) for r in sweep.runs)
    for i, run in enumerate(sweep.runs, 1):
        status = run_status(sweep.folder / run.name)
        what = "" if run.kind == "train" else ("eval " + (f"of {run.of}" if run.of else "of the base model")
                                               + (f" ({run.export})" if run.export else "") + ": ")
        print(f"  {i:>3}. {run.name:<{width}}  [{status}]  {what}{describe(run.settings)}")


class Progress:
    """Sweep-level ETA: finished runs' mean duration for the runs to come, epochs for the current one."""

    def __init__(self, total: int, done: int):
        self.total, self.done, self.failed, self.durations = total, done, 0, []
        self.index, self.started, self.epochs = 0, time.time(), 1

    def start(self, index: int, epochs: int) -> None:
        self.index, self.started, self.epochs = index, time.time(), max(1, epochs)

    def finish(self, ok: bool) -> None:
        self.durations.append(time.time() - self.started)
        self.done += ok
        self.failed += not ok

    def eta(self, epochs_done: int = 0) -> float | None:
        elapsed = time.time() - self.started
        per_run = sum(self.durations) / len(self.durations) if self.durations else None
        if epochs_done > 0:
            current_total = elapsed / epochs_done * self.epochs
        elif per_run is not None:
            current_total = per_run
        else:
            return None
        per_run = per_run if per_run is not None else current_total
        return max(0.0, current_total - elapsed) + per_run * (self.total - self.index)


def pump(stream, sink, log, tail: list, on_line=None) -> None:
    """Copy a child's output to our console as it comes and to its log as the lines it leaves on a
    screen (terminal.ScreenLines: a progress bar once, in its last state, no control codes); keep
    the tail (for failure reasons)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character cut by a chunk's end
    screen = ScreenLines()
    buffer = ""
    while True:
        chunk = os.read(stream.fileno(), 4096)
        text = decoder.decode(chunk, final=not chunk)
        if text:
            sink.write(text)
            sink.flush()
            tail.append(text)
            del tail[:-50]
        log.write(screen.feed(text) + ("" if chunk else screen.finish()))
        log.flush()  # `peftlab ui` shows the log's tail while the run runs
        if not chunk:
            break
        buffer += text
        *lines, buffer = re.split(r"[\r\n]", buffer)
        for line in lines:
            if on_line:
                on_line(line)


def failure_reason(run_dir: Path, returncode: int, tail: list) -> str:
    try:
        result = read_json(run_dir / "result.json", {}) or {}
    except UnreadableFile as e:
        return str(e)
    if result.get("error"):
        return result["error"]
    lines = [l.strip() for l in "".join(tail).splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("peftlab: error:") or "Error" in l]
    if returncode < 0:
        sig = signal.Signals(-returncode).name
        hint = " (killed: out of memory?)" if sig == "SIGKILL" else ""
        return f"process ended by {sig}{hint}"
    return (errors or lines or [f"exit code {returncode}"])[-1][:500]


def stop_child(child: subprocess.Popen) -> None:
    """After Ctrl-C: a terminal has sent SIGINT to the run too, and it is writing its 'interrupted'
    state; a second SIGINT could cut that short, so send one only if it does not end by itself."""
    for sig, wait in ((None, 10), (signal.SIGINT, 60), (signal.SIGKILL, 10)):
        if sig is not None:
            child.send_signal(sig)
        try:
            child.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def child_command(sweep: Sweep, run: PlannedRun, mode: str) -> list[str]:
    config_path = sweep.folder / "configs" / f"{run.name}.yaml"
    write_yaml(config_path, run.cfg.to_dict())
    return command_of(sweep, run, config_path, mode)


def execute(sweep: Sweep, run: PlannedRun, progress: Progress, mode: str, warm: WarmStart,
            next_up: tuple | None = None) -> dict:
    """One run in a child process (started ahead by `warm` when it was the one planned next), and
    the next planned run's process started ahead; returns this run's sweep.json entry."""
    cmd = child_command(sweep, run, mode)
    env = child_env()
    tag = f"[{progress.index}/{progress.total}] {run.name}"

    def on_line(line: str) -> None:
        m = re.match(r"epoch (\d+):", line)
        if m and int(m.group(1)) > 0:
            epoch = int(m.group(1))
            print(f"  sweep {tag}: epoch {epoch}/{run.cfg.train.epochs} done, "
                  f"sweep ETA {fmt_duration(progress.eta(epoch))}", flush=True)

    (sweep.folder / "logs").mkdir(exist_ok=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with open(sweep.folder / "logs" / f"{run.name}.log", "a", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join(cmd)}   # {started}\n")
        child = warm.take(cmd) or subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        if next_up is not None:
            warm.start(child_command(sweep, *next_up), env)
        tail: list[str] = []
        pumps = [threading.Thread(target=pump, args=(child.stdout, sys.stdout, log, [], on_line), daemon=True),
                 threading.Thread(target=pump, args=(child.stderr, sys.stderr, log, tail), daemon=True)]
        for t in pumps:
            t.start()
        try:
            returncode = child.wait()
        except KeyboardInterrupt:
            stop_child(child)
            raise
        finally:
            for t in pumps:
                t.join(timeout=5)
    return entry_of(sweep, run, returncode, tail, started)


def entry_of(sweep: Sweep, run: PlannedRun, returncode: int, tail: list, started: str) -> dict:
    """A finished run's sweep.json entry, from its exit code and its folder (every backend)."""
    run_dir = sweep.folder / run.name
    status = run_status(run_dir)
    entry = {"name": run.name, "group": run.group, "seed": run.seed, "settings": run.settings,
             "status": "completed" if returncode == 0 and status == "completed" else "failed",
             "returncode": returncode, "started_at": started,
             "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if entry["status"] == "failed":  # no exit code: the process never ran (a backend's own error, in the tail)
        entry["error"] = failure_reason(run_dir, returncode, tail) if returncode is not None else "".join(tail)
    return entry


def command_of(sweep: Sweep, run: PlannedRun, config_path: Path, mode: str) -> list[str]:
    """The child's command line: `peftlab train`, or `peftlab eval` of the config's model or of a run."""
    peftlab = [sys.executable, "-m", "peftlab"]
    if run.kind == "train":
        return peftlab + ["train", str(config_path), "--resume" if mode == "resume" else "--overwrite"]
    out = ["--out", str(sweep.folder / run.name), "--overwrite"]
    if not run.of:
        return peftlab + ["eval", str(config_path)] + out
    # an evaluation of a trained run: that run's own config, with the settings this row changes
    changed = [f"{k}={v}" for k, v in flat_settings(run.settings).items() if k not in EVAL_KEYS + ("seed",)]
    export = ["--export", run.export] if run.export else []
    return peftlab + ["eval", str(sweep.folder / run.of)] + [
        str(c) for c in changed] + export + out


def interrupted_entry(run: PlannedRun) -> dict:
    return {"name": run.name, "group": run.group, "seed": run.seed, "settings": run.settings, "status": "interrupted"}


def save_state(sweep: Sweep, entries: dict) -> None:
    write_json(sweep.folder / "sweep.json", {
        "name": sweep.name, "source": str(sweep.source), "description": sweep.description,
        **({"report_epochs": sweep.report_epochs} if sweep.report_epochs else {}),
        "runs": [entries.get(r.name) or {"name": r.name, "group": r.group, "seed": r.seed, "settings": r.settings,
                                         "status": run_status(sweep.folder / r.name)} for r in sweep.runs]})


NOTES = {"resume": "", "retry": "  (retrying a failed run)", "rerun": "  (rerun: its folder had other settings)",
         "after": "  (evaluates the run above)"}


def run_sweep(sweep: Sweep, retry_failed: bool = True, rerun_changed: bool = False, backend=None) -> dict:
    """Run every planned run not yet completed (one after another, or side by side on `backend`, a
    backends.Backend); returns {run name: sweep.json entry}."""
    with sweep_lock(sweep.folder):
        return run_locked(sweep, retry_failed, rerun_changed, backend)


def run_locked(sweep: Sweep, retry_failed: bool, rerun_changed: bool, backend=None) -> dict:
    old_state = read_json(sweep.folder / "sweep.json", {}, fix="delete it: the run folders are kept, and the "
                          "next sweep run rebuilds it from them") or {}
    old = {e["name"]: e for e in old_state.get("runs", [])}
    entries, todo = plan_todo(sweep, old, retry_failed, rerun_changed)
    (sweep.folder / "configs").mkdir(parents=True, exist_ok=True)
    write_text(sweep.folder / "sweep.yaml", sweep.source.read_text(encoding="utf-8"))
    skipped = len(sweep.runs) - len(todo)
    print(f"sweep {sweep.name}: {len(sweep.runs)} runs, {skipped} already done or kept, {len(todo)} to run "
          f"-> {sweep.folder}", flush=True)
    save_state(sweep, entries)
    progress = Progress(len(sweep.runs), skipped)
    if backend is not None and backend.kind != "sequential" and todo:
        from .backends import run_parallel

        progress.index = skipped
        return run_parallel(sweep, todo, entries, progress, backend, lambda e: save_state(sweep, e))
    warm = WarmStart()
    try:
        return run_todo(sweep, todo, entries, progress, skipped, warm)
    finally:
        warm.discard()


def run_todo(sweep: Sweep, todo: list, entries: dict, progress: Progress, skipped: int, warm: WarmStart) -> dict:
    for k, (run, mode) in enumerate(todo):
        progress.start(skipped + k + 1, run.cfg.train.epochs)
        print(f"\n== sweep [{progress.index}/{progress.total}] {run.name}: {describe(run.settings)}"
              f"{NOTES[mode]}  "
              f"| done {progress.done}, failed {progress.failed}, ETA {fmt_duration(progress.eta())}", flush=True)
        try:
            entry = execute(sweep, run, progress, mode, warm, todo[k + 1] if k + 1 < len(todo) else None)
        except KeyboardInterrupt:
            entries[run.name] = interrupted_entry(run)
            save_state(sweep, entries)
            raise
        entries[run.name] = entry
        progress.finish(entry["status"] == "completed")
        if entry["status"] == "failed":
            print(f"== sweep: {run.name} FAILED: {entry['error']} (the sweep goes on)", flush=True)
        save_state(sweep, entries)
    return entries
