"""The report's after-training table: zero-shot and few-shot baselines, tuned runs, merged exports and
quantized GGUF files in one table, from the evaluation folders (`peftlab eval`) and the training runs
of a sweep or folder. Like the rest of the report, a pure function of the folders."""

from __future__ import annotations

from peftlab.report.summary import fmt
from peftlab.runs.measure import memory_label

COST_COLUMNS = ("eval_wall_s", "examples_per_s", "tokens_per_s", "peak_memory_mb", "size_on_disk_mb")
# each row's memory figure says its kind (RSS or GPU): a table may hold both (a llama.cpp row beside GPU rows)
HEADER_COSTS = ["wall time", "examples/s", "input tokens/s", "peak memory", "size on disk"]


def is_eval(result: dict | None) -> bool:
    return isinstance(result, dict) and result.get("kind") == "eval"


def eval_columns(runs, metric: str, preferred: tuple) -> list[str]:
    seen = [k for r in runs for k, v in (r.result.get("metrics_best") or {}).items() if isinstance(v, (int, float))]
    return list(dict.fromkeys(c for c in [metric, *preferred] if c in seen))[:6]


def what_of(result: dict) -> str:
    """Where the row's model came from, in words."""
    if not is_eval(result):
        return f"trained ({result.get('method')}, best epoch {result.get('best_epoch')})"
    src = result.get("source") or {}
    shots = f", {result.get('shots')}-shot" if result.get("shots") else ""
    backend = src.get("backend", "transformers")
    if src.get("kind") == "run":
        return f"run {src.get('run')} ({src.get('run_method')}){shots}, {backend}"
    if src.get("kind") == "export":
        return f"export of {src.get('folder')}{shots}, {backend}"
    return f"base {src.get('model')}{shots}, {backend}"


def evaluation_rows(runs) -> dict | None:
    """Header and rows of the after-training table, or None when no evaluation folder is there."""
    from peftlab.tasks.contract import read_hook
    from peftlab.tasks.registry import TASKS

    evals = [r for r in runs if r.status == "completed" and is_eval(r.result)]
    if not evals:
        return None
    trained = [r for r in runs if r.status == "completed" and r.result and not is_eval(r.result)]
    first = evals[0].result
    task = TASKS.get(first.get("task"))
    cols = eval_columns(evals, first.get("metric_for_best", ""), tuple(read_hook(task, "REPORT_METRICS")))
    header = ["row", "model", "split", "n"] + cols + HEADER_COSTS
    rows = []
    for r in trained + evals:
        res, m = r.result, r.result.get("metrics_best") or {}
        cells = [
            r.name,
            what_of(res),
            res.get("split", "validation"),
            str(res.get("n_evaluated") or res.get("n_validation") or "-"),
        ]
        cells += [fmt(m.get(c), 3) if isinstance(m.get(c), float) else fmt(m.get(c)) for c in cols]
        size = res.get("size_on_disk_mb") if is_eval(res) else res.get("adapter_size_mb")
        cells += [
            f"{res['eval_wall_s']:.1f} s" if res.get("eval_wall_s") is not None else "-",
            fmt(res.get("examples_per_s"), 1),
            fmt(res.get("tokens_per_s"), 0),
            f"{res['peak_memory_mb'] / 1024:.2f} GiB {memory_label(res.get('peak_memory_kind'))}"
            if res.get("peak_memory_mb")
            else "-",
            f"{size:.1f} MiB" if size is not None else "-",
        ]
        rows.append(cells)
    return {
        "header": header,
        "rows": rows,
        "columns": cols,
        "note": "Trained rows show the run's best epoch on its validation split (size: the adapter or "
        "saved model); evaluation rows come from `peftlab eval` (wall time of the scoring alone, "
        "size on disk of what must be loaded: base + adapter, the merged folder, or the .gguf file). "
        "Peak memory: CUDA = torch's peak allocation on the GPU, RSS = the process's peak resident memory "
        "(CPU runs, and llama.cpp, which torch does not see).",
    }
