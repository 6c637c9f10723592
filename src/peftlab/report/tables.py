"""`peftlab report SWEEP_DIR [OTHER_SWEEP_DIR]`: the comparison table users used to type by hand.

A pure function of the run folders (result.json, metrics.jsonl, train_log.jsonl) and of the sweep's
sweep.json (plan, groups, failures); nothing is re-measured. Runs that differ only in their seed
form a group, reported as mean ± std; a Welch t-test over the seeds, Holm-adjusted over the groups
of a table, says which groups differ from the best by more than seed noise. A run folder whose
files cannot be read is listed as unreadable, never read as empty. Writes report/{report.md, .csv,
.json, .html, *.png}.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from peftlab.errors import UserError
from peftlab.report.evals import evaluation_rows, is_eval
from peftlab.report.headline import (
    PHASE,
    add_paired,
    baseline_rows,
    headline_note,
    headline_split,
    paired_cells,
    paired_header,
    unpaired_notes,
)
from peftlab.report.markdown import markdown_table
from peftlab.report.paired import contains_zero
from peftlab.report.recommend import recommend
from peftlab.report.search import choose_trials
from peftlab.report.significance import fmt_p, holm, welch_p
from peftlab.runs import layout, rundir
from peftlab.runs.measure import memory_label
from peftlab.runs.rundir import UnreadableFile, read_history, read_json, read_jsonl
from peftlab.tasks.metrics import LOWER_IS_BETTER

BOOKKEEPING = {
    "epoch",
    "step",
    "loss",
    "eval_time_s",
    "unparsed",
    "train_time_s",
    "epoch_wall_s",
    "train_loss",
    "partial_epoch_time",
}
ALPHA = 0.05  # significance level of the seed-noise test
NOISE_RULE = (
    f"Welch's t-test of a method's seeds against the best method's, p-values Holm-adjusted over "
    f"the methods compared in the table, p < {ALPHA}; p n/a: no test was possible (fewer than 2 seeds "
    f"on a side, or the same value for every seed on both sides); with one seed per method no "
    f"difference can be told apart from seed noise"
)
NOISE_NOTE = f"✱ = differs from the best by more than seed noise ({NOISE_RULE})."
PAIRED_NOTE = (
    "Δ vs best [95% CI]: the difference to the best method on the same items, with a paired bootstrap 95% "
    "interval (2,000 resamples of the items, and of each method's seeds where it has several; seeded, so the "
    "report is reproducible); an interval that contains 0 cannot tell the two apart. McNemar p: McNemar's exact "
    "test of the two accuracies over the items one run got right and the other wrong (one run per side; n/a with "
    "several seeds). Rows in italics are baselines, scored on the same items."
)
# A completed result.json without these is cut short or hand-edited: the report cannot show it.


@dataclass
class Run:
    name: str
    group: str
    seed: int | None
    status: str
    settings: dict = field(default_factory=dict)
    error: str | None = None
    result: dict | None = None
    history: list = field(default_factory=list)  # metrics.jsonl: one line per evaluation
    train_log: list = field(default_factory=list)  # train_log.jsonl: training loss per logging step
    folder: Path | None = None  # the run folder: the paired tests read its predictions_<split>.jsonl


def mean_std(vals: list[float]) -> tuple[float | None, float | None, int]:
    """Mean, sample std (None for one value) and count; (None, None, 0) for none."""
    if not vals:
        return None, None, 0
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return mean, std, len(vals)


@dataclass
class Group:
    name: str
    runs: list[Run]

    def values(self, phase: str, key: str) -> list[float]:
        """One number per seed: a metric at 'metrics_epoch0'/'metrics_best', or a result field."""
        out = []
        for r in self.runs:
            src = r.result.get(phase) or {} if phase else r.result
            v = src.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out.append(float(v))
        return out

    def stat(self, phase: str, key: str) -> tuple[float | None, float | None, int]:
        return mean_std(self.values(phase, key))

    @property
    def first(self) -> dict:
        return self.runs[0].result


# -- reading ------------------------------------------------------------------------------------


def collect(folder: Path) -> tuple[dict, list[Run]]:
    """The sweep's runs in plan order (or, for a plain folder of run folders, every run in it)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder; pass a sweep folder (it holds sweep.json) or a folder of runs")
    state = read_json(
        folder / layout.SWEEP_STATE,
        None,
        fix="delete it to report every */result.json of the folder instead, or rerun the sweep to write it again",
    )
    if isinstance(state, dict):
        entries = state.get("runs", [])
    else:
        state = {"name": folder.name}
        entries = [{"name": p.parent.name} for p in sorted(folder.glob("*/result.json"))]
    runs = [read_run(folder / e["name"], e) for e in entries]
    if not runs:
        raise UserError(f"{folder}: no runs found (no sweep.json and no */result.json)")
    runs, state["search"] = choose_trials(state, runs)  # `search:`: each variant's chosen trial, as the variant
    return state, runs


HELD = ("failed", "changed")  # sweep.json statuses the report takes over the folder's result.json


def read_result(run_dir: Path, listed: str) -> tuple[dict | None, str | None]:
    """(result.json, None), or (None, why the report cannot use it); UnreadableFile when corrupt."""
    path = run_dir / layout.RESULT
    result = rundir.read_result(run_dir)
    if result is None:
        return None, (
            f"{path} is missing although sweep.json lists the run as completed; run the sweep again to redo it"
            if listed == "completed"
            else None
        )
    if not isinstance(result, dict):
        raise UnreadableFile(f"{path}: not a JSON object")
    if missing := layout.missing_keys(result):
        raise UnreadableFile(f"{path}: says completed but lacks {', '.join(missing)} (cut short or edited)")
    return result, None


def read_run(run_dir: Path, entry: dict) -> Run:
    """One run folder; a file that cannot be read makes the run 'unreadable' with the reason."""
    name, group, settings = entry["name"], entry.get("group", entry["name"]), entry.get("settings", {})
    try:
        result, absent = read_result(run_dir, entry.get("status", "pending"))
        history, train_log = read_history(run_dir), read_jsonl(run_dir / layout.TRAIN_LOG)
    except UnreadableFile as e:
        return Run(name, group, entry.get("seed"), "unreadable", settings, str(e), folder=run_dir)
    if absent:
        return Run(name, group, entry.get("seed"), "missing", settings, absent, folder=run_dir)
    listed = entry.get("status", "pending")
    if listed in HELD:  # sweep.json's failed or changed (to run again) wins over the folder, which may still
        # hold an earlier run of this name, with other settings: none of its numbers belongs to this plan
        return Run(name, group, entry.get("seed"), listed, settings, entry.get("error") or listed, folder=run_dir)
    status = (result or {}).get("status") or listed
    return Run(
        name,
        group,
        entry.get("seed"),
        status,
        settings,
        (result or {}).get("error"),
        result,
        history,
        train_log,
        run_dir,
    )


def code_of(result: dict) -> str:
    """The code that made a run's numbers, in words: peftlab's version and commit, torch, transformers, peft."""
    versions = result.get("versions") if isinstance(result.get("versions"), dict) else {}
    if not versions:
        return "versions not recorded (an older peftlab)"
    commit = str(result.get("git_hash") or "")
    short = commit[:10] + ("+dirty" if commit.endswith("+dirty") else "")
    libs = ", ".join(f"{name} {versions.get(name) or '?'}" for name in ("torch", "transformers", "peft"))
    return f"peftlab {versions.get('peftlab') or '?'}{f' (commit {short})' if commit else ''}, {libs}"


def made_with(runs: list[Run]) -> list[dict]:
    """[{code, runs}] over the completed runs the report shows: one entry when one code made them all; more
    when a table mixes numbers made before and after a change (the report then says so)."""
    codes: dict[str, list[str]] = {}
    for r in runs:
        if r.status == "completed" and r.result:
            codes.setdefault(code_of(r.result), []).append(r.name)
    return [{"code": code, "runs": names} for code, names in codes.items()]


MADE_WITH_NOTE = (
    "The runs of this report were made by different code, and a fix between versions can change numbers; "
    "`peftlab sweep --rerun-changed` runs again those made by another peftlab version:"
)


def made_with_lines(s: dict) -> list[str]:
    """The report's "made with" note, as markdown lines; none when one code made every run shown."""
    made = s.get("made_with") or []
    return [f"- {m['code']}: {', '.join(m['runs'])}" for m in made] if len(made) > 1 else []


def groups_of(runs: list[Run]) -> list[Group]:
    order: dict[str, list[Run]] = {}
    for r in runs:
        if r.status == "completed" and r.result and not is_eval(r.result):  # evaluations: their own table
            order.setdefault(r.group, []).append(r)
    return [Group(name, rs) for name, rs in order.items()]


def validation_note(result: dict) -> str:
    """What the best-epoch numbers are: scores of the split the epoch was chosen on (so they lean
    optimistic, as any selection does), plus the task's own caveat (REPORT_NOTE), e.g. QA's threshold."""
    from peftlab.tasks.contract import read_hook
    from peftlab.tasks.registry import TASKS

    note = (
        "Best-epoch scores are the validation split's, the split that chose the epoch, so they lean "
        "optimistic; a test_file is scored once with the chosen weights (metrics_test in result.json)."
    )
    task = TASKS.get(result.get("task"))
    extra = read_hook(task, "REPORT_NOTE")
    return f"{note} {extra}" if extra and "null_threshold" in (result.get("metrics_best") or {}) else note


def metric_columns(groups: list[Group], metric: str) -> list[str]:
    """The main metric first, then the task's report metrics, then other numeric metrics (up to 6)."""
    from peftlab.tasks.contract import read_hook
    from peftlab.tasks.registry import TASKS

    task = TASKS.get(groups[0].first.get("task"))
    preferred = list(read_hook(task, "REPORT_METRICS"))
    seen = [
        k
        for g in groups
        for k, v in (g.first.get("metrics_best") or {}).items()
        if isinstance(v, (int, float)) and k not in BOOKKEEPING
    ]
    cols = [metric] + [k for k in preferred if k in seen] + ([] if preferred else seen)
    main = list(dict.fromkeys(c for c in cols if c in seen or c == metric))
    main = [c for c in main if not c.startswith("extra_")][:6]
    # a second evaluation set (extra_eval_file): its scores, e.g. extra_accuracy, as more columns
    extra = [
        k
        for k in dict.fromkeys(seen)
        if k.startswith("extra_") and k[6:] not in BOOKKEEPING and k[6:] in [metric] + preferred
    ][:4]
    if not extra:
        extra = [k for k in dict.fromkeys(seen) if k.startswith("extra_") and k[6:] not in BOOKKEEPING][:4]
    return main + extra


# -- statistics ---------------------------------------------------------------------------------


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def best_group(groups: list[Group], metric: str, phase: str = "metrics_best") -> Group:
    sign = 1 if higher_is_better(metric) else -1

    def score(g: Group) -> float:
        mean = g.stat(phase, metric)[0]
        return -math.inf if mean is None else sign * mean

    return max(groups, key=score)


def pareto_front(points: list[tuple[float, float]], higher: bool) -> list[int]:
    """Indices of points (cost, metric) that no other point beats on both (lower cost, better metric)."""
    front = []
    for i, (c, m) in enumerate(points):
        dominated = any(
            (c2 <= c and (m2 >= m if higher else m2 <= m)) and (c2 < c or m2 != m)
            for j, (c2, m2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


COSTS = (
    ("trainable_params", "trainable parameters"),
    ("peak_memory_mb", "peak memory (MiB)"),
    ("time_per_epoch_s", "time per epoch (s)"),
)


# -- the table ----------------------------------------------------------------------------------


def fmt_stat(mean, std, n, digits=4) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def fmt_params(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{int(n):,}"


def summarize(folder: Path, collected: tuple[dict, list[Run]] | None = None) -> dict:
    """Everything the report shows, as plain data (also written as report.json)."""
    state, runs = collected or collect(folder)
    groups = groups_of(runs)
    out = {
        "sweep": state.get("name", Path(folder).name),
        "folder": str(folder),
        "description": state.get("description", ""),
        "noise_rule": NOISE_RULE,
        "search": state.get("search") or [],
        "runs": [
            {
                "name": r.name,
                "group": r.group,
                "seed": r.seed,
                "status": r.status,
                "error": r.error,
                "settings": r.settings,
            }
            for r in runs
        ],
        "groups": [],
        "evaluations": evaluation_rows(runs),
        "made_with": made_with(runs),
    }
    if not groups:
        return out
    by_metric: dict[str, list[Group]] = {}
    for g in groups:
        by_metric.setdefault(g.first["metric_for_best"], []).append(g)
    sections = [summarize_groups(gs, metric, state) for metric, gs in by_metric.items()]
    if len(sections) == 1:
        out.update(sections[0])
    else:  # one "best epoch chosen by" over variants that chose by different metrics would be false
        out["sections"] = sections
        out["recommendation"] = {"by_metric": {sec["metric"]: sec["recommendation"] for sec in sections}}
    return out


def summarize_groups(groups: list[Group], metric: str, state: dict) -> dict:
    """The tables, verdict and Pareto front of groups that all chose their best epoch by `metric`."""
    cols = metric_columns(groups, metric)
    split = headline_split(groups, metric)
    phase = PHASE[split]  # the scores that rank the methods: the test split's when every run has one
    best = best_group(groups, metric, phase)
    kinds = {g.first.get("peak_memory_kind", "") for g in groups}
    out = dict(
        metric=metric,
        columns=cols,
        best=best.name,
        memory_kind=kinds.pop() if len(kinds) == 1 else "mixed",
        task=groups[0].first.get("task"),
        model=groups[0].first.get("model"),
        validation_note=validation_note(groups[0].first),
        headline={"split": split, "phase": phase, "note": headline_note(split, groups)},
        groups=[],
    )
    best_vals = best.values(phase, metric)
    for g in groups:
        r = g.first
        row = {
            "group": g.name,
            "method": r["method"],
            "seeds": len(g.runs),
            "settings": next((x.settings for x in g.runs), {}),
            "trainable_params": r["trainable_params"],
            "trainable_pct": r["trainable_pct"],
            "total_params": r["total_params"],
            "run_names": [x.name for x in g.runs],
            "memory_kind": r.get("peak_memory_kind", ""),
        }
        for key in ("time_per_epoch_s", "peak_memory_mb", "adapter_size_mb", "best_epoch", "train_tokens_per_s"):
            row[key] = dict(zip(("mean", "std", "n"), g.stat("", key)))
        for shown in ("metrics_epoch0", "metrics_best", "metrics_test"):
            row[shown] = {c: dict(zip(("mean", "std", "n"), g.stat(shown, c))) for c in cols}
        row["values"] = vals = g.values(phase, metric)  # one per seed, for tests against it
        mean, best_mean = row[phase][metric]["mean"], best.stat(phase, metric)[0]
        p = welch_p(vals, best_vals) if g is not best else None
        row["vs_best"] = {"diff": None if g is best or mean is None else mean - best_mean, "p_unadjusted": p}
        out["groups"].append(row)
    epochs = [int(e) for e in state.get("report_epochs") or []]
    if epochs:  # the metric after chosen epochs (e.g. 1 / 5 / 10), from each run's metrics.jsonl
        out["report_epochs"] = epochs
        for g, row in zip(groups, out["groups"]):
            row["at_epochs"] = {
                str(e): dict(
                    zip(
                        ("mean", "std", "n"),
                        mean_std(
                            [
                                h[metric]
                                for r in g.runs
                                for h in r.history
                                if h.get("epoch") == e and isinstance(h.get(metric), (int, float))
                            ]
                        ),
                    )
                )
                for e in [0] + epochs
            }
    adjusted = holm([r["vs_best"]["p_unadjusted"] for r in out["groups"]])
    for row, p in zip(out["groups"], adjusted):
        row["vs_best"].update(p=p, beyond_noise=p is not None and p < ALPHA)
    out["pareto"] = {
        key: [out["groups"][i]["group"] for i in front_of(out["groups"], key, metric, phase)] for key, _ in COSTS
    }
    add_paired(out, groups)
    out["verdict"] = verdict(out)
    out["recommendation"] = recommend(out)
    return out


def front_of(rows: list[dict], cost_key: str, metric: str, phase: str = "metrics_best") -> list[int]:
    idx, pts = [], []
    for i, row in enumerate(rows):
        cost = row[cost_key]["mean"] if isinstance(row[cost_key], dict) else row[cost_key]
        m = row[phase][metric]["mean"]
        if cost is not None and m is not None:
            idx.append(i)
            pts.append((cost, m))
    return [idx[j] for j in pareto_front(pts, higher_is_better(metric))]


TOLERANCE = 0.02  # with one seed per method and no predictions: how far below the best still counts as "as good"
NOT_TIED = {"low": 1.0, "high": 1.0}  # a row without a paired interval is not counted as tied with the best


def verdict(s: dict) -> list[str]:
    """Plain sentences answering 'which method should I use here?': the best, the ones as good as it
    (within seed noise, or within TOLERANCE with one seed each), and the cheapest of those per cost."""
    metric, rows, head = s["metric"], s["groups"], s.get("headline") or {"phase": "metrics_best", "split": ""}
    best = next(r for r in rows if r["group"] == s["best"])
    show = lambda r: fmt_stat(**r[head["phase"]][metric], digits=3)  # noqa: E731
    where = "on the test split" if head["split"] == "test" else "at the best epoch"
    lines = [f"Best {metric} {where}: **{best['group']}** ({show(best)})."]
    if any("vs_best" in (r.get("paired") or {}) for r in rows):  # the same items scored by both: paired
        close = [r for r in rows if r is best or contains_zero((r.get("paired") or {}).get("vs_best") or NOT_TIED)]
        rule = "not distinguishable from it on the same items (paired bootstrap 95% CI of the difference contains 0)"
    elif any(r["seeds"] > 1 for r in rows):
        close = [r for r in rows if r is best or not r["vs_best"]["beyond_noise"]]
        rule = "not distinguishable from it by seed noise"
    else:
        close = [r for r in rows if r is best or abs(r["vs_best"]["diff"] or 0) <= TOLERANCE]
        rule = (
            f"within {TOLERANCE} of it (one seed each and no predictions files to pair on the same items, so no "
            f"test tells these apart: a `grid: {{seed: [1, 2, 3]}}` sweep tells)"
        )
    others = [f"{r['group']} ({show(r)})" for r in close if r is not best]
    if others:
        lines.append(f"{rule[0].upper() + rule[1:]}: {', '.join(others)}.")
    for key, label in (
        ("trainable_params", "fewest trainable parameters"),
        ("peak_memory_mb", "lowest peak memory"),
        ("time_per_epoch_s", "fastest epochs"),
    ):
        cost = lambda r, key=key: (r[key]["mean"] if isinstance(r[key], dict) else r[key]) or math.inf
        pick = min(close, key=cost)
        ratio = cost(best) / cost(pick) if cost(pick) else math.inf
        if pick is not best and f"{ratio:.1f}" != "1.0":  # a ratio that prints 1.0x says nothing: left out
            lines.append(
                f"Among those, {label}: **{pick['group']}** ({show(pick)} {metric}; "
                f"{best['group']} takes {ratio:.1f}x that)."
            )
    cheapest = min(rows, key=lambda r: r["time_per_epoch_s"]["mean"] or math.inf)
    if cheapest not in close:
        lines.append(
            f"The fastest, **{cheapest['group']}**, gives up "
            f"{abs(cheapest['vs_best']['diff']):.3f} {metric} against {best['group']}."
        )
    return lines


def table_rows(s: dict, phase: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one table in the users' layout ('result at epoch 0' / 'at best epoch')."""
    header = ["method", "seeds", "time/epoch", "peak memory", "trainable", "%", "adapter"] + s["columns"]
    headline = phase == (s.get("headline") or {}).get("phase", "metrics_best")
    if phase in ("metrics_best", "metrics_test"):
        header += ["best epoch"]
    # with one seed everywhere no row can have a test: the note says so once, not "p n/a" on every row
    tested = any(r["seeds"] > 1 for r in s["groups"])
    paired = bool(s.get("baselines")) or any("vs_best" in (r.get("paired") or {}) for r in s["groups"])
    welch = headline and (tested or not paired)  # the plain difference only where no paired column shows it
    if headline:
        header += ([f"Δ {s['metric']} vs best"] if welch else []) + (paired_header(s) if paired else [])
    rows = []
    for r in s["groups"]:
        t, m, a = r["time_per_epoch_s"], r["peak_memory_mb"], r["adapter_size_mb"]
        row = [
            r["group"],
            str(r["seeds"]),
            fmt_stat(t["mean"], t["std"], t["n"], 1) + " s" if t["mean"] else "-",
            fmt_stat(m["mean"] / 1024, None, 1, 2) + " GiB " + memory_label(r.get("memory_kind")) if m["mean"] else "-",
            fmt_params(r["trainable_params"]),
            f"{r['trainable_pct']:.{2 if r['trainable_pct'] >= 0.1 else 3}f}",
            f"{a['mean']:.1f} MiB" if a["mean"] is not None else "-",
        ]
        row += [fmt_stat(**r[phase][c], digits=3) for c in s["columns"]]
        if phase in ("metrics_best", "metrics_test"):
            b = r["best_epoch"]
            row.append(fmt_stat(b["mean"], None, b["n"], 1 if b["std"] else 0) if b["mean"] is not None else "-")
        if welch:
            vs = r["vs_best"]
            if vs["diff"] is None:
                row.append("best")
            else:
                mark = " ✱" if vs["beyond_noise"] else ""
                pval = f" (p={fmt_p(vs['p'])})" if tested else ""
                row.append(f"{vs['diff']:+.3f}{pval}{mark}")
        if headline and paired:
            row += paired_cells(s, r)
        rows.append(row)
    if headline and paired:
        rows += baseline_rows(s, len(header))
    return header, rows


def epochs_table(s: dict, h: str = "##") -> str:
    """'## accuracy after epochs 1, 5, 10': the users' "after 1 / 5 / 10 epochs" columns; '-' where a run
    did not reach that epoch (early stopping, or fewer epochs)."""
    return f"{h} {s['metric']} after epochs {', '.join(map(str, s['report_epochs']))}\n\n" + markdown_table(
        *epochs_rows(s)
    )


def epochs_rows(s: dict) -> tuple[list[str], list[list[str]]]:
    epochs = [0] + s["report_epochs"]
    header = ["method"] + [f"epoch {e}" for e in epochs]
    return header, [[r["group"]] + [fmt_stat(**r["at_epochs"][str(e)], digits=3) for e in epochs] for r in s["groups"]]


def failed_lines(s: dict) -> list[str]:
    return [
        f"- {r['name']}: **{r['status']}** — {r['error'] or 'no result'}"
        for r in s["runs"]
        if r["status"] != "completed"
    ]


PHASES = (("Result at epoch 0 (before any update)", "metrics_epoch0"), ("Result at best epoch", "metrics_best"))
TEST_PHASES = (
    ("Result on the test split (headline: the best epoch's weights, scored once)", "metrics_test"),
    ("Result at epoch 0 (before any update; validation split)", "metrics_epoch0"),
    ("Result at best epoch, validation split (the selection split: it chose the epoch)", "metrics_best"),
)


def phases_of(s: dict) -> tuple[tuple[str, str], ...]:
    """The tables of a section, headline first when it is the test split's."""
    return TEST_PHASES if (s.get("headline") or {}).get("split") == "test" else PHASES


def sections_of(s: dict) -> list[dict]:
    """The summary's parts that each chose their best epoch by one metric: one, or (variants that chose by
    different metrics) one per metric; none without completed runs."""
    return s.get("sections") or ([s] if s["groups"] else [])


def split_note(s: dict) -> str:
    metrics = [f"**{sec['metric']}** ({', '.join(r['group'] for r in sec['groups'])})" for sec in s["sections"]]
    return (
        f"The variants chose their best epoch by different metrics: {'; '.join(metrics)}. Rows chosen by one "
        f"metric are not ranked against rows chosen by another, so each has its own tables, verdict and Pareto front."
    )


def section_markdown(sec: dict, done: str, h: str) -> list[str]:
    """One metric's part of the report: header line, verdict, the two tables, epochs, Pareto front."""
    out = [f"Task **{sec['task']}**, model **{sec['model']}**; {done}best epoch chosen by **{sec['metric']}**."]
    out.append("\n".join(f"- {v}" for v in sec["verdict"]))
    for title, phase in phases_of(sec):
        out.append(f"{h} {title}\n\n" + markdown_table(*table_rows(sec, phase)))
        out += table_notes(sec, phase)
    if sec.get("report_epochs"):
        out.append(epochs_table(sec, h))
    front = "; ".join(f"{label}: {', '.join(sec['pareto'][key])}" for key, label in COSTS)
    out.append(f"Pareto front ({sec['metric']} vs cost) — {front}.")
    return out


def table_notes(sec: dict, phase: str) -> list[str]:
    """The notes under a table: the tests of the headline table, the selection caveat of the validation one."""
    head = sec.get("headline") or {"phase": "metrics_best"}
    notes = []
    if phase == head["phase"]:
        notes += [NOISE_NOTE, PAIRED_NOTE] + [f"*{b['name']}*: {b['note']}." for b in sec.get("baselines") or []]
        notes += unpaired_notes(sec)
    if phase == "metrics_best":
        notes.append(sec["validation_note"])
    return notes


def recommendation_lines(s: dict) -> list[str]:
    """The report's opening: each section's recommendation (its metric named when there are several)."""
    sections = sections_of(s)
    out = []
    for sec in sections:
        rec = sec.get("recommendation") or {}
        lead = [f"**Best epoch chosen by {sec['metric']}:**"] if len(sections) > 1 else []
        out.append("\n".join(lead + [f"- {line}" for line in rec.get("lines", [])]))
    return out


def to_markdown(s: dict) -> str:
    out = [f"# Sweep {s['sweep']}"] + recommendation_lines(s)
    if s.get("description"):
        out.append(s["description"])
    evals = s.get("evaluations")
    after = (
        [
            "## Zero-shot, few-shot, tuned, merged and quantized\n\n"
            + markdown_table(evals["header"], evals["rows"])
            + "\n\n"
            + evals["note"]
        ]
        if evals
        else []
    )
    made = made_with_lines(s)
    made_note = ["## Made with\n\n" + MADE_WITH_NOTE + "\n\n" + "\n".join(made)] if made else []
    sections = sections_of(s)
    if not sections:
        return "\n\n".join(out + (after or ["No completed runs yet."]) + made_note + failed_lines(s)) + "\n"
    n_done = sum(r["status"] == "completed" for r in s["runs"])
    done = f"{n_done} of {len(s['runs'])} runs completed; "
    if len(sections) == 1:
        out += section_markdown(s, done, "##")
    else:
        out.append(f"{done[:-2]}. {split_note(s)}")
        for sec in sections:
            out.append(f"## Best epoch chosen by {sec['metric']}")
            out += section_markdown(sec, "", "###")
    out += after + made_note
    failed = failed_lines(s)
    if failed:
        out.append("## Runs not completed\n\n" + "\n".join(failed))
    return "\n\n".join(out) + "\n"


def to_csv(s: dict) -> str:
    """One row per group: numbers unformatted, mean and std side by side. Groups that chose their best
    epoch by different metrics get a first column `chosen_by` saying which (their metric columns joined)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    sections = sections_of(s)
    split = len(sections) > 1
    stat_keys = ["time_per_epoch_s", "peak_memory_mb", "adapter_size_mb", "best_epoch"]
    columns = list(dict.fromkeys(c for sec in sections for c in sec["columns"])) if split else s.get("columns", [])
    metric_keys = [(p, c) for p in ("metrics_epoch0", "metrics_best") for c in columns]
    w.writerow(
        (["chosen_by"] if split else [])
        + ["group", "method", "seeds", "trainable_params", "trainable_pct"]
        + [f"{k}_{x}" for k in stat_keys for x in ("mean", "std")]
        + [f"{p.removeprefix('metrics_')}_{c}_{x}" for p, c in metric_keys for x in ("mean", "std")]
        + ["diff_vs_best", "p_vs_best", "p_vs_best_unadjusted", "beyond_noise"]
    )
    for sec in sections:
        for r in sec["groups"]:
            w.writerow(
                ([sec["metric"]] if split else [])
                + [r["group"], r["method"], r["seeds"], r["trainable_params"], r["trainable_pct"]]
                + [r[k][x] for k in stat_keys for x in ("mean", "std")]
                + [(r[p].get(c) or {}).get(x) for p, c in metric_keys for x in ("mean", "std")]
                + [r["vs_best"][k] for k in ("diff", "p", "p_unadjusted", "beyond_noise")]
            )
    return buf.getvalue()


# -- two sweeps side by side ------------------------------------------------------------------


def evaluation_pairs(sa: dict, sb: dict, metric: str, trained: set) -> list[list[str]]:
    """The evaluation-only rows (zero-shot, few-shot, exports) the two sweeps share by name, e.g. each
    family's untuned model: their metric and wall time, in the comparison's columns."""

    def rows_of(s: dict) -> dict:
        ev = s.get("evaluations") or {}
        if metric not in ev.get("header", []):
            return {}
        i, wall = ev["header"].index(metric), ev["header"].index("wall time")
        return {r[0]: (r[i], r[wall]) for r in ev["rows"] if r[0] not in trained}

    ra, rb = rows_of(sa), rows_of(sb)
    out = []
    for name in [n for n in ra if n in rb]:
        (va, wa), (vb, wb) = ra[name], rb[name]
        try:
            diff = f"{float(vb) - float(va):+.3f}"
        except ValueError:
            diff = "-"
        out.append([f"{name} (eval)", va, vb, diff, "-", wa, wb, "-", "-"])
    return out


def compare(a: Path, b: Path) -> str:
    """Markdown: each group's best metric, time and memory in sweep A and B, and the difference."""
    sa, sb = summarize(a), summarize(b)
    for folder, x in ((a, sa), (b, sb)):
        if x.get("sections"):
            raise UserError(
                f"{folder}: its runs pick their best epoch by different metrics "
                f"({', '.join(sec['metric'] for sec in x['sections'])}); compare sweeps of one metric"
            )
    if not sa["groups"] or not sb["groups"]:
        raise UserError(f"{a if not sa['groups'] else b}: no completed runs to compare")
    metric = sa["metric"]
    if sb["metric"] != metric:
        raise UserError(f"{a} picks best epochs by {metric}, {b} by {sb['metric']}; compare sweeps of one task")
    ga, gb = {r["group"]: r for r in sa["groups"]}, {r["group"]: r for r in sb["groups"]}
    na, nb = sa["sweep"], sb["sweep"]
    if na == nb:  # the same sweep run twice (e.g. two backends, two machines): name the columns A and B
        na, nb = "A", "B"
    header = [
        "method",
        f"{metric} {na}",
        f"{metric} {nb}",
        "Δ (B − A)",
        "p",
        f"time/epoch {na}",
        f"time/epoch {nb}",
        f"peak mem {na}",
        f"peak mem {nb}",
    ]
    rows = []
    names = list(dict.fromkeys(list(ga) + list(gb)))
    ps = holm([welch_p(ga[n]["values"], gb[n]["values"]) if n in ga and n in gb else None for n in names])
    for name, p in zip(names, ps):
        x, y = ga.get(name), gb.get(name)
        cell = lambda r, k: fmt_stat(**r["metrics_best"][k], digits=3) if r else "-"  # noqa: E731
        mx, my = (r["metrics_best"][metric]["mean"] if r else None for r in (x, y))
        diff = f"{my - mx:+.3f}" if mx is not None and my is not None else "-"
        t = lambda r: f"{r['time_per_epoch_s']['mean']:.1f} s" if r and r["time_per_epoch_s"]["mean"] else "-"  # noqa: E731
        m = lambda r: (  # noqa: E731
            f"{r['peak_memory_mb']['mean'] / 1024:.2f} GiB {memory_label(r.get('memory_kind'))}"
            if r and r["peak_memory_mb"]["mean"]
            else "-"
        )
        rows.append(
            [name, cell(x, metric), cell(y, metric), diff, fmt_p(p) if x and y else "-", t(x), t(y), m(x), m(y)]
        )
    rows += evaluation_pairs(sa, sb, metric, set(names))
    title = (
        f"# {na} ({sa['model']}) vs {nb} ({sb['model']}) — {sa['task']}, best epoch by {metric}\n\n"
        f"A = {a}, B = {b}. p: Welch's t-test of the method's seeds in A against those in B, "
        f"Holm-adjusted over the methods of this table; n/a: no test was possible (fewer than 2 seeds on a "
        f"side, or no spread on either side). Rows marked (eval) are evaluations without training (their "
        f"time columns: the scoring's wall time).\n\n"
    )
    return title + markdown_table(header, rows) + "\n"
