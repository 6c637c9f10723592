"""The headline of a report's table: the split whose scores rank the methods (the test split when every run
has one: it chose nothing), and the paired tests on its items, against the best method and the baseline.

Works on the Group objects it is given (runs with their folder and result.json); it reads each run's
predictions_<split>.jsonl and nothing else, so a caller may filter the runs first (e.g. to the chosen trials
of a learning-rate search).
"""

from __future__ import annotations

from peftlab.report.baselines import baselines_of
from peftlab.report.items import Items, correct_of, metric_of, pairing_problem, read_items
from peftlab.report.paired import fmt_interval, mcnemar_p, paired_bootstrap

PHASE = {"test": "metrics_test", "validation": "metrics_best"}  # result.json's scores of each headline split
FIX = (
    "score a split that chose nothing: add `test_file:` (a file of its own) or `test_ratio:` (a share held out "
    "of the training data) to the sweep's config"
)


def headline_split(groups: list, metric: str) -> str:
    """'test' when every run of the table has the metric on a test split (metrics_test), else 'validation'."""
    runs = [r for g in groups for r in g.runs]
    return "test" if runs and all(metric in (r.result.get("metrics_test") or {}) for r in runs) else "validation"


def headline_note(split: str, groups: list) -> str:
    """The report's first words on where its headline scores come from."""
    if split == "test":
        return (
            "Headline scores are the **test** split's: scored once with each run's best-epoch weights; the "
            "epoch was chosen on the validation split (the selection split, in a table of its own below)."
        )
    runs = [r for g in groups for r in g.runs]
    tested = sum(bool(r.result.get("metrics_test")) for r in runs)
    some = f" (only {tested} of {len(runs)} runs have one)" if tested else ""
    return (
        f"**No test split{some}: every score here is the validation split's**, the split that chose the best "
        f"epoch (and QA's no-answer threshold), so the scores lean optimistic. To fix it, {FIX}."
    )


def run_items(groups: list, split: str) -> tuple[dict[str, list[Items]], dict[str, str]]:
    """Each group's Items (one per seed), and why a group has none."""
    usable, why = {}, {}
    for g in groups:
        got = [read_items(r.folder, split, r.result) for r in g.runs]
        reason = next((w for it, w in got if it is None), "")
        if reason:
            why[g.name] = reason
        else:
            usable[g.name] = [it for it, _ in got]
    return usable, why


def check_pairing(usable: dict, why: dict, best: str) -> Items | None:
    """The items every paired group must share (the best group's, or the first group's), dropping groups that
    scored other items; None when no group has predictions."""
    ref_name = best if best in usable else next(iter(usable), None)
    if ref_name is None:
        return None
    ref = usable[ref_name][0]
    for name in list(usable):
        problem = next((p for it in usable[name] if (p := pairing_problem(it, ref))), "")
        if problem:
            why[name] = f"not paired with {ref_name}: {problem}"
            del usable[name]
    return ref


def add_paired(out: dict, groups: list) -> None:
    """Adds out['baselines'] and each row's 'paired': the score's interval, the paired difference against the
    best and against the baseline (95% intervals), McNemar's p of accuracy, or why there is none."""
    split, metric, best = out["headline"]["split"], out["metric"], out["best"]
    usable, why = run_items(groups, split)
    ref = check_pairing(usable, why, best)
    fns = {}
    for name, its in usable.items():
        got = [metric_of(it, metric) for it in its]
        if reason := next((w for f, w in got if f is None), ""):
            why[name] = reason
        else:
            fns[name] = [f for f, _ in got]
    results = [r.result for g in groups for r in g.runs]
    baselines = baselines_of(ref, results, out["columns"], split)
    base = next((b for b in baselines if b["items"] is not None and metric_of(b["items"], metric)[0]), None)
    for row in out["groups"]:
        row["paired"] = paired_row(row["group"], fns, usable, best, base, metric, why.get(row["group"], ""))
    out["baselines"] = [{k: v for k, v in b.items() if k != "items"} for b in baselines]
    out["headline"]["paired_baseline"] = base["name"] if base else None


def paired_row(name: str, fns: dict, usable: dict, best: str, base: dict | None, metric: str, why: str) -> dict:
    if name not in fns:
        return {"why": why or "no predictions"}
    n = usable[name][0].n
    out: dict = {"why": "", "n_items": n, "score": paired_bootstrap(fns[name], [], n)}
    if name != best and best in fns:
        out["vs_best"] = paired_bootstrap(fns[name], fns[best], n)
        out["mcnemar_vs_best"] = mcnemar(usable[name], usable[best])
    if base is not None:
        f = metric_of(base["items"], metric)[0]
        out["vs_baseline"] = paired_bootstrap(fns[name], [f], n)
        out["mcnemar_vs_baseline"] = mcnemar(usable[name], [base["items"]])
    return out


def mcnemar(a: list[Items], b: list[Items]) -> float | None:
    """McNemar's exact p of accuracy between one run on each side; None with several seeds (their runs are
    not one answer per item: the bootstrap over seeds and items, and Welch, stand in) or without right/wrong."""
    if len(a) != 1 or len(b) != 1:
        return None
    right_a, right_b = correct_of(a[0]), correct_of(b[0])
    return None if right_a is None or right_b is None else mcnemar_p(right_a, right_b)


# -- the table's paired columns ---------------------------------------------------------------------------


def paired_header(s: dict) -> list[str]:
    base = s.get("headline", {}).get("paired_baseline")
    extra = ["Δ vs best [95% CI]", "McNemar p"]
    return extra + ([f"Δ vs {base} [95% CI]", f"McNemar p vs {base}"] if base else [])


def paired_cells(s: dict, row: dict) -> list[str]:
    from peftlab.report.significance import fmt_p

    p = row.get("paired") or {}
    cells = [
        "best" if row["group"] == s["best"] else fmt_interval(p.get("vs_best")),
        "-" if row["group"] == s["best"] else fmt_p(p.get("mcnemar_vs_best")) if "vs_best" in p else "-",
    ]
    if s.get("headline", {}).get("paired_baseline"):
        cells += [
            fmt_interval(p.get("vs_baseline")),
            fmt_p(p.get("mcnemar_vs_baseline")) if "vs_baseline" in p else "-",
        ]
    return cells


def baseline_rows(s: dict, width: int) -> list[list[str]]:
    """The baselines as rows of the headline table: their scores in the metric columns, '-' elsewhere."""
    rows = []
    for b in s.get("baselines") or []:
        scores = [f"{b['scores'][c]:.3f}" if c in b["scores"] else "-" for c in s["columns"]]
        label = f"*{b['name']}*" + (f" ('{b['label']}')" if b.get("label") else "")
        rows.append([label, "-", "-", "-", "0", "-", "-"] + scores + ["-"] * (width - 7 - len(scores)))
    return rows


def unpaired_notes(s: dict) -> list[str]:
    """Why a row has no paired test, once per reason."""
    notes: dict[str, list[str]] = {}
    for row in s["groups"]:
        why = (row.get("paired") or {}).get("why")
        if why:
            notes.setdefault(why, []).append(row["group"])
    return [f"No paired test for {', '.join(names)}: {why}." for why, names in notes.items()]
