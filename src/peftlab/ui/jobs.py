"""Starting, stopping and resuming sweeps from the dashboard. A launch is the same `peftlab sweep FILE
--output-dir RUNS_DIR` process as from a terminal (never a shell string), started in the dashboard's
working folder only after the file was loaded and every run's config validated as the CLI does. A pasted
file runs nothing its author did not write: it may name files only inside the allowed roots (RUNS_DIR,
the recipes folder, and each --allow-root), each path read the way the run will read it (`~` expanded,
relative to the working folder; a `base:` next to the file first); a model hub id and
`trust_remote_code: true` only when the dashboard was started with --allow-hub-models /
--allow-remote-code."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from peftlab.errors import UserError
from peftlab.runs.rundir import UnreadableFile, read_json, write_json
from peftlab.ui.folders import is_sweep_process, live_pid, rel_of, started_at, tail


def names_a_path(key: str) -> bool:
    """A config key naming a file or folder the run reads or writes: `model` and every *_file / *_dir key
    (told by name, so a key added later is checked too)."""
    return key == "model" or key.endswith(("_file", "_dir"))


def recipes_dir() -> Path:
    """The shipped recipes (a source checkout or an editable install: <repo>/recipes)."""
    return Path(__file__).resolve().parents[3] / "recipes"


def shipped_recipes() -> dict[str, Path]:
    """{'sweeps/demo-sst2-minilm.yaml': path, ..., 'studies/...': path, 'sst2-minilm-lora.yaml': path}"""
    root = recipes_dir()
    out = {}
    for pattern in ("sweeps/*.yaml", "studies/*.yaml", "*.yaml"):
        for p in sorted(root.glob(pattern)):
            out[p.relative_to(root).as_posix()] = p
    return out


def job_number(name: str) -> int:
    """jobN -> N (0 for another name)."""
    digits = name[3:] if name.startswith("job") else ""
    return int(digits) if digits.isdigit() else 0


def is_under(path: Path, roots: list[Path]) -> bool:
    path = path.resolve()
    return any(path.is_relative_to(r) for r in roots)


def as_run_reads(text: str, workdir: Path) -> Path:
    """The file a run started in `workdir` reads for a path written in its config: `~` expanded (as
    data/formats.py and models/loading.py do), a relative path taken from the working folder, symlinks
    followed."""
    return (workdir / Path(text).expanduser()).resolve()


def is_hub_id(text: str, workdir: Path) -> bool:
    """Whether a run in `workdir` would fetch this model spec from the hub: models/loading.resolve_model
    reads a named model, a .gguf file or an existing folder locally, refuses a path-like spec that is
    none of them, and takes anything else as a hub id."""
    from peftlab.models.loading import NAMED_MODELS

    if not text or text in NAMED_MODELS or text.startswith((".", "/", "~")) or text.count("/") > 1:
        return False
    path = as_run_reads(text, workdir)
    return path.suffix != ".gguf" and not path.is_dir()


def named_paths(cfg) -> list[tuple[str, str]]:
    """(key, path) for every file or folder a run's config names (pkg: and data: paths and named models
    left out: they are inside installed packages or resolved from the data folder)."""
    from peftlab.models.loading import NAMED_MODELS

    out = []
    for section in cfg.to_dict().values():
        for key, value in section.items():
            if not names_a_path(key):
                continue
            for item in value if isinstance(value, list) else [value]:
                text = item.get("file", "") if isinstance(item, dict) else str(item or "")
                if not text or text.startswith(("pkg:", "data:")) or (key == "model" and text in NAMED_MODELS):
                    continue
                out.append((key, text))
    return out


def planned_runs(planned) -> list:
    from peftlab.sweep.study import Study

    return [run for sweep in (planned.sweeps if isinstance(planned, Study) else [planned]) for run in sweep.runs]


BASE_LINE = re.compile(r"^(\s*(?:-\s+)?base:\s*)(['\"]?)([^'\"#\n]+?)\2(\s*(?:#.*)?)$", re.M)


def absolute_bases(text: str, near: Path) -> str:
    """A pasted file's relative `base:` paths read as if the file sat in `near` (recipes/sweeps/), so a
    shipped recipe pasted and edited still finds its base file; the rest of the text is kept as written."""

    def fix(m):
        value = m.group(3).strip()
        if Path(value).is_absolute():
            return m.group(0)
        return f"{m.group(1)}{(near / value).resolve()}{m.group(4)}"

    return BASE_LINE.sub(fix, text)


def bases_of(path: Path) -> list[str]:
    """The `base:` values of a sweep or study file (its parts' too), as written."""
    from peftlab.config.settings import TextLoader

    data = yaml.load(path.read_text(encoding="utf-8"), TextLoader) or {}
    if not isinstance(data, dict):
        return []
    parts = data.get("parts") if isinstance(data.get("parts"), list) else []
    found = [data.get("base")] + [p.get("base") for p in parts if isinstance(p, dict)]
    return [b for b in found if isinstance(b, str) and b]


def new_file(folder: Path, stem: str, text: str) -> Path:
    """folder/stem-N.yaml for the first N no other launch has: created exclusively (mode "x"), so two
    launches in the same second, in one dashboard or two, never write into one file."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        path = folder / f"{stem}-{n}.yaml"
        try:
            fh = open(path, "x", encoding="utf-8")
        except FileExistsError:
            n += 1
            continue
        try:
            with fh:
                fh.write(text)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path


@dataclass
class Job:
    id: str
    folder: str  # the sweep (or study) folder, relative to RUNS_DIR
    log: Path  # the sweep process's console
    pid: int
    created: float | None = None  # the process's start time (a pid alone may be reused)
    proc: subprocess.Popen | None = None  # None: started by an earlier dashboard (known from its job file)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None if self.proc else is_sweep_process(self.pid, self.created)

    @property
    def returncode(self) -> int | None:
        """The exit code; None while running, or when an earlier dashboard started it."""
        return self.proc.poll() if self.proc else None


class Jobs:
    """The processes dashboards started, one file each in RUNS_DIR/.ui/jobs/ (jobN.json beside its
    console log jobN.log), so a restarted dashboard shows them, their logs and whether they still run;
    the folders stay the truth: a sweep started elsewhere is watched, stopped and resumed through its
    folder alike."""

    def __init__(
        self,
        root: Path,
        allow: list[Path],
        allow_hub: bool = False,
        allow_remote_code: bool = False,
        workdir: Path | None = None,
    ):
        self.root = root.resolve()
        self.roots = [self.root, recipes_dir().resolve()] + [Path(a).resolve() for a in allow]
        self.allow_hub, self.allow_remote_code = allow_hub, allow_remote_code
        # where launched sweeps run, so where their relative paths point (validation reads them from here too)
        self.workdir = (workdir or Path.cwd()).resolve()
        self.folder = self.root / ".ui" / "jobs"
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()  # one launch at a time picks its file, its job number and its folder
        for path in sorted(self.folder.glob("job*.json"), key=lambda p: job_number(p.stem)):
            try:
                note = read_json(path, None)
            except UnreadableFile:  # a job file cut short: that job is not shown, the others are
                continue
            if isinstance(note, dict) and {"folder", "pid", "created"} <= set(note) and str(note["pid"]).isdigit():
                self.jobs[path.stem] = Job(
                    path.stem,
                    str(note["folder"]),
                    path.with_suffix(".log"),
                    int(note["pid"]),
                    float(note["created"] or 0),
                )

    def refuse_outside(self, source: Path, where: str, key: str, text: str, read: Path) -> None:
        if not is_under(read, self.roots):
            raise UserError(
                f"{source.name}: {where}{key} '{text}' is {read}, outside the folders this dashboard may read "
                f"({', '.join(map(str, self.roots))}); start it with `peftlab ui --allow-root {read.parent}` "
                f"to allow it"
            )

    def check_bases(self, path: Path) -> None:
        """Each `base:` file as the sweep will find it (sweep/plan.find_base: next to the file, then the
        working folder, which is this process's too) must lie inside the allowed roots."""
        from peftlab.sweep.plan import find_base

        for base in bases_of(path):
            try:
                found = find_base(base, path)
            except UserError:
                continue  # load_sweep gives the CLI's message for a missing base
            self.refuse_outside(path, "", "base", base, found.resolve())

    def check_runs(self, planned, source: Path) -> None:
        """Every file a run's config names inside the allowed roots (base files' settings included); a hub
        model id and trust_remote_code only when this dashboard was started allowing them."""
        for run in planned_runs(planned):
            where = f"run {run.name}: "
            model = run.cfg.model.model
            if is_hub_id(model, self.workdir) and not self.allow_hub:
                raise UserError(
                    f"{source.name}: {where}model '{model}' is not a folder under {self.workdir}, a .gguf file "
                    f"nor a named model (`peftlab models`), so the run would fetch it from the model hub; the "
                    f"dashboard runs only local models unless started with `peftlab ui --allow-hub-models`"
                )
            if run.cfg.model.trust_remote_code and not self.allow_remote_code:
                raise UserError(
                    f"{source.name}: {where}trust_remote_code: true would run the Python code that comes with "
                    f"model '{model}'; the dashboard refuses it unless started with "
                    f"`peftlab ui --allow-remote-code` (or run this sweep from a terminal)"
                )
            for key, text in named_paths(run.cfg):
                if key == "model" and is_hub_id(text, self.workdir):
                    continue  # allowed above
                self.refuse_outside(source, where, key, text, as_run_reads(text, self.workdir))

    def validate(self, path: Path, trusted: bool):
        """The planned sweep or study, validated as `peftlab sweep` does; UserError otherwise."""
        from peftlab.sweep.load import load_sweep

        if not trusted:
            self.check_bases(path)
        planned = load_sweep(path, str(self.root))
        if not trusted:
            self.check_runs(planned, path)
        return planned

    def folder_of(self, planned) -> str:
        return rel_of(self.root, Path(planned.folder))

    def launch_recipe(self, name: str) -> Job:
        recipes = shipped_recipes()
        if name not in recipes:
            raise UserError(f"recipe '{name}': not a shipped recipe (choose one of the list)")
        path = recipes[name]
        if not name.startswith(("sweeps/", "studies/")):  # a single-run config: a one-run sweep over it
            return self.launch_text(yaml.safe_dump({"name": path.stem, "base": str(path)}), trusted=True)
        return self.start(path, self.validate(path, trusted=True))

    def launch_text(self, text: str, trusted: bool = False) -> Job:
        """A pasted sweep/study file: written to a new file in RUNS_DIR/.ui/launches/, validated, then
        started; when it does not validate the file is removed again and the error is the CLI's."""
        if not text.strip():
            raise UserError("the YAML field is empty: paste a sweep file (base: + variants:) or pick a recipe")
        stem = f"launch-{time.strftime('%Y%m%d-%H%M%S')}"
        path = new_file(self.root / ".ui" / "launches", stem, absolute_bases(text, recipes_dir() / "sweeps"))
        try:
            planned = self.validate(path, trusted)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return self.start(path, planned)

    def command(self, path: Path) -> list[str]:
        return [sys.executable, "-m", "peftlab", "sweep", str(path), "--output-dir", str(self.root)]

    def start(self, path: Path, planned) -> Job:
        folder = self.folder_of(planned)
        with self.lock:
            if live_pid(self.root / folder) is not None or any(
                j.running and j.folder == folder for j in self.jobs.values()
            ):
                raise UserError(f"{folder}: a sweep is already running on this folder; stop it first")
            command = self.command(path)
            self.folder.mkdir(parents=True, exist_ok=True)
            # every job this or an earlier dashboard started has its files there (a log without a job file
            # too); the log is created exclusively, so a number another dashboard just took is skipped
            n = max((job_number(p.stem) for p in self.folder.glob("job*.*")), default=0) + 1
            while True:
                try:
                    fh = open(self.folder / f"job{n}.log", "xb")  # never another job's log continued
                    break
                except FileExistsError:
                    n += 1
            job_id, log = f"job{n}", self.folder / f"job{n}.log"
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            with fh:
                # its own session: stop sends SIGINT to the sweep and its run, as Ctrl-C in a terminal does
                proc = subprocess.Popen(
                    command,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=self.workdir,
                    start_new_session=True,
                )
            created = started_at(proc.pid)
            write_json(
                self.folder / f"{job_id}.json",
                {
                    "folder": folder,
                    "pid": proc.pid,
                    "created": created,
                    "command": command,
                    "workdir": str(self.workdir),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                },
            )
            job = self.jobs[job_id] = Job(job_id, folder, log, proc.pid, created, proc)
            return job

    def job_for(self, folder: str) -> Job | None:
        found = [
            j
            for j in self.jobs.values()
            if j.folder == folder or folder.startswith(j.folder + "/") or j.folder.startswith(folder + "/")
        ]
        return found[-1] if found else None

    def stop(self, folder: str, parts: list[Path]) -> None:
        """SIGINT to the sweep's process group (ours) or to the sweep process holding the folder's lock
        (one started elsewhere: it passes the interrupt on to its run after a grace period)."""
        job = self.job_for(folder)
        if job and job.running:
            os.killpg(job.pid, signal.SIGINT)  # its own session: the group id is its pid
            return
        for part in parts:
            pid = live_pid(part)
            if pid:
                os.kill(pid, signal.SIGINT)
                return
        raise UserError(f"{folder}: no sweep is running there")

    def resume(self, folder: str, source: str | None) -> Job:
        """The sweep again from its file: finished runs are kept, the interrupted one resumes."""
        if not source:
            raise UserError(f"{folder}: sweep.json does not name the sweep file it was made from")
        path = Path(source)
        if not path.is_file():
            raise UserError(f"{folder}: its sweep file {source} is gone; run `peftlab sweep FILE` with it again")
        trusted = is_under(path, [recipes_dir().resolve()])
        planned = self.validate(path, trusted)
        made = self.folder_of(planned)
        if made != folder and not folder.startswith(made + "/"):
            raise UserError(
                f"{folder}: its sweep file {source} now writes to {made}; run it from a terminal "
                f"with the --output-dir it was made with"
            )
        return self.start(path, planned)

    def log_tail(self, job: Job, n: int = 20) -> list[str]:
        return tail(job.log, n)
