"""Measurements written into result.json: parameters, peak memory, sizes, versions."""

from __future__ import annotations

import resource
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch


def count_parameters(model) -> dict:
    """Trainable and total parameters (peft's count where the model is a PeftModel)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
    else:
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "trainable_params": int(trainable),
        "total_params": int(total),
        "trainable_pct": round(100.0 * trainable / max(total, 1), 4),
    }


def peak_memory(cuda: bool = True) -> dict:
    """CUDA max allocated on a GPU; otherwise, or with cuda=False (what torch does not allocate: llama.cpp
    on the CPU), this process's peak resident set size (MiB). peak_memory_kind says which."""
    if cuda and torch.cuda.is_available():
        return {
            "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "peak_memory_kind": "cuda_max_allocated",
        }
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"peak_memory_mb": round(rss_kib / 1024, 1), "peak_memory_kind": "process_peak_rss"}


MEMORY_WORDS = {"cuda_max_allocated": "GPU max allocated", "process_peak_rss": "process peak RSS"}
# the one short label of a peak_memory_kind, beside every memory figure in tables, the summary and the dashboard:
# a GPU's allocations and a process's RSS are not one scale
MEMORY_LABELS = {"cuda_max_allocated": "GPU", "process_peak_rss": "RSS"}


def memory_label(kind: str | None) -> str:
    """RSS or GPU for a result's peak_memory_kind; '?' for a result without one."""
    return MEMORY_LABELS.get(kind or "", "?")


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def folder_size_mb(path: Path, suffixes: tuple = (), digits: int = 3) -> float:
    """Every file under `path` (only those ending in `suffixes` when given), in MiB."""
    return round(
        sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and (not suffixes or f.suffix in suffixes))
        / 2**20,
        digits,
    )


def weights_size_mb(path: Path) -> float:
    """The weight files of a saved adapter or head, without the tokenizer saved beside them (Gemma's
    tokenizer.json alone is 33 MiB, ten times a LoRA adapter on it)."""
    return folder_size_mb(path, WEIGHT_SUFFIXES, digits=6)  # a head of 66 weights is 0.0003 MiB, not 0


def library_versions() -> dict:
    """The versions of the code that made a run's numbers. peftlab's is the running code's own
    (peftlab.__version__), not an installed distribution's: a checkout run through PYTHONPATH, or beside
    an older install, would otherwise be recorded as the installed version."""
    import peftlab

    out = {"python": sys.version.split()[0], "peftlab": peftlab.__version__}
    for name in ("torch", "transformers", "peft", "accelerate", "datasets", "scikit-learn"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_hash() -> str | None:
    """The commit of the peftlab checkout that runs ('+dirty' when its source differs from that commit);
    None when peftlab is not run from a git checkout of itself (an install inside another repository
    must not record that repository's commit)."""
    here = Path(__file__).resolve().parents[1]  # src/peftlab

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=here)

    try:
        if git("ls-files", "--error-unmatch", "__init__.py").returncode != 0:
            return None
        commit = git("rev-parse", "HEAD").stdout.strip()
        dirty = git("diff", "--quiet", "HEAD", "--", ".").returncode == 1
    except (OSError, subprocess.TimeoutExpired):
        return None
    return f"{commit}+dirty" if commit and dirty else commit or None
