"""`peftlab report SWEEP_DIR`: write report/{report.md, .csv, .json, .html, *.png} from the run folders."""

from __future__ import annotations

from pathlib import Path

from peftlab.report.cost import cost_markdown, cost_section
from peftlab.report.search import with_search
from peftlab.report.tables import collect, summarize, to_csv, to_markdown
from peftlab.runs import layout
from peftlab.runs.rundir import write_json, write_text


def write_report(folder: Path) -> tuple[str, Path]:
    """Write report/{report.md,.csv,.json,.html,*.png}; returns (markdown, html path)."""
    from peftlab.report.html import write_html

    state, runs = collect(folder)
    s = summarize(folder, (state, runs))
    cost = cost_section(folder, runs)  # estimate.json's predictions beside the measures (report/cost.py)
    if cost:
        s["cost"] = cost
    out = Path(folder) / layout.REPORT
    out.mkdir(exist_ok=True)
    md = with_search(to_markdown(s), s.get("search") or []) + cost_markdown(cost)
    write_text(out / layout.REPORT_MD, md)
    write_text(out / layout.REPORT_CSV, to_csv(s))
    write_json(out / layout.REPORT_JSON, s)
    html = write_html(s, runs, out)
    return md, html
