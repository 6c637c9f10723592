"""What the bench scripts share: the summary of repeated measurements (median, min, max, values)."""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the bench runs from a checkout; peftlab.hardware names the CPU


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}
