"""Any runs, from any sweeps, in the report's two tables: the same summarize() / table_rows() as
`peftlab report`, over the chosen runs (runs of one sweep that differ only by seed stay one group)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from peftlab.errors import UserError
from peftlab.report.evals import is_eval
from peftlab.report.tables import Run, summarize
from peftlab.runs import layout
from peftlab.runs.rundir import read_json
from peftlab.ui.folders import run_at


def chosen_runs(root: Path, ids: list[str]) -> tuple[list[Run], list[int]]:
    """The runs, and the report_epochs their sweeps ask for."""
    picked = [run_at(root, i) for i in dict.fromkeys(ids)]
    folders = {f.rel: f for f, _ in picked}
    epochs = sorted(
        {
            int(e)
            for f in folders.values()
            for e in (read_json(f.path / layout.SWEEP_STATE, {}) or {}).get("report_epochs") or []
        }
    )
    # across sweeps a group is named sweep/group: lora-r8 of two sweeps are two rows, not one group of seeds
    several = len(folders) > 1
    return [replace(r, group=f"{f.rel}/{r.group}") if several else r for f, r in picked], epochs


def comparison(root: Path, ids: list[str]) -> tuple[dict, list[Run]]:
    if not ids:
        raise UserError("no runs chosen: tick the runs to compare on the list page")
    runs, epochs = chosen_runs(root, ids)
    trained = [r for r in runs if r.status == "completed" and r.result and not is_eval(r.result)]
    metrics = {r.result["metric_for_best"] for r in trained}
    if len(metrics) > 1:
        raise UserError(
            f"the chosen runs pick their best epoch by different metrics ({', '.join(sorted(metrics))}): "
            f"compare runs of one task"
        )
    state = {"name": "comparison", "description": f"{len(runs)} runs", **({"report_epochs": epochs} if epochs else {})}
    return summarize(Path(root), (state, runs)), runs
