"""A sweep's runs side by side: `--workers N` (a local pool) and `--backend ray` (each run a Ray task on
a local 2-worker Ray instance) give the report the sequential sweep gives; an evaluation of another
run waits for it; a run whose Ray worker is killed is retried and resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from peftlab.cli import main
from peftlab.report.evals import HEADER_COSTS

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT / "src")}


def sweep_file(tmp_path: Path, base_config: list, name: str, variants: list, **config) -> Path:
    cfg = dict(kv.split("=", 1) for kv in base_config)
    cfg.pop("output_dir")
    cfg.update({"epochs": 2, **config})
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {"name": name, "output_dir": str(tmp_path / "sweeps"), "config": cfg, "variants": variants}, sort_keys=False
        )
    )
    return path


VARIANTS = [
    {"name": "head", "method": "head", "lr": 5e-2},
    {"name": "lora-r4", "method": "lora", "lora_rank": 4, "lr": 3e-2},
    {"name": "lora-r4-again", "of": "lora-r4"},
]  # an evaluation of the run above: must wait for it


def groups(folder: Path) -> dict:
    report = json.loads((folder / "report" / "report.json").read_text())
    return {g["group"]: g for g in report["groups"]}


def same_report(a: Path, b: Path) -> None:
    """Every number the tables show, except time and memory (another process layout measures those)."""
    ga, gb = groups(a), groups(b)
    assert list(ga) == list(gb)
    for name, g in ga.items():
        h = gb[name]
        assert (g["trainable_params"], g.get("best_epoch")) == (h["trainable_params"], h.get("best_epoch"))
        for phase in ("metrics_epoch0", "metrics_best"):
            assert set(g[phase]) == set(h[phase])
            for col, stat in g[phase].items():
                # one thread per run side by side, two in sequence: float sums may differ in the last bits
                assert stat["mean"] == pytest.approx(h[phase][col]["mean"], rel=1e-4, abs=1e-6), (name, phase, col)
    # the after-training table (the evaluation of lora-r4): its metric cells, not its costs
    ea, eb = (json.loads((f / "report" / "report.json").read_text())["evaluations"] for f in (a, b))
    costs = len(HEADER_COSTS)
    assert ea["header"] == eb["header"] and [r[:-costs] for r in ea["rows"]] == [r[:-costs] for r in eb["rows"]]
    assert len(ea["rows"]) == 3


def run_cli(args: list, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "peftlab", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_pool_and_ray_give_the_sequential_report(tmp_path, base_config, capsys):
    seq = sweep_file(tmp_path, base_config, "seq", VARIANTS)
    assert main(["sweep", str(seq)]) == 0
    capsys.readouterr()

    pool = sweep_file(tmp_path, base_config, "pool", VARIANTS)
    out = run_cli(["sweep", str(pool), "--workers", "2"]).stdout
    assert "pool backend, up to 2 runs at once, 1 threads each" in out
    assert "[head] " in out and "[lora-r4] " in out  # each run's lines, named
    same_report(tmp_path / "sweeps" / "seq", tmp_path / "sweeps" / "pool")

    ray_sweep = sweep_file(tmp_path, base_config, "ray", VARIANTS)
    out = run_cli(["sweep", str(ray_sweep), "--backend", "ray", "--workers", "2"]).stdout
    assert "ray backend, up to 2 runs at once" in out
    folder = tmp_path / "sweeps" / "ray"
    same_report(tmp_path / "sweeps" / "seq", folder)
    state = json.loads((folder / "sweep.json").read_text())
    assert [r["status"] for r in state["runs"]] == ["completed"] * 3
    # the two training runs ran side by side, each with one of the two threads; the evaluation after its run
    results = {n: json.loads((folder / n / "result.json").read_text()) for n in ("head", "lora-r4")}
    assert {r["torch_threads"] for r in results.values()} == {1}
    (a0, a1), (b0, b1) = [(r["timeline"]["process_started"], r["timeline"]["finished"]) for r in results.values()]
    assert a0 < b1 and b0 < a1
    entries = {r["name"]: r for r in state["runs"]}
    assert entries["lora-r4-again"]["started_at"] >= entries["lora-r4"]["finished_at"]
    assert (folder / "logs" / "lora-r4.log").read_text().count("epoch 2:") == 1
    assert not list(folder.glob(".probe-*")) and not list((folder / "logs").glob("*.attempt"))

    # rerun: nothing to do, the same report
    again = run_cli(["sweep", str(ray_sweep), "--backend", "ray", "--workers", "2"]).stdout
    assert "3 already done or kept, 0 to run" in again


def test_a_run_whose_ray_worker_is_killed_resumes_from_its_checkpoint(tmp_path, base_config):
    path = sweep_file(tmp_path, base_config, "killed", [{"name": "long", "method": "full"}], epochs=40, save_steps=2)
    folder = tmp_path / "sweeps" / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "peftlab", "sweep", str(path), "--backend", "ray", "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )
    run_dir, killed = folder / "long", None
    deadline = time.time() + 300
    while time.time() < deadline and killed is None:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        if list(run_dir.glob("checkpoints/checkpoint-*/trainer_state.json")):
            for p in psutil.process_iter(["cmdline"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if "peftlab" in cmd and " train " in cmd and str(folder) in cmd:
                    # the tiny run takes seconds: hold it while its Ray worker dies (a node lost mid-run);
                    # the run then gets its parent-death signal as it is let go
                    p.suspend()
                    killed = p.parent()
                    killed.send_signal(signal.SIGKILL)
                    killed.wait(timeout=30)
                    p.resume()
                    break
        time.sleep(0.02)
    assert killed is not None, "no checkpoint was written in time"
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["resumed"] is True
    assert "resuming from its last checkpoint" in (folder / "logs" / "long.log").read_text() + out
    assert json.loads((folder / "sweep.json").read_text())["runs"][0]["status"] == "completed"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ray-address", "auto"], "--ray-address joins a Ray cluster: add --backend ray"),
        (["--backend", "dask"], "--backend: 'dask' is not one of sequential, pool, ray"),
        (["--workers", "0"], "--workers: 0 must be 1 or more"),
    ],
)
def test_bad_backend_options_are_refused_before_anything_runs(tmp_path, base_config, capsys, args, message):
    path = sweep_file(tmp_path, base_config, "bad", VARIANTS[:1])
    assert main(["sweep", str(path), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "sweeps" / "bad").exists()


@pytest.mark.parametrize("gpus", [None, 0, 1, 3])
def test_more_gpus_than_the_machine_has_are_refused_whatever_it_has(tmp_path, base_config, capsys, monkeypatch, gpus):
    """One more GPU than the machine has is refused naming both counts, on a CPU-only machine and on a GPU
    host alike (None: the machine's own count; 0, 1, 3: torch made to report that many)."""
    import torch

    from peftlab.sweep.backends import cuda_devices

    if gpus is not None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    have = len(cuda_devices())
    assert gpus is None or have == gpus
    per_run = have // 2 + 1  # x 2 workers: one or two more than the machine has
    path = sweep_file(tmp_path, base_config, "bad", VARIANTS[:1])
    assert main(["sweep", str(path), "--workers", "2", "--gpus-per-run", str(per_run)]) == 2
    assert f"needs {2 * per_run} GPUs; this machine has {have}" in capsys.readouterr().err
    assert not (tmp_path / "sweeps" / "bad").exists()


NODE = "ab" * 28  # a node id as Ray writes them (28 bytes, hex)


def test_a_node_that_cannot_see_the_sweep_folder_is_refused_by_name(tmp_path):
    """The driver checks, for every node, that the probe file the node wrote is where the driver sees the
    folder: a node writing to its own local disk (no shared storage) is refused with the fix."""
    from types import SimpleNamespace

    from peftlab.errors import UserError
    from peftlab.sweep.backends import RayLauncher

    class Remote:  # stands in for ray.remote(ray_probe): the "node" writes nowhere the driver can see
        def options(self, **kw):
            return self

        def remote(self, folder):
            return ("", NODE)

    fake_ray = SimpleNamespace(
        remote=lambda f: Remote(), get=lambda refs: refs, nodes=lambda: [{"NodeID": NODE, "Alive": True}]
    )
    launcher = RayLauncher.__new__(RayLauncher)
    launcher.ray = fake_ray
    (tmp_path / "sweep").mkdir()
    with pytest.raises(
        UserError,
        match=r"node abababababab cannot write the sweep folder .*sweep where this "
        r"machine sees it; put output_dir on storage every node mounts",
    ):
        launcher.check_storage(tmp_path / "sweep")


def sweep_processes(folder: Path) -> list:
    """The processes still running a run of the sweep in `folder`, on any node of this machine."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "peftlab" in cmd and (" train " in cmd or " eval " in cmd) and str(folder) in cmd:
            found.append(p)
    return found


def test_ctrl_c_on_a_ray_sweep_saves_every_run_and_the_same_command_continues(tmp_path, base_config):
    """Ctrl-C while two runs train side by side as Ray tasks: each run writes its interrupted state (the
    Ray processes do not get the terminal's SIGINT: the sweep stops them, and waits for them before Ray
    goes), sweep.json says interrupted, no run process is left, and the same command resumes both."""
    variants = [{"name": "full", "method": "full"}, {"name": "lora", "method": "lora", "lora_rank": 4, "lr": 3e-2}]
    path = sweep_file(tmp_path, base_config, "stopped", variants, epochs=30, save_steps=6)
    folder = tmp_path / "sweeps" / "stopped"
    cmd = [sys.executable, "-m", "peftlab", "sweep", str(path), "--backend", "ray", "--workers", "2"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 300
    while not all(list((folder / v["name"]).glob("checkpoints/checkpoint-*/trainer_state.json")) for v in variants):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: SIGINT to the sweep's process group
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 130 and "Run the same command again to continue" in out, out[-3000:]
    state = json.loads((folder / "sweep.json").read_text())
    assert [r["status"] for r in state["runs"]] == ["interrupted", "interrupted"]
    for v in variants:
        result = json.loads((folder / v["name"] / "result.json").read_text())
        assert result["status"] == "interrupted", (v["name"], result["status"])
    assert not sweep_processes(folder)  # no run left behind, training on after the sweep stopped
    assert not [p for p in folder.rglob("*") if ".tmp" in p.name]

    again = run_cli(cmd[3:]).stdout
    assert "0 already done or kept, 2 to run" in again
    for v in variants:
        result = json.loads((folder / v["name"] / "result.json").read_text())
        assert result["status"] == "completed" and result["resumed"] is True, v["name"]
    assert [r["status"] for r in json.loads((folder / "sweep.json").read_text())["runs"]] == ["completed"] * 2


def test_a_lost_node_loses_nothing(tmp_path, base_config):
    """A Ray cluster of three nodes on this machine (a head that runs nothing, two of one CPU each): the
    node a run trains on is removed mid-run, its processes with it, the run's before the Ray worker that
    waits for it (which then reported a failed run, and the evaluation of that run failed too). The run
    goes on on the other node from its checkpoint, and the report equals that of the same sweep run
    uninterrupted, one run at a time."""
    from ray.cluster_utils import Cluster

    reference = sweep_file(tmp_path, base_config, "reference", VARIANTS, epochs=6, save_steps=2)
    assert main(["sweep", str(reference)]) == 0
    path = sweep_file(tmp_path, base_config, "nodes", VARIANTS, epochs=6, save_steps=2)
    folder = tmp_path / "sweeps" / "nodes"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        nodes = {}
        for _ in range(2):
            node = cluster.add_node(num_cpus=1)
            nodes[node.all_processes["raylet"][0].process.pid] = node
        cluster.wait_for_nodes()
        cmd = ["sweep", str(path), "--backend", "ray", "--ray-address", cluster.address, "--cpus-per-run", "1"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "peftlab", *cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=ENV,
        )
        lost, deadline = None, time.time() + 300
        while lost is None:
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
            if list((folder / "lora-r4").glob("checkpoints/checkpoint-*/trainer_state.json")):
                run = next(p for p in sweep_processes(folder) if "lora-r4.yaml" in " ".join(p.cmdline()))
                run.suspend()  # hold it while its node goes
                lost = next(nodes[p.pid] for p in run.parents() if p.pid in nodes)
                cluster.remove_node(lost, allow_graceful=False)
                run.kill()  # the machine is gone, and every process on it
            time.sleep(0.02)
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, out[-3000:]
    finally:
        cluster.shutdown()
    other = next(n for n in nodes.values() if n is not lost)
    log = (folder / "logs" / "lora-r4.log").read_text()
    assert f"attempt 2, on node {other.node_id[:12]}: the previous one was lost; resuming" in log, log[-3000:]
    result = json.loads((folder / "lora-r4" / "result.json").read_text())
    assert result["status"] == "completed" and result["resumed"] is True
    assert [r["status"] for r in json.loads((folder / "sweep.json").read_text())["runs"]] == ["completed"] * 3
    same_report(tmp_path / "sweeps" / "reference", folder)
