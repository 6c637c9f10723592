"""The search against the full grid: which rate each chose, and what each cost against the single-rate sweep.

    python compare.py SEARCH_SWEEP_FOLDER GRID_SWEEP_FOLDER

The grid is the same sweep file with `pruner: none` (every trial runs every epoch). The single-rate sweep is
each variant's first trial of the grid (the same config as a sweep without `search:`), timed from sweep.json.
"""

import json
import sys
from datetime import datetime
from pathlib import Path

from peftlab.report.tables import collect


def chosen(folder: str) -> dict:
    state, _ = collect(Path(folder))
    return {
        s["variant"]: (s["chosen_setting"], next(t["validation"] for t in s["trials"] if t["chosen"]))
        for s in state["search"]
    }


def seconds(entry: dict) -> float:
    return (datetime.fromisoformat(entry["finished_at"]) - datetime.fromisoformat(entry["started_at"])).total_seconds()


def main(search: str, grid: str) -> None:
    cs, cg = chosen(search), chosen(grid)
    for v in cs:
        print(f"{v:15} search {cs[v]}  grid {cg[v]}")
    print("same choice:", sum(cs[v][0] == cg[v][0] for v in cs), "of", len(cs))
    g = json.loads((Path(grid) / "sweep.json").read_text())["runs"]
    s = json.loads((Path(search) / "sweep.json").read_text())["runs"]
    firsts = {}
    for e in g:
        firsts.setdefault(e["variant"], e)
    plain, all_g, all_s = (sum(map(seconds, runs)) for runs in (firsts.values(), g, s))
    print(f"plain (first trial of each variant, run time): {plain:.0f} s; grid runs: {all_g:.0f} s; ", end="")
    print(f"search runs: {all_s:.0f} s")
    print(f"search/plain = {all_s / plain:.2f}x; grid/plain = {all_g / plain:.2f}x")


if __name__ == "__main__":
    main(*sys.argv[1:3])
