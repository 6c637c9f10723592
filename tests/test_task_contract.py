"""Every registered task module against the task contract (peftlab.tasks.contract): the hooks it must
define are there and of the right kind, the optional ones it defines are too, and it defines no near miss
of a hook's name (a misspelt hook is never read: the reader silently takes the default). And the other
way round: every hook the package reads off a task module is in the contract, optional ones through
read_hook, so the contract stays the whole list. Light: imports the task modules, loads no model."""

from __future__ import annotations

import ast
import collections.abc
import difflib
import inspect
import typing
from pathlib import Path
from types import ModuleType

import pytest

import peftlab
from peftlab.tasks import contract, registry

SRC = Path(peftlab.__file__).parent
READERS = ("training", "inference", "export", "sweep", "report", "ui", "cli.py")  # the layers above tasks/


def registered() -> list[ModuleType]:
    return list(dict.fromkeys(registry.WAYS.values()))


def constants_of(protocol) -> dict[str, object]:
    """name -> type of the protocol's data members."""
    return typing.get_type_hints(protocol, vars(contract))


def functions_of(protocol) -> dict[str, typing.Callable]:
    return {n: f for n, f in vars(protocol).items() if inspect.isfunction(f) and not n.startswith("_")}


REQUIRED = {**constants_of(contract.Task), **functions_of(contract.Task)}
OPTIONAL = {**constants_of(contract.OptionalHooks), **functions_of(contract.OptionalHooks)}
HOOKS = {**REQUIRED, **OPTIONAL}


def fits(value, hint) -> bool:
    """isinstance for the contract's hints: str, bool, tuple[str, ...], Sequence[str]."""
    origin = typing.get_origin(hint) or hint
    if origin in (tuple, list, collections.abc.Sequence):
        items = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return (
            isinstance(value, origin) and not isinstance(value, str) and all(isinstance(v, tuple(items)) for v in value)
        )
    return isinstance(value, origin)


def check_hook(module: ModuleType, name: str, member) -> list[str]:
    """What is wrong with the module's hook `name` (present) against the contract's `member`."""
    value = getattr(module, name)
    if not inspect.isfunction(member):
        return [] if fits(value, member) else [f"{module.__name__}.{name}: {value!r} is not a {member}"]
    if not callable(value):
        return [f"{module.__name__}.{name}: not callable"]
    wanted = len(inspect.signature(member).parameters) - 1  # the protocol's `self`
    got = len(inspect.signature(value).parameters)
    return [] if got == wanted else [f"{module.__name__}.{name}: takes {got} arguments, the contract {wanted}"]


@pytest.mark.parametrize("module", registered(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_module_keeps_the_contract(module):
    missing = [n for n in REQUIRED if not hasattr(module, n)]
    assert not missing, f"{module.__name__} lacks the hooks {missing}"
    wrong = [w for n, m in HOOKS.items() if hasattr(module, n) for w in check_hook(module, n, m)]
    assert not wrong, "\n".join(wrong)
    assert module.DEFAULT_METRIC in module.METRICS, f"{module.__name__}: DEFAULT_METRIC is not one of METRICS"


@pytest.mark.parametrize("module", registered(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_module_defines_no_near_miss_of_a_hook(module):
    """A name one typo away from a hook (REPORT_METRIC, lm_loss, preprocess_logit) is a hook nobody reads."""
    lower, near = {h.lower(): h for h in HOOKS}, {}
    for name, value in vars(module).items():
        if name.startswith("_") or name in HOOKS or isinstance(value, (ModuleType, type)):
            continue
        match = difflib.get_close_matches(name.lower(), lower, n=1, cutoff=0.8)
        if match:
            near[name] = lower[match[0]]
    assert not near, f"{module.__name__}: names close to a hook the contract knows by another spelling: {near}"


def test_optional_defaults_match_the_hooks():
    assert set(contract.OPTIONAL) == set(OPTIONAL)
    for name, default in contract.OPTIONAL.items():
        member = OPTIONAL[name]
        assert default is None if inspect.isfunction(member) else fits(default, member), name


def test_every_hook_has_a_one_line_docstring():
    """The contract is the documentation: each hook says what it is in one line."""
    tree = ast.parse((SRC / "tasks" / "contract.py").read_text(encoding="utf-8"))
    documented = set()
    for cls in [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in ("Task", "OptionalHooks")]:
        for node, after in zip(cls.body, cls.body[1:] + [None]):
            doc = None
            if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr):
                doc, name = after.value, node.target.id
            elif isinstance(node, ast.FunctionDef):
                doc, name = ast.get_docstring(node, clean=False), node.name
                doc = ast.Constant(doc) if doc else None
            if isinstance(doc, ast.Constant) and isinstance(doc.value, str) and "\n" not in doc.value.strip():
                documented.add(name)
    assert set(HOOKS) <= documented, f"hooks without a one-line docstring: {sorted(set(HOOKS) - documented)}"


def hook_reads() -> list[tuple[str, str, str]]:
    """(where, how, name) of every hook read off a task module above tasks/: `task.NAME`,
    `session.task.NAME`, and getattr / hasattr / read_hook(task, "NAME")."""
    found = []
    for path in sorted(
        p for part in READERS for p in ((SRC / part).rglob("*.py") if (SRC / part).is_dir() else [SRC / part])
    ):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(SRC)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Attribute) and ast.unparse(node.value) in ("task", "session.task"):
                found.append((where, "attribute", node.attr))
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "read_hook")
                and len(node.args) >= 2
                and ast.unparse(node.args[0]) in ("task", "session.task")
                and isinstance(node.args[1], ast.Constant)
            ):
                found.append((where, node.func.id, node.args[1].value))
    return found


def test_the_package_reads_only_hooks_of_the_contract():
    reads = hook_reads()
    assert {name for _, _, name in reads} >= {"LM_LOSS", "LABEL_NAMES", "build_model"}  # the scan sees reads
    unknown = [f"{where}: {name}" for where, _, name in reads if name not in HOOKS]
    assert not unknown, "task hooks read but not in peftlab.tasks.contract:\n" + "\n".join(unknown)
    raw = [f"{where}: {how}(task, {name!r})" for where, how, name in reads if how in ("getattr", "hasattr")]
    assert not raw, "read optional hooks with contract.read_hook (their defaults live there):\n" + "\n".join(raw)
    bare = [f"{where}: task.{name}" for where, how, name in reads if how == "attribute" and name in OPTIONAL]
    assert not bare, "an optional hook read as an attribute fails on modules without it:\n" + "\n".join(bare)
