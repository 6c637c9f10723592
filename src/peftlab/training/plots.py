"""A run's loss plot (train loss per step, eval loss per epoch), written into the run folder; the
figure writer shared with the report's plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from peftlab.runs import layout

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def plot_loss(log_history: list[dict], title: str, path: Path) -> None:
    """Training loss per logging step and evaluation loss per epoch, against optimizer steps."""
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1.2)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path)


def save(fig, path: Path) -> None:
    """Write a figure atomically (the run folder's rule: temporary name, then one rename)."""
    tmp = layout.temporary(path)
    fig.tight_layout()
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
