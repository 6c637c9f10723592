"""The run folder as code (peftlab.runs.layout): file names written once, one temporary naming rule that
every atomic writer uses and the one cleaner knows, docs/guide.md's table generated from the module."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import peftlab
from peftlab.runs import layout
from peftlab.runs.rundir import clear_leftovers, replace_folder, write_folder, write_text

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(peftlab.__file__).parent


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def file_names() -> set[str]:
    return {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str) and k not in ("TMP", "OLD")}


def test_docs_run_folder_table_is_the_layouts():
    guide = (ROOT / "docs" / "guide.md").read_text(encoding="utf-8")
    assert layout.run_files_table() in guide, (
        "docs/guide.md's run-folder table differs from runs/layout.py RUN_FILES; paste layout.run_files_table() into it"
    )


def test_no_module_builds_a_path_from_a_file_name_of_the_layout():
    """`folder / "result.json"` anywhere but runs/layout.py is a second copy of the contract."""
    names, found = file_names(), []
    for path in SRC.rglob("*.py"):
        if path.name == "layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                for side in (node.left, node.right):
                    if isinstance(side, ast.Constant) and side.value in names:
                        found.append(f"{path.relative_to(SRC)}:{node.lineno}: {side.value!r}")
    assert not found, "use peftlab.runs.layout's names:\n" + "\n".join(found)


def test_temporary_names_parse_back(tmp_path):
    final = tmp_path / "model-q8_0.gguf"
    for kind in (layout.TMP, layout.OLD):
        name = layout.temporary(final, kind, pid=4242).name
        assert name.startswith(".") and layout.parse_temporary(name) == ("model-q8_0.gguf", kind, 4242)
    # a temporary's own temporary (the converter writing the f16 intermediate) parses to the outer one
    inner = layout.temporary(layout.temporary(final, pid=7), pid=8).name
    assert layout.parse_temporary(inner) == (layout.temporary(final, pid=7).name, layout.TMP, 8)
    for other in (".lock", "result.json", ".x.tmp", ".x.tmp-", ".x.bak-12", ".tmp-12", "x.tmp-12"):
        assert layout.parse_temporary(other) is None, other


def test_the_cleaner_knows_every_writers_leftovers(tmp_path):
    """What each atomic writer leaves when SIGKILLed mid-write: file temporaries (write_text, GGUF files,
    plots), folder temporaries (write_folder: weights, evaluation and export folders) and a folder moved
    aside (replace_folder). A dead writer's are cleared (the aside folder restored), a live one's kept."""
    dead = dead_pid()
    (tmp_path / layout.temporary(tmp_path / "result.json", pid=dead).name).write_text("{half")
    (tmp_path / layout.temporary(tmp_path / "model-f16.gguf", pid=dead).name).write_bytes(b"GGUF")
    half = tmp_path / layout.temporary(tmp_path / "adapter", pid=dead).name
    half.mkdir()
    (half / "adapter_config.json").write_text("{}")
    aside = tmp_path / layout.temporary(tmp_path / "model", layout.OLD, pid=dead).name
    aside.mkdir()
    (aside / "config.json").write_text("{}")
    mine = tmp_path / layout.temporary(tmp_path / "metrics.jsonl").name  # this process: alive
    mine.write_text("x")
    (tmp_path / ".lock").write_text("1")
    done = clear_leftovers(tmp_path)
    assert len(done) == 4 and f"restored model from {aside.name}" in done
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([".lock", mine.name, "model"]), left
    assert (tmp_path / "model" / "config.json").is_file()


def test_write_folder_is_all_or_nothing(tmp_path):
    final = tmp_path / "eval"
    write_folder(final, lambda tmp: write_text(tmp / layout.RESULT, "old"))
    assert (final / layout.RESULT).read_text() == "old"

    def fail(tmp: Path) -> None:
        write_text(tmp / layout.RESULT, "new")
        raise OSError("No space left on device")

    with pytest.raises(OSError):
        write_folder(final, fail)
    assert (final / layout.RESULT).read_text() == "old"  # the older copy stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]  # and no temporary is left
    write_folder(final, lambda tmp: write_text(tmp / layout.RESULT, "new"))
    assert (final / layout.RESULT).read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["eval"]


def test_write_folder_clears_a_killed_earlier_writer_of_the_same_folder_only(tmp_path):
    dead = dead_pid()
    for name in ("eval", "other"):
        (tmp_path / layout.temporary(tmp_path / name, pid=dead).name).mkdir()
    write_folder(tmp_path / "eval", lambda tmp: write_text(tmp / layout.RESULT, "{}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["eval", layout.temporary(tmp_path / "other", pid=dead).name]
    )


def test_replace_folder_moves_the_old_copy_aside_under_the_rule(tmp_path, monkeypatch):
    """Between replace_folder's two renames the old copy sits at layout.temporary(final, OLD)."""
    final, new = tmp_path / "model", tmp_path / "new"
    final.mkdir()
    new.mkdir()
    seen = []
    real = os.replace

    def spy(a, b):
        seen.append(Path(b).name)
        real(a, b)

    monkeypatch.setattr(os, "replace", spy)
    replace_folder(new, final)
    assert seen == [layout.temporary(final, layout.OLD).name, "model"]
