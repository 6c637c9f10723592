"""Plots written next to results (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from peftlab.training.plots import save


def colors_for(names: list[str]) -> dict:
    """One colour per group, stable across the sweep's plots."""
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def plot_sweep_losses(runs, path: Path) -> None:
    """Training loss of every run against epochs (runs with other batch sizes stay comparable)."""
    groups = list(dict.fromkeys(r.group for r in runs))
    color = colors_for(groups)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    labelled = set()
    for r in runs:
        pts = [(h["epoch"], h["loss"]) for h in r.train_log if "loss" in h and "epoch" in h]
        if not pts:  # older run folders: the per-epoch mean from metrics.jsonl
            pts = [(h["epoch"], h["train_loss"]) for h in r.history if h.get("train_loss") is not None]
        if pts:
            ax.plot(
                *zip(*pts), lw=1.1, color=color[r.group], alpha=0.85, label=None if r.group in labelled else r.group
            )
            labelled.add(r.group)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_title("training loss, all runs", fontsize=10)
    ax.grid(alpha=0.3)
    if labelled:
        ax.legend(fontsize=7, ncol=2)
    save(fig, path)


def plot_metric_per_epoch(runs, metric: str, path: Path) -> None:
    groups = list(dict.fromkeys(r.group for r in runs))
    color = colors_for(groups)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    labelled = set()
    for r in runs:
        pts = [(h["epoch"], h[metric]) for h in r.history if isinstance(h.get(metric), (int, float))]
        if pts:
            ax.plot(
                *zip(*pts),
                "o-",
                lw=1.1,
                ms=3,
                color=color[r.group],
                alpha=0.85,
                label=None if r.group in labelled else r.group,
            )
            labelled.add(r.group)
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"validation {metric} per epoch", fontsize=10)
    ax.grid(alpha=0.3)
    if labelled:
        ax.legend(fontsize=7, ncol=2)
    save(fig, path)


def plot_pareto(summary: dict, costs, path: Path, metric: str | None = None) -> None:
    """A best-epoch metric (default: the one epochs were chosen by) against each cost; the Pareto front
    is joined by a line."""
    save(pareto_figure(summary, costs, metric), path)


def pareto_figure(summary: dict, costs, metric: str | None = None):
    """plot_pareto's figure, its point labels placed apart (place_labels)."""
    fig, axes = plt.subplots(1, len(costs), figsize=(4.2 * len(costs), 3.8), dpi=110, squeeze=False)
    labels = [
        pareto_axes(ax, summary, metric or summary["metric"], key, label) for ax, (key, label) in zip(axes[0], costs)
    ]
    for _ in range(2):  # the layout moves the axes, the labels move the layout: twice settles both
        fig.tight_layout()
        for texts in labels:
            place_labels(fig, texts)
    return fig


LABEL_GAP_PX = 2.0
MARKER_RADIUS_PT = 3.5  # the largest point (ms=7) a label must not cover


def place_labels(fig, texts: list) -> None:
    """Point labels that never cover one another nor another point: taken left to right, each label goes
    to the free spot nearest its point, above-right of it first, else shifted up or down past what it
    would cover, or on the point's left (it keeps its point's colour). Deterministic, unlike iterative
    repelling: methods with nearly the same cost and score (lora-r8, dora-r8, lora-r16) get labels
    side by side and stacked beside their points instead of printed over each other."""
    if not texts:
        return
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    to_points = 72.0 / fig.dpi
    r, gap = MARKER_RADIUS_PT / to_points, LABEL_GAP_PX
    points = {id(t): t.axes.transData.transform(t.xy) for t in texts}
    markers = {k: Bbox.from_extents(x - r, y - r, x + r, y + r) for k, (x, y) in points.items()}
    placed = []
    for text in sorted(texts, key=lambda t: tuple(points[id(t)])):
        text.xyann = (4, 4)
        right = text.get_window_extent(renderer)
        obstacles = placed + [b for k, b in markers.items() if k != id(text)]  # its own point aside

        def free(box, obstacles=obstacles):
            return not any(
                b.x0 < box.x1 + gap and box.x0 < b.x1 + gap and b.y0 < box.y1 + gap and box.y0 < b.y1 + gap
                for b in obstacles
            )

        left_dx = -(right.width + 8 / to_points)  # the label's right edge 4 points left of the point
        spots = []
        for dx in (0.0, left_dx):
            base = right.translated(dx, 0)
            dys = {0.0} | {b.y1 + gap - base.y0 for b in obstacles} | {b.y0 - gap - base.y1 for b in obstacles}
            spots += [(abs(dy) + (abs(dx) if dx else 0) / 4, dx, dy) for dy in dys if free(base.translated(0, dy))]
        _, dx, dy = min(spots)  # there is always one: above the highest obstacle
        text.xyann = (4 + dx * to_points, 4 + dy * to_points)
        placed.append(right.translated(dx, dy))


def pareto_axes(ax, summary: dict, metric: str, key: str, label: str) -> list:
    """One cost's panel; returns its point labels (matplotlib Annotations) for place_labels."""
    from peftlab.report.tables import front_of

    rows = summary["groups"]
    color = colors_for([r["group"] for r in rows])
    phase = (summary.get("headline") or {}).get("phase", "metrics_best")  # the scores that rank the methods
    front = {rows[i]["group"] for i in front_of(rows, key, metric, phase)}
    pts, texts = [], []
    for r in rows:
        cost = r[key]["mean"] if isinstance(r[key], dict) else r[key]
        m = r[phase][metric]
        if cost is None or m["mean"] is None:
            continue
        on = r["group"] in front
        ax.errorbar(
            cost,
            m["mean"],
            yerr=m["std"] or 0,
            fmt="o",
            ms=7 if on else 5,
            capsize=3,
            color=color[r["group"]],
            mec="black" if on else "none",
        )
        texts.append(
            ax.annotate(
                r["group"],
                (cost, m["mean"]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
                color=color[r["group"]],
                bbox=dict(boxstyle="square,pad=0.05", fc="white", ec="none", alpha=0.75),  # readable over lines
                annotation_clip=False,
                zorder=1.5,  # under the points and the front line, over the grid
            )
        )
        if on:
            pts.append((cost, m["mean"]))
    if len(pts) > 1:
        ax.plot(*zip(*sorted(pts)), "--", color="black", lw=0.8, label="Pareto front")
        ax.legend(fontsize=7)
    if key == "trainable_params":
        ax.set_xscale("log")
    ax.margins(x=0.12, y=0.1)  # room for the labels of the outermost points
    ax.set_xlabel(label)
    ax.set_ylabel(f"{metric} (best epoch)")
    ax.grid(alpha=0.3)
    return texts
