"""Is a difference between two groups of seeds more than seed noise? Welch's t-test per pair,
Holm's correction over the pairs of one table, and no p-value where no test could run."""

from __future__ import annotations

import math


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Welch t-test p-value (scipy); None when no test is possible: fewer than 2 seeds on a
    side, or no spread on either side (t is then undefined, and any p would be made up)."""
    if len(a) < 2 or len(b) < 2 or (max(a) == min(a) and max(b) == min(b)):
        return None
    from scipy import stats

    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm-adjusted p-values over one table's comparisons (None: no test, not counted). Written here:
    it is a few lines, statsmodels (multipletests) is not a dependency and scipy has no Holm."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))  # adjusted p never falls with rank
        out[i] = running
    return out


def fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"
