"""The report's first answer: which method to pick, on the headline split, with the paired evidence for it.

The pick is the best-scoring method that beats the baseline (its paired 95% interval against the baseline lies
wholly above 0); the methods it cannot be told apart from are those whose paired interval of the difference
to it contains 0; among them and the pick, the cheapest (fewest trainable parameters, then time per epoch) is
named, since it buys the same score for less. When no method beats the baseline, that is said first.
"""

from __future__ import annotations

from peftlab.report.paired import contains_zero, excludes_zero, fmt_interval
from peftlab.tasks.metrics import LOWER_IS_BETTER


def mean_of(row: dict, key: str):
    v = row.get(key)
    return v.get("mean") if isinstance(v, dict) else v


def beats(row: dict, base: dict | None, metric: str, phase: str, higher: bool) -> bool | None:
    """Whether a row beats the baseline: by its paired interval, else (an unpaired baseline such as SFT's
    untuned model) by its mean; None when there is no baseline score."""
    paired = (row.get("paired") or {}).get("vs_baseline")
    if paired:
        return excludes_zero(paired, higher)
    score, mean = (base or {}).get("scores", {}).get(metric), row[phase][metric]["mean"]
    if score is None or mean is None:
        return None
    return mean > score if higher else mean < score


def recommend(s: dict) -> dict:
    """{'pick', 'score', 'interval', 'cost', 'tied', 'cheapest', 'baseline', 'nothing_beats_baseline', 'lines'}."""
    metric, head = s["metric"], s["headline"]
    phase, split, higher = head["phase"], head["split"], s["metric"] not in LOWER_IS_BETTER
    rows = [r for r in s["groups"] if r[phase][metric]["mean"] is not None]
    bases = s.get("baselines") or []
    base = next((b for b in bases if b["name"] == head.get("paired_baseline")), bases[0] if bases else None)
    verdicts = {r["group"]: beats(r, base, metric, phase, higher) for r in rows}
    sign = 1 if higher else -1
    ranked = sorted(rows, key=lambda r: -sign * r[phase][metric]["mean"])
    beating = [r for r in ranked if verdicts[r["group"]] is not False]
    out = {
        "split": split,
        "metric": metric,
        "split_note": head["note"],
        "baseline": base and {k: base[k] for k in ("name", "note", "scores")},
        "nothing_beats_baseline": bool(base) and not beating,
        "pick": None,
    }
    lines = [head["note"]]
    if out["nothing_beats_baseline"]:
        lines.append(nothing_beats(ranked, base, metric, split, phase))
    if beating:
        out.update(pick_of(beating[0], beating, rows, s, base))
        lines += pick_lines(out, s, base)
    out["lines"] = lines
    return out


def nothing_beats(ranked: list[dict], base: dict, metric: str, split: str, phase: str) -> str:
    shown = "; ".join(
        f"{r['group']} {r[phase][metric]['mean']:.3f} (Δ {fmt_interval((r.get('paired') or {}).get('vs_baseline'))})"
        for r in ranked
    )
    return (
        f"**No method beats the {base['name']} baseline**, which scores {base['scores'].get(metric, float('nan')):.3f} "
        f"{metric} on the {split} split ({base['note']}): {shown}. Each difference's paired 95% interval reaches 0, "
        f"so these runs have not shown that they learned the task; do not pick a method from them (more data, "
        f"epochs or another learning rate first)."
    )


def pick_of(pick: dict, beating: list[dict], rows: list[dict], s: dict, base: dict | None) -> dict:
    """The pick, its interval and cost, the methods tied with it and the cheapest of those."""
    tied = [
        r
        for r in rows
        if r is not pick
        and pick["group"] == s["best"]
        and contains_zero((r.get("paired") or {}).get("vs_best") or {"low": 1, "high": 1})
    ]
    candidates = [pick] + [r for r in tied if r in beating]
    cheapest = min(candidates, key=lambda r: (r["trainable_params"], mean_of(r, "time_per_epoch_s") or float("inf")))
    paired = pick.get("paired") or {}
    return {
        "pick": pick["group"],
        "score": pick[s["headline"]["phase"]][s["metric"]]["mean"],
        "interval": [paired["score"]["low"], paired["score"]["high"]] if "score" in paired else None,
        "vs_baseline": paired.get("vs_baseline"),
        "cost": {
            "time_per_epoch_s": mean_of(pick, "time_per_epoch_s"),
            "peak_memory_mb": mean_of(pick, "peak_memory_mb"),
            "memory_kind": pick.get("memory_kind"),
            "trainable_params": pick["trainable_params"],
            "adapter_size_mb": mean_of(pick, "adapter_size_mb"),
        },
        "tied": [{"group": r["group"], "vs_best": (r.get("paired") or {}).get("vs_best")} for r in tied],
        "cheapest": cheapest["group"],
        "paired": "score" in paired,
        "why_unpaired": paired.get("why", ""),
    }


def cost_words(cost: dict) -> str:
    t, m, p, a = (cost[k] for k in ("time_per_epoch_s", "peak_memory_mb", "trainable_params", "adapter_size_mb"))
    parts = [f"{t:.1f} s per epoch" if t else "time not recorded"]
    parts.append(f"{m / 1024:.2f} GiB peak memory" if m else "peak memory not recorded")
    parts.append(f"{p / 1e6:.2f}M trainable parameters" if p >= 1e5 else f"{int(p):,} trainable parameters")
    parts.append(f"{a:.1f} MiB adapter" if a is not None else "adapter size not recorded")
    return ", ".join(parts)


def pick_lines(rec: dict, s: dict, base: dict | None) -> list[str]:
    metric, split = s["metric"], rec["split"]
    interval = f" (95% CI {rec['interval'][0]:.3f} to {rec['interval'][1]:.3f})" if rec["interval"] else ""
    vs = f"; {fmt_interval(rec['vs_baseline'])} over the {base['name']} baseline" if rec.get("vs_baseline") else ""
    if base and not rec.get("vs_baseline") and metric in base["scores"]:
        vs = f"; the {base['name']} baseline scores {base['scores'][metric]:.3f} (not paired)"
    lines = [
        f"**Pick {rec['pick']}**: {metric} {rec['score']:.3f} on the {split} split{interval}{vs}. "
        f"Cost: {cost_words(rec['cost'])}."
    ]
    if not rec["paired"]:
        lines.append(f"No paired test tells methods apart here: {rec['why_unpaired'] or 'no predictions'}.")
    elif rec["tied"]:
        tied = ", ".join(f"{t['group']} (Δ {fmt_interval(t['vs_best'])})" for t in rec["tied"])
        lines.append(f"It cannot be told apart from (paired 95% CI of the difference contains 0): {tied}.")
        if rec["cheapest"] != rec["pick"]:
            lines.append(
                f"The cheapest of those: **{rec['cheapest']}** (fewest trainable parameters, then time per epoch): "
                f"as good within the test, for less."
            )
    elif len(s["groups"]) > 1 and all(
        "vs_best" in (r.get("paired") or {}) for r in s["groups"] if r["group"] != rec["pick"]
    ):
        lines.append("Every other method scores lower on the same items (paired 95% CI of the difference excludes 0).")
    return lines
