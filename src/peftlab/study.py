"""A study: several sweeps of one design in one file, e.g. the same methods on three tasks.

    name: encoder-three-tasks
    description: "..."
    config: {epochs: 2}              # shared by every part (a part's own base and config win)
    variants: [...]                  # the parts' default variants (a part may list its own)
    parts:
      - {name: sst2, base: ../sst2-minilm-lora.yaml, config: {max_samples: 1000}}
      - {name: squad2, base: ../squad2-minilm-lora.yaml, variants: [...]}

Each part is an ordinary sweep in <output_dir>/<study>/<part>/ (its own sweep.json, logs, resume and
report): a report compares the methods of one task by that task's metric, so a study across tasks is
one table per task, gathered in <output_dir>/<study>/report.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .rundir import write_text

STUDY_KEYS = ("name", "description", "output_dir", "base", "config", "variants", "grid", "report_epochs", "parts")
PART_KEYS = ("name", "description", "base", "config", "variants", "grid", "report_epochs")


@dataclass
class Study:
    name: str
    source: Path
    folder: Path
    description: str = ""
    sweeps: list = field(default_factory=list)


def load_study(path: Path, data: dict, output_dir: str | None = None) -> Study:
    """Every part planned (and every run's config validated) before anything runs."""
    from .sweep import check_keys, config_layers, slug, sweep_from

    check_keys(data, str(path), STUDY_KEYS, "study key", "a study file")
    parts = data["parts"]
    if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
        raise UserError(f"{path}: `parts:` must be a list of sweep mappings, e.g. - {{name: sst2, base: sst2.yaml}}")
    name = slug(data.get("name") or path.stem)
    study = Study(name, path, Path(output_dir or data.get("output_dir") or "runs") / name,
                  str(data.get("description") or ""))
    # The study's base file goes under each part's base file, the study's `config:` over it (as a sweep's
    # config: is over its base), and the part's own config: over both. (A part's base file used to win
    # over the study's config:, which silently changed studies: a recipe's epochs, LoRA targets or
    # metric_for_best replaced the ones the study file asked for.)
    shared_base, shared_config = config_layers(data, path, str(path), split=True)
    seen = set()
    for i, part in enumerate(parts):
        where = f"{path}: parts[{i}]"
        check_keys(part, where, PART_KEYS, "key", "a part")
        if not part.get("name"):
            raise UserError(f"{where}: a part needs a `name:` (its folder in {study.folder})")
        if slug(part["name"]) in seen:
            raise UserError(f"{where}: two parts are named '{part['name']}'")
        seen.add(slug(part["name"]))
        merged = {"variants": data.get("variants"), "grid": data.get("grid"),
                  "report_epochs": data.get("report_epochs"), **part}
        study.sweeps.append(sweep_from(merged, path, str(study.folder), shared_base, f"{where} ({part['name']})",
                                       shared_config))
    return study


def write_study_report(study: Study, parts_markdown: list[str]) -> Path:
    """<study>/report.md: the study's description, then each part's report; study.json names the
    parts, so `peftlab report <study folder>` can write it again from the folders alone."""
    from .rundir import write_json

    write_json(study.folder / "study.json", {"name": study.name, "description": study.description,
                                             "source": str(study.source), "parts": [s.name for s in study.sweeps]})
    return gather(study.folder, study.name, study.description, [s.name for s in study.sweeps], parts_markdown)


def gather(folder: Path, name: str, description: str, parts: list[str], parts_markdown: list[str]) -> Path:
    head = [f"# Study {name}", "", description, ""] if description else [f"# Study {name}", ""]
    body = [f"## {part}\n\n{md}" for part, md in zip(parts, parts_markdown)]
    out = folder / "report.md"
    write_text(out, "\n".join(head) + "\n" + "\n\n".join(body))
    return out


def report_study(folder: Path) -> tuple[str, Path]:
    """`peftlab report STUDY_FOLDER`: every part's report written again, and the gathered report.md."""
    from .report import write_report
    from .rundir import read_json

    state = read_json(folder / "study.json", {}) or {}
    parts = [p for p in state.get("parts", []) if (folder / p).is_dir()]
    if not parts:
        raise UserError(f"{folder}/study.json names no part folder that exists; rerun the study's sweep")
    markdown = [write_report(folder / p)[0] for p in parts]
    out = gather(folder, state.get("name", folder.name), state.get("description", ""), parts, markdown)
    return out.read_text(encoding="utf-8"), out
