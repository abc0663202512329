"""Small metrics computed during training (the full evaluation lives in ``echoscreen.evaluate``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve by ranks (Mann-Whitney U; ties count one half).

    Args:
        scores: one score per example (higher = more likely positive).
        positive: whether each example is positive.

    Returns:
        AUROC in [0, 1], or NaN when one class is absent.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def accuracy(pred: Sequence[int], truth: Sequence[int]) -> float:
    """Fraction of ``pred == truth`` over examples whose truth is known (>= 0); NaN if none."""
    pairs = [(p, t) for p, t in zip(pred, truth, strict=True) if t >= 0]
    if not pairs:
        return math.nan
    return sum(p == t for p, t in pairs) / len(pairs)


def class_weights(counts: Sequence[int]) -> list[float]:
    """Inverse-frequency weights ``n / (K * n_c)`` over the K classes present (0 if absent)."""
    present = [c for c in counts if c > 0]
    total, k = sum(present), len(present)
    return [total / (k * c) if c > 0 else 0.0 for c in counts]
