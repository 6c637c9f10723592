"""The sweep report as one self-contained HTML file (tables + plots inlined as base64 PNGs),
with the same PNGs written next to it."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from peftlab.report.plots import plot_metric_per_epoch, plot_pareto, plot_sweep_losses
from peftlab.report.search import search_lines, search_table
from peftlab.report.tables import (
    COSTS,
    MADE_WITH_NOTE,
    failed_lines,
    made_with_lines,
    phases_of,
    recommendation_lines,
    sections_of,
    split_note,
    table_notes,
    table_rows,
)
from peftlab.runs import layout
from peftlab.runs.rundir import write_text

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}tr.best td{font-weight:600;background:#eef7ee}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.note{color:#555;font-size:13px}"""


def html_table(header, rows, best: str | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    mark = ' class="best"'
    body = "".join(
        f"<tr{mark if best and r[0] == best else ''}>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def inline_png(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def section_html(sec: dict, ran: list, out: Path, split: bool, plots: list) -> list[str]:
    """One metric's header, verdict and tables; its plots are drawn and added to `plots`. With several
    metrics each gets its heading and its own plot files (named after the metric)."""
    suffix = "-" + re.sub(r"[^\w@-]", "_", sec["metric"]) if split else ""  # a file name, whatever result.json says
    mine = [
        (
            f"metric_per_epoch{suffix}.png",
            f"{sec['metric']} per epoch",
            lambda p: plot_metric_per_epoch(ran, sec["metric"], p),
        ),
        (f"pareto{suffix}.png", f"{sec['metric']} vs cost, Pareto front", lambda p: plot_pareto(sec, COSTS, p)),
    ]
    for name, _, make in mine:
        make(out / name)
    plots += mine
    h = "h3" if split else "h2"
    parts = [f"<h2>Best epoch chosen by {html.escape(sec['metric'])}</h2>"] if split else []
    parts.append(
        f"<p>Task <b>{html.escape(str(sec['task']))}</b>, model <b>{html.escape(str(sec['model']))}</b>; "
        f"best epoch chosen by <b>{html.escape(sec['metric'])}</b>.</p>"
    )
    parts.append("<ul>" + "".join(f"<li>{html.escape(v).replace('**', '')}</li>" for v in sec["verdict"]) + "</ul>")
    for title, phase in phases_of(sec):
        parts.append(f"<{h}>{html.escape(title)}</{h}>" + html_table(*table_rows(sec, phase), best=sec["best"]))
        parts += [f'<p class="note">{plain(note)}</p>' for note in table_notes(sec, phase)]
    return parts


def plain(markdown: str) -> str:
    """Escaped text of a markdown line, its ** and * (bold, italics) marks dropped."""
    return html.escape(markdown).replace("**", "").replace("*", "")


def recommendation_html(s: dict) -> str:
    """The report's opening, as in report.md: each section's recommendation lines."""
    blocks = []
    for block in recommendation_lines(s):
        items = [line[2:] if line.startswith("- ") else line for line in block.split("\n")]
        blocks.append('<ul class="recommendation">' + "".join(f"<li>{plain(i)}</li>" for i in items) + "</ul>")
    return "".join(blocks)


def write_html(s: dict, runs, out: Path) -> Path:
    parts = [f"<h1>Sweep {html.escape(s['sweep'])}</h1>", recommendation_html(s)]
    if s.get("description"):
        parts.append(f"<p>{html.escape(s['description'])}</p>")
    if s.get("search"):  # `search:`: each method's chosen setting first (report/search.py)
        lines = search_lines(s["search"])
        parts.append(
            f"<p>{html.escape(lines[0])}</p><ul>"
            + "".join(f"<li>{html.escape(x[2:]).replace('**', '')}</li>" for x in lines[1:])
            + "</ul>"
        )
    sections = sections_of(s)
    if sections:
        done = [r for r in runs if r.status == "completed"]
        split = len(sections) > 1
        if split:
            parts.append(f"<p>{html.escape(split_note(s)).replace('**', '')}</p>")
        plot_loss = ("loss_curves.png", "training loss of all runs", lambda p: plot_sweep_losses(done, p))
        plot_loss[2](out / plot_loss[0])
        shown = [plot_loss]
        for sec in sections:
            ran = [r for r in done if r.result.get("metric_for_best") == sec["metric"]] if split else done
            parts += section_html(sec, ran, out, split, shown)
        parts.append("<h2>Plots</h2>" + "".join(inline_png(out / name, alt) for name, alt, _ in shown))
    elif not s.get("evaluations"):
        parts.append("<p>No completed runs yet.</p>")
    if s.get("search"):
        parts.append("<h2>Search</h2>" + html_table(*search_table(s["search"])))
    if s.get("evaluations"):
        ev = s["evaluations"]
        parts.append(
            "<h2>Zero-shot, few-shot, tuned, merged and quantized</h2>"
            + html_table(ev["header"], ev["rows"])
            + f'<p class="note">{html.escape(ev["note"])}</p>'
        )
    if s.get("cost"):  # report/cost.py: predicted against measured
        cost = s["cost"]
        parts.append("<h2>Predicted and measured cost</h2>" + html_table(cost["header"], cost["rows"]))
        parts.append(f'<p class="note">{html.escape(cost["note"])}</p>')
    made = made_with_lines(s)
    if made:
        parts.append(
            f"<h2>Made with</h2><p class='note'>{html.escape(MADE_WITH_NOTE)}</p><ul>"
            + "".join(f"<li>{html.escape(line[2:])}</li>" for line in made)
            + "</ul>"
        )
    failed = failed_lines(s)
    if failed:
        parts.append(
            "<h2>Runs not completed</h2><ul>"
            + "".join(f"<li>{html.escape(line[2:]).replace('**', '')}</li>" for line in failed)
            + "</ul>"
        )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>peftlab sweep {html.escape(s['sweep'])}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    path = out / layout.REPORT_HTML
    write_text(path, page)
    return path
