"""Per-subgroup screening metrics (sex, age band) and their parity gaps.

At the operating point, each subgroup reports its counts, sensitivity and
specificity, the false-negative rate (FNR = 1 - sensitivity: positives the
screen misses) and the false-positive rate (FPR = 1 - specificity: normals sent
for a confirmatory echo), and its AUROC. A parity gap is the largest minus the
smallest rate over the named subgroups where the rate is computable (the
"unknown" group, studies without the attribute, is reported but not compared).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from echoscreen.evaluate.metrics import (
    FloatArray,
    IntArray,
    auroc,
    has_both_classes,
    rates_at,
)

#: default age bands in years, inclusive lower and upper (whole years)
AGE_BANDS: tuple[tuple[int, int], ...] = ((5, 9), (10, 14), (15, 20))
UNKNOWN = "unknown"


def age_band(age: float, bands: tuple[tuple[int, int], ...] = AGE_BANDS) -> str:
    """The band label ("5-9") holding ``age`` (``lo <= age < hi + 1``), "other" or "unknown"."""
    if not math.isfinite(age):
        return UNKNOWN
    for lo, hi in bands:
        if lo <= age < hi + 1:
            return f"{lo}-{hi}"
    return "other"


def sex_group(sex: str) -> str:
    """The sex group: "F", "M" or "unknown"."""
    return sex if sex in ("F", "M") else UNKNOWN


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def group_metrics(y: IntArray, scores: FloatArray, threshold: float | None) -> dict[str, Any]:
    """Counts, AUROC and the rates at ``threshold`` for one subgroup (None where undefined)."""
    out: dict[str, Any] = {"n": len(y), "n_pos": int(np.sum(y == 1)), "n_neg": int(np.sum(y == 0))}
    out["auroc"] = _num(auroc(y, scores)) if has_both_classes(y) else None
    if threshold is None:
        out.update(sensitivity=None, specificity=None, fnr=None, fpr=None)
        return out
    r = rates_at(y, scores, threshold)
    out.update(tp=r.tp, fn=r.fn, tn=r.tn, fp=r.fp, sensitivity=_num(r.sensitivity),
               specificity=_num(r.specificity), fnr=_num(r.fnr), fpr=_num(r.fpr))  # fmt: skip
    return out


def parity_gap(groups: dict[str, dict[str, Any]], rate: str) -> dict[str, Any]:
    """``max - min`` of ``rate`` over named groups where it is defined, with the extremes.

    Returns:
        ``{"gap", "max_group", "min_group", "groups_compared"}``; ``gap`` is None with
        a ``reason`` when fewer than two groups have the rate.
    """
    vals = {g: m[rate] for g, m in groups.items() if g != UNKNOWN and m.get(rate) is not None}
    if len(vals) < 2:
        return {"gap": None, "groups_compared": sorted(vals),
                "reason": f"{rate} is defined in fewer than two subgroups"}  # fmt: skip
    hi = max(vals, key=lambda g: vals[g])
    lo = min(vals, key=lambda g: vals[g])
    return {"gap": vals[hi] - vals[lo], "max_group": hi, "min_group": lo,
            "groups_compared": sorted(vals)}  # fmt: skip


def _group_order(g: str) -> tuple[bool, int, str]:
    """Named groups first, age bands by their lower bound ("5-9" before "10-14")."""
    lead = g.split("-")[0]
    return g in (UNKNOWN, "other"), int(lead) if lead.isdigit() else 0, g


def subgroup_table(
    y: IntArray, scores: FloatArray, labels: list[str], threshold: float | None
) -> dict[str, Any]:
    """Metrics per distinct label in ``labels`` (one per study) plus FNR and FPR parity gaps."""
    names = sorted(set(labels), key=_group_order)
    arr = np.array(labels)
    groups = {g: group_metrics(y[arr == g], scores[arr == g], threshold) for g in names}
    return {
        "groups": groups,
        "parity": {"fnr": parity_gap(groups, "fnr"), "fpr": parity_gap(groups, "fpr")},
    }
