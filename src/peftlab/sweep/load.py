"""Reading a sweep file: an ordinary sweep, or a study (a file with `parts:`)."""

from __future__ import annotations

from pathlib import Path

from peftlab.config.settings import read_yaml_mapping
from peftlab.sweep.plan import check_keys, sweep_from


def load_sweep(path: str | Path, output_dir: str | None = None):
    """Read a sweep file and expand it into planned runs; every run's config is validated here. A file
    with `parts:` is a study (study.py): several sweeps of one design, returned as a Study."""
    path = Path(path)
    data = read_yaml_mapping(path)
    if "parts" in data:
        from peftlab.sweep.study import load_study

        return load_study(path, data, output_dir)
    check_keys(data, str(path))
    return sweep_from(data, path, output_dir)
