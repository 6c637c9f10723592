"""Every import the code makes is a declared dependency (pyproject.toml), so a clean install runs it."""

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def imported_top_modules() -> dict[str, str]:
    """Top-level module -> first file importing it, over src/peftlab (relative imports excluded)."""
    seen = {}
    for path in sorted((ROOT / "src" / "peftlab").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                else []
            )
            for name in names:
                seen.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return seen


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    return {re.split(r"[<>=!~ \[]", s, maxsplit=1)[0].lower().replace("_", "-") for s in specs}


def test_every_third_party_import_is_a_declared_dependency():
    dists = packages_distributions()
    wanted = declared()
    missing = []
    for module, where in imported_top_modules().items():
        if module in sys.stdlib_module_names or module == "peftlab" or module == "__future__":
            continue
        names = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        if not names & wanted:
            missing.append(f"{module} (imported in {where}; installed by {sorted(names) or 'nothing'})")
    assert not missing, "imports without a declared dependency: " + "; ".join(missing)
