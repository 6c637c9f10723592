"""A sweep's `search:` in its report: per variant, the trial whose validation score is best is the one
its tables show (under the variant's name); every trial stays listed, with its status (pruned: the
epoch it reached), its validation curve and, for the chosen one, its test score.

The choice is made on validation only (metrics_best, the selection split); the headline tables score
the chosen trial on the test split where the runs have one, a split that chose nothing."""

from __future__ import annotations

import math

from peftlab.report.markdown import markdown_table


def choose_trials(state: dict, runs: list) -> tuple[list, list[dict]]:
    """(the runs the tables show: every run that is no trial, and each variant's chosen trial renamed to its
    variant; the search summary, one record per variant). Seeds of one trial are averaged."""
    entries = {e.get("name"): e for e in state.get("runs", []) if isinstance(e, dict)}
    variants: dict[str, dict[str, list]] = {}  # variant -> trial group -> runs
    kept = []
    for run in runs:
        entry = entries.get(run.name, {})
        if not entry.get("variant"):
            kept.append(run)
            continue
        variants.setdefault(entry["variant"], {}).setdefault(run.group, []).append(run)
    summary = []
    for variant, trials in variants.items():
        record = summarize_variant(variant, trials, entries)
        summary.append(record)
        for run in trials.get(record["chosen"], []):
            run.group = variant  # the tables' row is the variant, at its chosen setting
            kept.append(run)
    order = {r.name: i for i, r in enumerate(runs)}
    return sorted(kept, key=lambda r: order[r.name]), summary


def summarize_variant(variant: str, trials: dict[str, list], entries: dict) -> dict:
    """One variant's trials: status, epochs reached, validation score at the best epoch (mean over seeds),
    curve, and which one is chosen (the best score among trials that ran all their epochs)."""
    rows = [trial_row(group, runs, entries) for group, runs in trials.items()]
    metric = next((r["metric"] for r in rows if r["metric"]), "")
    higher = metric != "loss"
    eligible = [r for r in rows if r["status"] == "completed" and r["validation"] is not None]
    best = max(eligible, key=lambda r: r["validation"] if higher else -r["validation"], default=None)
    for r in rows:
        r["chosen"] = r is best
    return {
        "variant": variant,
        "metric": metric,
        "chosen": best["group"] if best else None,
        "chosen_setting": best["setting"] if best else None,
        "trials": rows,
    }


def trial_row(group: str, runs: list, entries: dict) -> dict:
    results = [r.result for r in runs if r.result and r.status == "completed"]
    metric = next((res.get("metric_for_best") for res in results), "")
    pruned = [res["pruned"] for res in results if res.get("pruned")]
    status = "pruned" if pruned else ("completed" if len(results) == len(runs) else worst_status(runs))
    scores = [(res.get("metrics_best") or {}).get(metric) for res in results]
    scores = [s for s in scores if isinstance(s, (int, float)) and math.isfinite(s)]
    tests = [(res.get("metrics_test") or {}).get(metric) for res in results]
    tests = [s for s in tests if isinstance(s, (int, float)) and math.isfinite(s)]
    curve: dict[int, list] = {}
    for run in runs:
        for line in run.history:
            if line.get("epoch", 0) >= 1 and isinstance(line.get(metric), (int, float)):
                curve.setdefault(int(line["epoch"]), []).append(line[metric])
    return {
        "group": group,
        "runs": [r.name for r in runs],
        "setting": entries.get(runs[0].name, {}).get("trial", {}),
        "status": status,
        "metric": metric,
        "pruned_at_epoch": max((p.get("epoch", 0) for p in pruned), default=None),
        "epochs": max((len([h for h in r.history if h.get("epoch", 0) >= 1]) for r in runs), default=0),
        "validation": sum(scores) / len(scores) if len(scores) == len(runs) and scores else None,
        "test": sum(tests) / len(tests) if tests and len(tests) == len(runs) else None,
        "curve": {e: sum(v) / len(v) for e, v in sorted(curve.items())},
    }


def worst_status(runs: list) -> str:
    statuses = [r.status for r in runs if r.status != "completed"]
    return statuses[0] if statuses else "completed"


def setting_text(setting: dict | None) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in (setting or {}).items()) or "-"


def search_lines(summary: list[dict]) -> list[str]:
    """The report's first lines on a search: each variant's chosen setting and its pruned trials."""
    if not summary:
        return []
    n_trials = sum(len(s["trials"]) for s in summary)
    n_pruned = sum(1 for s in summary for t in s["trials"] if t["status"] == "pruned")
    lines = [
        f"Each method's setting was chosen on the validation split among {n_trials} trials ({n_pruned} pruned "
        f"by Optuna after falling behind):"
    ]
    for s in summary:
        others = [
            f"{setting_text(t['setting'])} "
            + (f"pruned after epoch {t['pruned_at_epoch']}" if t["status"] == "pruned" else t["status"])
            + (f" ({t['validation']:.3f})" if t["validation"] is not None else "")
            for t in s["trials"]
            if not t["chosen"]
        ]
        chosen = next((t for t in s["trials"] if t["chosen"]), None)
        head = (
            f"**{setting_text(chosen['setting'])}** (validation {s['metric']} {chosen['validation']:.3f})"
            if chosen
            else "no trial completed"
        )
        lines.append(f"- {s['variant']}: {head}" + (f"; also tried: {'; '.join(others)}" if others else ""))
    return lines


def search_table(summary: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Every trial: its setting, status, epochs run, validation curve, best validation score, test score."""
    epochs = sorted({e for s in summary for t in s["trials"] for e in t["curve"]})
    header = ["method", "trial", "status", *[f"epoch {e}" for e in epochs], "best (validation)", "test", "chosen"]
    rows = []
    for s in summary:
        for t in s["trials"]:
            status = f"pruned at epoch {t['pruned_at_epoch']}" if t["status"] == "pruned" else t["status"]
            rows.append(
                [
                    s["variant"],
                    setting_text(t["setting"]),
                    status,
                    *[f"{t['curve'][e]:.3f}" if e in t["curve"] else "-" for e in epochs],
                    f"{t['validation']:.3f}" if t["validation"] is not None else "-",
                    f"{t['test']:.3f}" if t["test"] is not None else "-",
                    "✓" if t["chosen"] else "",
                ]
            )
    return header, rows


def search_markdown(summary: list[dict]) -> str:
    if not summary:
        return ""
    header, rows = search_table(summary)
    metric = summary[0]["metric"]
    lines = [
        "## Search",
        "",
        f"Validation {metric} of every trial after each epoch (the selection split). Optuna's pruner stopped "
        "the trials marked pruned when they fell behind their method's other trials; the chosen trial has the "
        "best validation score among those that ran every epoch, and its test score is the tables' headline.",
        "",
        markdown_table(header, rows),
        "",
    ]
    return "\n".join(lines)


def with_search(markdown: str, summary: list[dict]) -> str:
    """The report's markdown with the search's lines before its first table and its table at the end."""
    if not summary:
        return markdown
    head, sep, rest = markdown.partition("\n## ")
    return (
        head.rstrip("\n")
        + "\n\n"
        + "\n".join(search_lines(summary))
        + "\n"
        + sep
        + rest.rstrip("\n")
        + ("\n\n" + search_markdown(summary))
    )
