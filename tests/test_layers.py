"""The package's layers: every import of peftlab (those inside functions too) goes down the layer
order or stays in its own package, and no import goes round a circle (a module that, through the
modules it imports, imports itself)."""

from __future__ import annotations

import ast
from pathlib import Path

import peftlab

SRC = Path(peftlab.__file__).parent
# low to high; the base modules (errors, hardware, the package root) may be imported by every layer
BASE = {"peftlab", "peftlab.errors", "peftlab.hardware"}
LAYERS = [
    "config",
    "runs",
    "data",
    "models",
    "tasks",
    "training",
    "inference",
    "export",
    "sweep",
    "report",
    "ui",
    "cli",
    "api",
    "__main__",
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py")}


def imports_of(path: Path, known: dict, name: str = "") -> list[tuple[int, str]]:
    """(line, module) of every peftlab import in a file; `from pkg import sub` names the submodule."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "peftlab"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            if base.split(".")[0] != "peftlab":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((node.lineno, sub if sub in known else base))
    return found


def layer_of(module: str) -> int:
    if module in BASE:
        return -1
    return LAYERS.index(module.split(".")[1])


def test_every_module_has_a_layer():
    for name in modules():
        if name not in BASE:
            assert name.split(".")[1] in LAYERS, f"{name}: not in a layer; add its package to LAYERS"


def test_imports_go_down_the_layers():
    known = modules()
    wrong = []
    for name, path in known.items():
        for line, target in imports_of(path, known):
            if target not in BASE and layer_of(target) > layer_of(name):
                wrong.append(f"{path.relative_to(SRC.parent)}:{line}: {name} imports {target}, a higher layer")
    assert not wrong, "\n".join(wrong)


def test_no_import_goes_round_a_circle():
    known = modules()
    graph = {name: {t for _, t in imports_of(path, known) if t != name and t in known} for name, path in known.items()}
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """The reader itself: imports inside a function body and relative ones count like any other."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n    from peftlab.report.tables import collect\n"
        "    from ..tasks import sft\n    from . import settings\n",
        encoding="utf-8",
    )
    found = imports_of(probe, modules(), name="peftlab.config.probe")
    assert found == [(2, "peftlab.report.tables"), (3, "peftlab.tasks.sft"), (4, "peftlab.config.settings")]
    assert layer_of("peftlab.report.tables") > layer_of("peftlab.config.settings")


def test_models_apply_pooling_import_path():
    """Written into saved mean-pooling classifiers' README: users import it from there."""
    from peftlab.models import apply_pooling
    from peftlab.models.loading import apply_pooling as defined

    assert apply_pooling is defined
