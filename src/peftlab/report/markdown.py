"""A markdown table from a header and rows of cells: the one writer every report section uses (tables,
search, cost), in a module of its own so that the sections tables.py imports can use it too."""

from __future__ import annotations


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
