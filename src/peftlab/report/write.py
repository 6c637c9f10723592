"""`peftlab report SWEEP_DIR`: write report/{report.md, .csv, .json, .html, *.png} from the run folders."""
from __future__ import annotations

from pathlib import Path
from peftlab.runs.rundir import write_json, write_text
from peftlab.report.tables import collect, summarize, to_csv, to_markdown


def write_report(folder: Path) -> tuple[str, Path]:
    """Write report/{report.md,.csv,.json,.html,*.png}; returns (markdown, html path)."""
    from peftlab.report.html import write_html

    state, runs = collect(folder)
    s = summarize(folder, (state, runs))
    out = Path(folder) / "report"
    out.mkdir(exist_ok=True)
    md = to_markdown(s)
    write_text(out / "report.md", md)
    write_text(out / "report.csv", to_csv(s))
    write_json(out / "report.json", s)
    html = write_html(s, runs, out)
    return md, html
