"""The report's "Predicted and measured cost" section: the sweep folder's estimate.json (`peftlab sweep
--estimate`) beside what each completed run measured (result.json): time per epoch, the run's time from its
process's start (a warm-started run: from its turn) to its last file, and peak memory; ratio = measured /
predicted, per run and in total."""

from __future__ import annotations

from pathlib import Path

from peftlab.report.markdown import markdown_table
from peftlab.runs import layout
from peftlab.runs.rundir import UnreadableFile, read_json

HEADER = [
    "run",
    "time/epoch predicted (s)",
    "measured (s)",
    "ratio",
    "run time predicted (s)",
    "measured (s)",
    "ratio",
    "peak memory predicted (MiB)",
    "measured (MiB)",
]


def measured_run_s(result: dict) -> float | None:
    """Seconds from the run's process start (its turn, when started ahead) to its last file."""
    line = result.get("timeline") or {}
    if line.get("finished") and line.get("process_started"):
        return round(line["finished"] - line["process_started"], 2)
    return None


def ratio(measured, predicted) -> str:
    return f"{measured / predicted:.2f}" if measured is not None and predicted else "-"


def number(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def cost_section(folder: Path, runs: list) -> dict | None:
    """{header, rows, total, note} of the runs that estimate.json predicted and that completed; None without it."""
    try:
        estimate = read_json(Path(folder) / layout.ESTIMATE, None)
    except UnreadableFile:
        return None
    if not isinstance(estimate, dict):
        return None
    rows, predicted_total, measured_total = [], 0.0, 0.0
    for run in runs:
        p = estimate.get("runs", {}).get(run.name)
        if not p or "run_s" not in p or run.status != "completed" or not run.result:
            continue
        r = run.result
        took = measured_run_s(r)
        rows.append(
            [
                run.name,
                number(p["time_per_epoch_s"]),
                number(r.get("time_per_epoch_s")),
                ratio(r.get("time_per_epoch_s"), p["time_per_epoch_s"]),
                number(p["run_s"]),
                number(took),
                ratio(took, p["run_s"]),
                number(p["peak_memory_mb"], 0),
                number(r.get("peak_memory_mb"), 0),
            ]
        )
        if took is not None:
            predicted_total, measured_total = predicted_total + p["run_s"], measured_total + took
    if not rows:
        return None
    total = ["total", "", "", "", number(predicted_total), number(measured_total)]
    total += [ratio(measured_total, predicted_total), "", ""]
    note = f"{estimate.get('note', '')} {RATIO}".strip()
    return {"header": HEADER, "rows": rows + [total], "note": note}


def cost_markdown(section: dict | None) -> str:
    if not section:
        return ""
    table = markdown_table(section["header"], section["rows"])
    return f"\n## Predicted and measured cost\n\n{table}\n\n{section['note']}\n"


RATIO = (
    f"Predicted: `peftlab sweep --estimate` ({layout.ESTIMATE}); ratio = measured / predicted; a run's time counts "
    "from its process's start (a run started ahead: from its turn) to its last file."
)
