"""Stratified bootstrap confidence intervals, vectorised over replicates.

A replicate draws ``n_pos`` cases with replacement from the positives and
``n_neg`` from the negatives (stratified: prevalence is fixed, so every replicate
has both classes whenever the sample has). It is represented by *weights*: how
often each case was drawn, one row per replicate, so one call to a weighted
metric computes all replicates at once. The 95 % interval is the percentile
interval (2.5th and 97.5th percentiles of the replicate values).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from echoscreen.evaluate.metrics import FloatArray, IntArray

WeightedMetric = Callable[[IntArray, FloatArray, FloatArray], FloatArray]


def stratified_weights(y: IntArray, n_boot: int = 1000, seed: int = 0) -> FloatArray:
    """Bootstrap case weights, stratified by class.

    Args:
        y: (n,) 0/1 labels (any integer labels work: each value is a stratum).
        n_boot: number of replicates B.
        seed: seed of the generator; the same seed gives the same weights.

    Returns:
        (B, n) float weights; each row sums, per stratum, to the stratum's size.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    weights = np.zeros((n_boot, n))
    rows = np.arange(n_boot)[:, None]
    for value in np.unique(y):
        members = np.flatnonzero(y == value)
        draws = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
        flat = (rows * n + draws).ravel()
        weights += np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n)
    return weights


def percentile_ci(values: FloatArray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite replicate values (NaNs if none are finite)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(finite, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_ci(
    metric: WeightedMetric,
    y: IntArray,
    scores: FloatArray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Stratified-bootstrap percentile interval of a weighted metric (e.g. ``auroc_weighted``)."""
    weights = stratified_weights(y, n_boot, seed)
    return percentile_ci(metric(y, scores, weights), level)


def bootstrap_difference_ci(
    metric: WeightedMetric,
    y: IntArray,
    scores_a: FloatArray,
    scores_b: FloatArray,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Paired interval of ``metric(a) - metric(b)``: both scored on the same replicates."""
    weights = stratified_weights(y, n_boot, seed)
    return percentile_ci(metric(y, scores_a, weights) - metric(y, scores_b, weights))
