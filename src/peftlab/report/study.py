"""A study's report: each part's sweep report gathered into <study>/report.md, with study.json naming
the parts."""

from __future__ import annotations

from pathlib import Path

from peftlab.errors import UserError
from peftlab.runs import layout
from peftlab.runs.rundir import write_text
from peftlab.sweep.study import Study


def write_study_report(study: Study, parts_markdown: list[str]) -> Path:
    """<study>/report.md: the study's description, then each part's report; study.json names the
    parts, so `peftlab report <study folder>` can write it again from the folders alone."""
    from peftlab.runs.rundir import write_json

    write_json(
        study.folder / layout.STUDY_STATE,
        {
            "name": study.name,
            "description": study.description,
            "source": str(study.source),
            "parts": [s.name for s in study.sweeps],
        },
    )
    return gather(study.folder, study.name, study.description, [s.name for s in study.sweeps], parts_markdown)


def gather(folder: Path, name: str, description: str, parts: list[str], parts_markdown: list[str]) -> Path:
    head = [f"# Study {name}", "", description, ""] if description else [f"# Study {name}", ""]
    body = [f"## {part}\n\n{md}" for part, md in zip(parts, parts_markdown)]
    out = folder / layout.REPORT_MD
    write_text(out, "\n".join(head) + "\n" + "\n\n".join(body))
    return out


def report_study(folder: Path) -> tuple[str, Path]:
    """`peftlab report STUDY_FOLDER`: every part's report written again, and the gathered report.md."""
    from peftlab.report.write import write_report
    from peftlab.runs.rundir import read_json

    state = read_json(folder / layout.STUDY_STATE, {}) or {}
    parts = [p for p in state.get("parts", []) if (folder / p).is_dir()]
    if not parts:
        raise UserError(f"{folder}/study.json names no part folder that exists; rerun the study's sweep")
    markdown = [write_report(folder / p)[0] for p in parts]
    out = gather(folder, state.get("name", folder.name), state.get("description", ""), parts, markdown)
    return out.read_text(encoding="utf-8"), out
