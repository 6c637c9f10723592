"""A sweep's runs side by side: a local pool of N processes (`--workers N`), or Ray tasks on one
machine or a cluster (`--backend ray`).

Every run is still the `peftlab train` / `peftlab eval` process the sequential sweep starts, with the
same command line, so run folders, sweep.json, resume, failure records and the report do not depend
on the backend. The loop that schedules them is the sequential sweep's too (runner.run_todo: which run
next, an evaluation after its run, sweep.json, the progress record and its ETA, Ctrl-C); a backend is
a Launcher it drives. What changes is who starts the process and where:

- pool: a thread per running run starts it here; at most `workers` at once.
- ray: each run is a Ray task (`num_cpus`, `num_gpus` = --gpus-per-run) whose body starts the same
  process on the node Ray picked. Ray masks CUDA_VISIBLE_DEVICES per task, so a run sees its own GPUs.
  A task whose worker dies (node lost, process killed), or whose run's process is killed by a signal
  (a lost node's run can die before the worker waiting for it, which then reports it), is retried by
  Ray up to --max-retries times, on a node that is alive; the retry passes --resume, so the run goes
  on from its last checkpoint. Ctrl-C cancels the tasks, each of which stops its run with SIGINT (Ray's
  processes never get the terminal's), and waits for them to save their state before Ray goes.
  Plain tasks rather than Ray Tune: Tune lays trials out in its own folders and wants its own storage
  settings on a cluster; ours are peftlab run folders. Tune's early-stopping schedulers (ASHA) would
  pay off for large hyper-parameter grids where most points can be dropped after an epoch - not for
  the method comparisons here, where every run's full curve is the result.

Runs that share a machine share its cores: each gets `cpus_per_run` threads (OMP/MKL thread count and
torch's), as two torch processes that each take every core run 10-20x slower, not 2x.
An evaluation of another run of the sweep (`of:`) starts only after that run finished.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from peftlab.errors import UserError
from peftlab.runs import layout
from peftlab.sweep.terminal import ANSI

BACKENDS = ("sequential", "pool", "ray")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass
class Backend:
    kind: str = "sequential"  # sequential | pool | ray
    workers: int = 1  # runs at once (pool; ray on a local instance: its default too)
    gpus_per_run: int = 0  # GPUs per run; >1 starts the run under torchrun, one process per GPU
    cpus_per_run: int = 0  # threads (and Ray CPUs) per run; 0 = this machine's cores // workers
    ray_address: str = ""  # "" = start a local Ray instance; auto | HOST:PORT = join a cluster
    max_retries: int = 2  # ray: reruns of a run whose worker died

    def threads(self) -> int:
        return self.cpus_per_run or max(1, (os.cpu_count() or 1) // max(1, self.workers))


def check_backend(b: Backend) -> Backend:
    """Bad combinations become one message naming the option."""
    if b.kind not in BACKENDS:
        raise UserError(f"--backend: '{b.kind}' is not one of {', '.join(BACKENDS)}")
    if b.workers < 1:
        raise UserError(f"--workers: {b.workers} must be 1 or more")
    if b.gpus_per_run < 0 or b.cpus_per_run < 0 or b.max_retries < 0:
        raise UserError("--gpus-per-run, --cpus-per-run and --max-retries must be 0 or more")
    if b.ray_address and b.kind != "ray":
        raise UserError("--ray-address joins a Ray cluster: add --backend ray")
    if b.kind == "sequential" and b.workers > 1:
        b.kind = "pool"  # --workers N alone: a local pool
    if b.kind == "pool" and b.gpus_per_run:
        have = cuda_devices()
        if len(have) < b.gpus_per_run * b.workers:
            raise UserError(
                f"--gpus-per-run {b.gpus_per_run} x --workers {b.workers} needs "
                f"{b.gpus_per_run * b.workers} GPUs; this machine has {len(have)}"
                + ("" if have else " (torch sees no CUDA device)")
            )
    return b


def cuda_devices() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(n)]
    return ids[:n]


def under_torchrun(args: list[str], procs: int) -> list[str]:
    """`python -m peftlab ARGS` as one process, or under torchrun with one process per GPU. --standalone
    gives each run its own rendezvous on a free port, so runs side by side do not collide."""
    if procs <= 1:
        return [sys.executable, "-m", "peftlab"] + args
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={procs}",
        "-m",
        "peftlab",
    ] + args


def thread_env(threads: int) -> dict:
    return {v: str(threads) for v in THREAD_VARS}  # torch takes its intra-op thread count from OMP_NUM_THREADS


class Discard:
    """A sink for sweep.pump's raw copy: the console gets the prefixed lines instead."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def run_child(
    cmd: list[str], env: dict, log_path: Path, tag: str, sink=None, signalled: bool = True
) -> tuple[int, list[str]]:
    """Start one run's process, copy its output to its log (as sweep.pump writes it: the lines left on a
    screen) and, each finished line prefixed with the run's name, to `sink` (progress bars and their
    cursor codes left out); returns (exit code, the last lines of its stderr). Used by both backends.
    `signalled`: a Ctrl-C of the sweep reaches the run itself (False in a Ray task: see stop_child)."""
    from peftlab.sweep.process import pump, stop_child

    sink = sink or sys.stdout
    lock = threading.Lock()

    def on_line(line: str) -> None:
        line = ANSI.sub("", line)
        if line.strip() and not re.search(r"\d+%\|", line):
            with lock:
                sink.write(f"[{tag}] {line}\n")
                sink.flush()

    tail: list[str] = []
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join(cmd)}   # {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n")
        log.flush()
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        pumps = [
            threading.Thread(target=pump, args=(child.stdout, Discard(), log, [], on_line), daemon=True),
            threading.Thread(target=pump, args=(child.stderr, Discard(), log, tail, on_line), daemon=True),
        ]
        for t in pumps:
            t.start()
        try:
            code = wait_for(child)
        except BaseException:  # the sweep stops (Ctrl-C, a cancelled Ray task): the run saves its state first
            stop_child(child, signalled)
            raise
        for t in pumps:
            t.join(timeout=5)
    return code, tail


def wait_for(child: subprocess.Popen) -> int:
    """child.wait() in steps of a second: Ray cancels a task by raising KeyboardInterrupt in its thread
    (interrupt_main), which Python delivers between bytecodes, never inside one blocking wait; a plain
    wait() let the run train on until Ray was shut down under it."""
    while True:
        try:
            return child.wait(timeout=1)
        except subprocess.TimeoutExpired:
            continue


STOP_WAIT_S = 120  # after Ctrl-C, how long a Ray sweep waits for its runs to save their state (stop_child: 70 s)


class Launcher:
    """What the sweep's one scheduling loop (runner.run_todo) drives, whatever the backend: `slots` runs
    at once; submit() starts a run and returns a Future, outcome() turns a finished one into its
    sweep.json entry; release() frees what the run held; stop() after Ctrl-C; close() at the end.
    `foreground`: the run's output goes to the console as it is (the sequential launcher, runner.py)
    rather than line by line with the run's name, so the loop announces runs as the sequential sweep
    always did. `upcoming` is the run the loop starts next if nothing else is started first: the
    sequential launcher starts its process ahead."""

    slots = 1
    foreground = False

    def __init__(self, sweep):
        self.sweep = sweep

    def submit(self, run, mode: str, upcoming: tuple | None) -> Future:
        raise NotImplementedError

    def outcome(self, future: Future, run, started: str) -> dict:
        from peftlab.sweep.process import entry_of

        try:
            code, tail = future.result()
        except Exception as e:  # noqa: BLE001 - a task Ray gave up on: the run failed, the sweep goes on
            code, tail = None, [task_error(e)]
        return entry_of(self.sweep, run, code, tail, started)

    def release(self, future: Future) -> None:
        pass

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def side_by_side(sweep, backend: Backend) -> Launcher:
    """The pool or Ray launcher for `backend`, announced with how many runs it runs at once."""
    launcher = RayLauncher(sweep, backend) if backend.kind == "ray" else PoolLauncher(sweep, backend)
    print(
        f"sweep {sweep.name}: {backend.kind} backend, up to {launcher.slots} runs at once, "
        f"{backend.threads()} threads{f', {backend.gpus_per_run} GPU(s)' if backend.gpus_per_run else ''} each",
        flush=True,
    )
    return launcher


def task_error(e: Exception) -> str:
    """One line for sweep.json from an exception Ray raised for a task (it wraps the task's own)."""
    cause = getattr(e, "cause", None) or e
    lines = [l.strip() for l in str(cause).strip().splitlines() if l.strip()]
    return f"{type(cause).__name__}: {lines[-1][:400] if lines else ''}"


class PoolLauncher(Launcher):
    """Threads here; each starts its run's process with its slice of threads and, with --gpus-per-run,
    its own CUDA_VISIBLE_DEVICES."""

    def __init__(self, sweep, backend: Backend):
        super().__init__(sweep)
        self.backend, self.slots = backend, backend.workers
        self.pool = ThreadPoolExecutor(max_workers=backend.workers)
        gpus = cuda_devices() if backend.gpus_per_run else []
        k = backend.gpus_per_run
        self.free = [",".join(gpus[i * k : (i + 1) * k]) for i in range(backend.workers)] if k else []
        self.held: dict[Future, str] = {}

    def submit(self, run, mode: str, upcoming: tuple | None = None) -> Future:
        from peftlab.sweep.child import child_env
        from peftlab.sweep.process import child_command

        cmd = child_command(self.sweep, run, mode)
        env = child_env(**thread_env(self.backend.threads()))
        devices = self.free.pop(0) if self.free else None
        if devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = devices
        cmd = under_torchrun(cmd[3:], self.backend.gpus_per_run)
        future = self.pool.submit(
            run_child, cmd, env, self.sweep.folder / layout.LOGS / layout.run_log(run.name), run.name
        )
        if devices is not None:
            self.held[future] = devices
        return future

    def release(self, future: Future) -> None:
        if future in self.held:
            self.free.append(self.held.pop(future))

    def stop(self) -> None:
        pass  # the runs got the terminal's SIGINT too; run_child waits for them to write their state

    def close(self) -> None:
        self.pool.shutdown(wait=True)


# ---------------------------------------------------------------- ray


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install 'peftlab[ray]' (or pip install ray)") from None
    return ray


class RunKilled(Exception):
    """A Ray task's run process ended by a signal that no one in the sweep sent: raised so that Ray retries
    the task (retry_exceptions) as it retries one whose worker died. When a node is lost, its processes do
    not all end at once: the run could die first and its worker, still alive, report a run that failed."""


def ray_run(args: list[str], resume_args: list[str], log_path: str, tag: str, gpus: int, threads: int):
    """The body of a run's Ray task, on whichever node Ray picked: the same `python -m peftlab ...`
    process as the sequential sweep (the node's own Python). A marker file beside the log tells a
    retry (its worker or its process died mid-run) from the first attempt; a retry resumes from the
    last checkpoint, and says so, with its node, on the console and in the run's log."""
    import ray

    from peftlab.sweep.child import child_env

    node = ray.get_runtime_context().get_node_id()[:12]
    marker = Path(log_path).with_suffix(".attempt")
    marker.parent.mkdir(parents=True, exist_ok=True)
    attempt = int(marker.read_text() or 0) + 1 if marker.is_file() else 1
    marker.write_text(str(attempt))
    if attempt > 1:
        args = resume_args
        line = (
            f"[{tag}] attempt {attempt}, on node {node}: the previous one was lost; resuming from its last checkpoint"
        )
        print(line, flush=True)
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(line + "\n")
    env = child_env(**thread_env(threads))
    code, tail = run_child(under_torchrun(args, gpus), env, Path(log_path), tag, signalled=False)
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        raise RunKilled(f"{tag}: its process ended by {name} on node {node} (its node lost, or out of memory?)")
    marker.unlink(missing_ok=True)
    return code, tail


def ray_probe(folder: str) -> tuple[str, str]:
    """On one node: write a file into the sweep folder. ('', node) when it could."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f".probe-{node}").write_text(node)
    except OSError as e:
        return f"{type(e).__name__}: {e}", node
    return "", node


class RayLauncher(Launcher):
    def __init__(self, sweep, backend: Backend):
        super().__init__(sweep)
        ray = import_ray()
        self.ray, self.backend = ray, backend
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if not ray.is_initialized():
            if backend.ray_address:
                ray.init(
                    address=backend.ray_address,
                    include_dashboard=False,
                    log_to_driver=True,
                    logging_level="WARNING",
                    runtime_env=self.runtime_env(),
                )
            else:
                gpus = len(cuda_devices()) if backend.gpus_per_run else 0
                ray.init(
                    num_cpus=backend.threads() * backend.workers,
                    num_gpus=gpus,
                    include_dashboard=False,
                    log_to_driver=True,
                    logging_level="WARNING",
                    runtime_env=self.runtime_env(),
                )
        self.check_storage(sweep.folder)
        # as many runs as the cluster's CPUs hold (on a local instance: --workers, which sized it)
        fit = int(sum(n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")) // backend.threads())
        self.slots = max(1, fit if backend.ray_address else min(backend.workers, fit))
        self.task = ray.remote(ray_run)
        self.refs: dict[Future, object] = {}

    @staticmethod
    def runtime_env() -> dict:
        """peftlab's own environment for the workers (offline hub, the same PYTHONPATH when set)."""
        keep = (
            "HF_HUB_OFFLINE",
            "HF_DATASETS_OFFLINE",
            "PEFTLAB_CACHE",
            "PYTHONPATH",
            "TRANSFORMERS_NO_ADVISORY_WARNINGS",
            "PEFTLAB_START_AHEAD",
            "PEFTLAB_FAST_EXIT",
        )
        return {"env_vars": {k: os.environ[k] for k in keep if k in os.environ}}

    def check_storage(self, folder: Path) -> None:
        """Every node must see the sweep folder the driver sees (a shared file system): a run written
        on a node's local disk would be invisible to the report. Checked by a probe task per node."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        folder = folder.resolve()
        probe = self.ray.remote(ray_probe)
        nodes = [n["NodeID"] for n in self.ray.nodes() if n.get("Alive")]
        results = self.ray.get(
            [
                probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(
                    str(folder)
                )
                for n in nodes
            ]
        )
        for problem, node in results:
            seen = folder / f".probe-{node}"
            if problem or not seen.is_file():
                raise UserError(
                    f"--backend ray: node {node[:12]} cannot write the sweep folder {folder}"
                    f"{f' ({problem})' if problem else ' where this machine sees it'}; put output_dir "
                    f"on storage every node mounts at the same path (NFS, a cluster file system), "
                    f"or pass --output-dir"
                )
            seen.unlink(missing_ok=True)

    def submit(self, run, mode: str, upcoming: tuple | None = None) -> Future:
        from peftlab.sweep.process import child_command

        args = child_command(self.sweep, run, mode)[3:]  # after `python -m peftlab`: each node runs its own Python
        resume = [a if a != "--overwrite" else "--resume" for a in args] if run.kind == "train" else args
        log = self.sweep.folder.resolve() / layout.LOGS / layout.run_log(run.name)
        marker = log.with_suffix(".attempt")
        marker.unlink(missing_ok=True)
        ref = self.task.options(
            num_cpus=self.backend.threads(),
            num_gpus=self.backend.gpus_per_run,
            max_retries=self.backend.max_retries,
            retry_exceptions=[RunKilled],
        ).remote(args, resume, str(log), run.name, self.backend.gpus_per_run, self.backend.threads())
        future = ref.future()
        self.refs[future] = ref
        return future

    def release(self, future: Future) -> None:
        self.refs.pop(future, None)

    def stop(self) -> None:
        """After Ctrl-C. Ray's processes do not get the terminal's SIGINT (Ray blocks it in them), so each
        task is cancelled (a KeyboardInterrupt in it: run_child stops its run, which writes its interrupted
        state), and the sweep waits for them before close() shuts Ray down: shutting it down at once killed
        the runs mid-epoch, their result.json still `running`. A second Ctrl-C stops the wait."""
        refs = list(self.refs.values())
        if not refs:
            return
        print(
            f"sweep: stopping {len(refs)} run(s) on Ray; each saves its state first (Ctrl-C again not to wait)",
            flush=True,
        )
        for ref in refs:
            self.ray.cancel(ref)
        self.ray.wait(refs, num_returns=len(refs), timeout=STOP_WAIT_S)

    def close(self) -> None:
        if not self.backend.ray_address:
            self.ray.shutdown()
