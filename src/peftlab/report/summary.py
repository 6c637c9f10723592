"""Human-readable summary of one run's result.json."""

from __future__ import annotations

from peftlab.runs.measure import memory_label

SHOWN = ("accuracy", "f1", "precision", "recall", "mcc", "loss")


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_run_summary(result: dict) -> str:
    """A small table: metrics at epoch 0, at the best epoch and at the last, then cost figures."""
    rows = [
        ("epoch 0", result.get("metrics_epoch0")),
        (f"best (epoch {result.get('best_epoch')})", result.get("metrics_best")),
        (f"last (epoch {result.get('epochs_run')})", result.get("metrics_last")),
    ]
    if result.get("metrics_test"):
        rows.append(("test (best weights)", result["metrics_test"]))
    keys = [k for k in dict.fromkeys((*SHOWN, result["metric_for_best"])) if any(m and k in m for _, m in rows)]
    width = max(len(r[0]) for r in rows) + 2
    out = [
        f"run {result['run_name']}  [{result['status']}]  {result['method']} on {result['model']}, "
        f"best by {result['metric_for_best']}",
        "".ljust(width) + "".join(k.rjust(11) for k in keys),
    ]
    for label, m in rows:
        if m:
            out.append(label.ljust(width) + "".join(fmt(m.get(k)).rjust(11) for k in keys))
    out.append(
        f"time/epoch {fmt(result.get('time_per_epoch_s'), 1)} s   "
        f"peak memory {fmt(result.get('peak_memory_mb'), 0)} MiB {memory_label(result.get('peak_memory_kind'))}   "
        f"trainable {result['trainable_params']:,} / {result['total_params']:,} "
        f"({result['trainable_pct']:.2f}%)   adapter {fmt(result.get('adapter_size_mb'), 2)} MiB   "
        f"{fmt(result.get('train_tokens_per_s'), 0)} tokens/s"
    )
    return "\n".join(out)
