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

from peftlab.errors import UserError

STUDY_KEYS = (
    "name",
    "description",
    "output_dir",
    "base",
    "config",
    "variants",
    "grid",
    "search",
    "report_epochs",
    "parts",
)
PART_KEYS = ("name", "description", "base", "config", "variants", "grid", "search", "report_epochs")


@dataclass
class Study:
    name: str
    source: Path
    folder: Path
    description: str = ""
    sweeps: list = field(default_factory=list)


def load_study(path: Path, data: dict, output_dir: str | None = None) -> Study:
    """Every part planned (and every run's config validated) before anything runs."""
    from peftlab.sweep.plan import check_keys, config_layers, folder_name, sweep_from

    check_keys(data, str(path), STUDY_KEYS, "study key", "a study file")
    parts = data["parts"]
    if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
        raise UserError(f"{path}: `parts:` must be a list of sweep mappings, e.g. - {{name: sst2, base: sst2.yaml}}")
    name = folder_name(data.get("name") or path.stem, f"{path}: name" if data.get("name") else f"{path}: file name")
    study = Study(
        name, path, Path(output_dir or data.get("output_dir") or "runs") / name, str(data.get("description") or "")
    )
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
        part_folder = folder_name(part["name"], f"{where}: name")
        if part_folder in seen:
            raise UserError(f"{where}: two parts are named '{part['name']}'")
        seen.add(part_folder)
        merged = {
            "variants": data.get("variants"),
            "grid": data.get("grid"),
            "search": data.get("search"),
            "report_epochs": data.get("report_epochs"),
            **part,
        }
        study.sweeps.append(
            sweep_from(merged, path, str(study.folder), shared_base, f"{where} ({part['name']})", shared_config)
        )
    return study
