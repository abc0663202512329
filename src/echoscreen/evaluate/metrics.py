"""Binary and multi-class metrics as pure functions on numpy arrays.

Conventions: ``y`` is a 0/1 integer array of shape ``(n,)`` (1 = positive, i.e.
screen-positive), ``scores`` a float array of shape ``(n,)`` (higher = more
likely positive, a probability in [0, 1] for calibration). A case is called
positive at threshold ``t`` when ``score >= t``.

The ranking metrics (AUROC, average precision) are computed from *weighted*
counts at every distinct score, so the point estimate (all weights 1) and every
bootstrap replicate (weights = how often each case was drawn) go through the
same code, vectorised over replicates (see :mod:`echoscreen.evaluate.bootstrap`).
Ties are handled exactly: cases with equal scores enter a curve together, which
makes AUROC equal to the Mann-Whitney probability P(s+ > s-) + 0.5 P(s+ = s-).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def _levels(scores: FloatArray) -> tuple[IntArray, IntArray]:
    """Order cases by descending score and find where each distinct score ends.

    Returns:
        ``order`` (n,) indices sorting the scores descending, and ``ends`` (L,) the
        position (in that order) of the last case of each of the L distinct scores.
    """
    order = np.argsort(-scores, kind="mergesort")
    s = scores[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    return order.astype(np.int64), ends.astype(np.int64)


def weighted_counts(
    y: IntArray, scores: FloatArray, weights: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """True- and false-positive counts at every distinct threshold, per weight row.

    Args:
        y: (n,) 0/1 labels.
        scores: (n,) scores.
        weights: (B, n) non-negative case weights (one row per replicate).

    Returns:
        ``tps`` and ``fps`` of shape (B, L), cumulative over the L distinct scores
        taken as thresholds from highest to lowest, and ``thresholds`` (L,).
    """
    order, ends = _levels(scores)
    w = weights[:, order]
    pos = y[order].astype(bool)
    tps = np.cumsum(np.where(pos, w, 0.0), axis=1)[:, ends]
    fps = np.cumsum(np.where(pos, 0.0, w), axis=1)[:, ends]
    return tps, fps, scores[order][ends]


def auroc_weighted(y: IntArray, scores: FloatArray, weights: FloatArray) -> FloatArray:
    """AUROC for each weight row (trapezoids over the ROC; ties count one half).

    Returns:
        (B,) AUROC values; NaN in rows with no positive or no negative weight.
    """
    tps, fps, _ = weighted_counts(y, scores, weights)
    tpr = np.c_[np.zeros(len(tps)), tps]
    fpr = np.c_[np.zeros(len(fps)), fps]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tpr / tpr[:, -1:]
        fpr = fpr / fpr[:, -1:]
        return np.asarray(np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2, axis=1))


def average_precision_weighted(y: IntArray, scores: FloatArray, weights: FloatArray) -> FloatArray:
    """Average precision, ``sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds, per row.

    Returns:
        (B,) AP values; NaN in rows with no positive weight.
    """
    tps, fps, _ = weighted_counts(y, scores, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tps / np.maximum(tps + fps, 1e-300)
        recall = tps / tps[:, -1:]
        drecall = np.diff(np.c_[np.zeros(len(tps)), recall], axis=1)
        return np.asarray(np.sum(drecall * precision, axis=1))


def has_both_classes(y: IntArray) -> bool:
    """Whether ``y`` holds at least one positive and one negative."""
    return bool(np.any(y == 1) and np.any(y == 0))


def auroc(y: IntArray, scores: FloatArray) -> float:
    """Area under the ROC curve (rank-based, ties count one half); NaN without both classes."""
    return float(auroc_weighted(y, scores, np.ones((1, len(y))))[0])


def average_precision(y: IntArray, scores: FloatArray) -> float:
    """Average precision (step-wise area under the PR curve); NaN without positives."""
    return float(average_precision_weighted(y, scores, np.ones((1, len(y))))[0])


def roc_curve(y: IntArray, scores: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """ROC curve: ``(fpr, tpr, thresholds)``, starting at (0, 0) with threshold +inf."""
    tps, fps, thr = weighted_counts(y, scores, np.ones((1, len(y))))
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.r_[0.0, tps[0] / tps[0, -1]]
        fpr = np.r_[0.0, fps[0] / fps[0, -1]]
    return fpr, tpr, np.r_[np.inf, thr]


def pr_curve(y: IntArray, scores: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Precision-recall curve: ``(precision, recall, thresholds)`` from the highest threshold."""
    tps, fps, thr = weighted_counts(y, scores, np.ones((1, len(y))))
    with np.errstate(invalid="ignore", divide="ignore"):
        return tps[0] / (tps[0] + fps[0]), tps[0] / tps[0, -1], thr


@dataclass(frozen=True)
class Rates:
    """Counts at one threshold and the rates derived from them (NaN when undefined)."""

    tp: int
    fn: int
    tn: int
    fp: int

    @property
    def sensitivity(self) -> float:
        """TP / (TP + FN); NaN without positives."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def specificity(self) -> float:
        """TN / (TN + FP); NaN without negatives."""
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else float("nan")

    @property
    def fnr(self) -> float:
        """False-negative rate, 1 - sensitivity."""
        return 1.0 - self.sensitivity

    @property
    def fpr(self) -> float:
        """False-positive rate, 1 - specificity."""
        return 1.0 - self.specificity


def rates_at(y: IntArray, scores: FloatArray, threshold: float) -> Rates:
    """Confusion counts calling ``score >= threshold`` positive."""
    pred = scores >= threshold
    pos = y == 1
    return Rates(
        tp=int(np.sum(pred & pos)),
        fn=int(np.sum(~pred & pos)),
        tn=int(np.sum(~pred & ~pos)),
        fp=int(np.sum(pred & ~pos)),
    )


def threshold_for_sensitivity(y: IntArray, scores: FloatArray, target: float = 0.90) -> float:
    """The highest threshold whose sensitivity is at least ``target`` (NaN without positives).

    Candidate thresholds are the distinct scores; the sensitivity at a threshold
    counts ``score >= threshold`` as positive, so it only grows as the threshold falls.
    """
    if not np.any(y == 1):
        return float("nan")
    tps, _, thr = weighted_counts(y, scores, np.ones((1, len(y))))
    sens = tps[0] / tps[0, -1]
    return float(thr[int(np.argmax(sens >= target - 1e-12))])


def student_t_quantile(q: float, dof: float) -> float:
    """Quantile ``q`` in (0, 1) of Student's t with ``dof`` > 0 degrees of freedom.

    The CDF is the density integrated from 0 on a fine grid (trapezoids, 50,000 steps,
    the grid's end doubled until it passes ``q``) and inverted by interpolation;
    accurate to ~1e-6 for the quantiles used here.
    """
    if q < 0.5:
        return -student_t_quantile(1 - q, dof)
    log_c = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)
    hi = 4.0
    while True:
        x = np.linspace(0.0, hi, 50001)
        pdf = np.exp(log_c - (dof + 1) / 2 * np.log1p(x * x / dof))
        cdf = 0.5 + np.r_[0.0, np.cumsum((pdf[1:] + pdf[:-1]) / 2) * (hi / 50000)]
        if cdf[-1] >= q:
            return float(np.interp(q, cdf, x))
        hi *= 2


def threshold_predictive(y: IntArray, probs: FloatArray, target: float = 0.90) -> float:
    """A threshold that a *new* positive exceeds with probability ``target`` (smoothed rule).

    The positives' logits ``z = log(p / (1 - p))`` (p clipped to [1e-6, 1 - 1e-6]) are
    taken as normal with unknown mean and variance; the threshold is the ``1 - target``
    quantile of the predictive (Student t) distribution of one more positive,
    ``mean - t_{target, n-1} * sd * sqrt(1 + 1/n)``, mapped back to a probability.
    Unlike the empirical rule it does not sit on the lowest validation positive: with
    few positives it falls below them by an amount that grows with their spread.

    Returns:
        A threshold in (0, 1); NaN with fewer than two positives.
    """
    p = np.clip(probs[y == 1].astype(np.float64), 1e-6, 1 - 1e-6)
    n = len(p)
    if n < 2:
        return float("nan")
    z = np.log(p / (1 - p))
    half = student_t_quantile(target, n - 1) * float(z.std(ddof=1)) * math.sqrt(1 + 1 / n)
    return float(1 / (1 + math.exp(-(float(z.mean()) - half))))


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a proportion ``k / n`` (95 % by default); NaNs when n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def confusion_matrix(true: IntArray, pred: IntArray, k: int) -> IntArray:
    """``k x k`` counts, rows = true class, columns = predicted class (indices in 0..k-1)."""
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (true, pred), 1)
    return m


def reliability_curve(
    y: IntArray, probs: FloatArray, bins: int = 10
) -> list[dict[str, float | int | None]]:
    """Equal-width bins over [0, 1]: per bin its range, count, mean probability and positive rate.

    The last bin is closed (a probability of exactly 1 falls in it). Empty bins
    report ``None`` for the mean probability and the observed positive rate.
    """
    idx = np.clip((probs * bins).astype(np.int64), 0, bins - 1)
    out: list[dict[str, float | int | None]] = []
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        out.append({
            "lo": b / bins, "hi": (b + 1) / bins, "n": n,
            "mean_prob": float(probs[sel].mean()) if n else None,
            "frac_pos": float(y[sel].mean()) if n else None,
        })  # fmt: skip
    return out


def expected_calibration_error(y: IntArray, probs: FloatArray, bins: int = 10) -> float:
    """ECE: ``sum_b (n_b / n) |mean_prob_b - frac_pos_b|`` over equal-width bins; NaN if n = 0."""
    if len(y) == 0:
        return float("nan")
    total = 0.0
    for row in reliability_curve(y, probs, bins):
        n_b = int(row["n"] or 0)
        if n_b:
            total += n_b / len(y) * abs(float(row["mean_prob"] or 0) - float(row["frac_pos"] or 0))
    return total
