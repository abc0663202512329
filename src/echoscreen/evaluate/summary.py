"""The metrics of one split, as a JSON-ready dict, for each task.

Every estimate is ``{"value": float | None, "ci": [lo, hi] | None, "reason": str | None}``:
a metric that cannot be computed on this split (e.g. AUROC when every study is
normal) has ``value`` None and a ``reason``, never a crash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from echoscreen.evaluate import metrics as m
from echoscreen.evaluate.bootstrap import bootstrap_ci, bootstrap_difference_ci
from echoscreen.evaluate.predictions import RhdPredictions, ViewPredictions
from echoscreen.evaluate.subgroups import age_band, sex_group, subgroup_table
from echoscreen.vocab import LABELS, VIEWS

ONE_CLASS = "the split has only one class (needs screen-positive and normal studies)"


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate: bootstrap size and seed, operating-point target, calibration bins."""

    n_boot: int = 1000
    seed: int = 0
    target_sensitivity: float = 0.90
    bins: int = 10


def estimate(
    value: float | None, ci: tuple[float, float] | None = None, reason: str | None = None
) -> dict[str, Any]:
    """A JSON-ready estimate; NaN values become None (with ``reason``)."""
    if value is None or not math.isfinite(value):
        return {"value": None, "ci": None, "reason": reason or "not computable"}
    good_ci = ci is not None and all(math.isfinite(c) for c in ci)
    return {"value": float(value), "ci": [float(c) for c in ci] if ci and good_ci else None,
            "reason": None}  # fmt: skip


def ranking(y: m.IntArray, scores: m.FloatArray, cfg: EvalConfig) -> dict[str, Any]:
    """AUROC and average precision with stratified bootstrap CIs (None + reason if one class)."""
    if not m.has_both_classes(y):
        return {"auroc": estimate(None, reason=ONE_CLASS),
                "average_precision": estimate(None, reason=ONE_CLASS)}  # fmt: skip
    return {
        "auroc": estimate(m.auroc(y, scores),
                          bootstrap_ci(m.auroc_weighted, y, scores, cfg.n_boot, cfg.seed)),
        "average_precision": estimate(
            m.average_precision(y, scores),
            bootstrap_ci(m.average_precision_weighted, y, scores, cfg.n_boot, cfg.seed)),
    }  # fmt: skip


def proportion(k: int, n: int, reason: str) -> dict[str, Any]:
    """``k / n`` with its Wilson 95 % interval, or None + reason when n = 0."""
    if n == 0:
        return estimate(None, reason=reason)
    return {**estimate(k / n, m.wilson_interval(k, n)), "k": k, "n": n}


def operating_point(val: RhdPredictions, cfg: EvalConfig) -> dict[str, Any]:
    """Threshold chosen on validation for a sensitivity of at least the target.

    The lower of two thresholds: the empirical one (the highest with validation
    sensitivity >= the target, which with a few positives is the lowest of them) and the
    predictive one (:func:`~echoscreen.evaluate.metrics.threshold_predictive`: a new
    positive exceeds it with probability >= the target under a normal model of the
    positives' logits). The lower keeps the validation sensitivity at or above the
    target and does not bet the unseen positives on the lowest validation positive.
    """
    known = val.label_index >= 0
    y, s = (val.label_index[known] > 0).astype(np.int64), val.p_screen[known]
    rule = (f"lower of the highest threshold with validation sensitivity >= "
            f"{cfg.target_sensitivity:.2f} and the predictive {1 - cfg.target_sensitivity:.2f} "
            "quantile of a new positive (Student t on the positives' logits)")  # fmt: skip
    out: dict[str, Any] = {"source": "validation", "rule": rule, "n_val": int(known.sum()),
                           "n_val_positive": int(y.sum()),
                           "target_sensitivity": cfg.target_sensitivity}  # fmt: skip
    empirical = m.threshold_for_sensitivity(y, s, cfg.target_sensitivity)
    if not math.isfinite(empirical):
        return {**out, "threshold": None,
                "reason": "the validation split has no screen-positive studies"}  # fmt: skip
    predictive = m.threshold_predictive(y, s, cfg.target_sensitivity)
    t = min(empirical, predictive) if math.isfinite(predictive) else empirical
    r = m.rates_at(y, s, t)
    spec = r.specificity
    return {**out, "threshold": t, "threshold_empirical": empirical,
            "threshold_predictive": predictive if math.isfinite(predictive) else None,
            "val_sensitivity": r.sensitivity,
            "val_specificity": spec if math.isfinite(spec) else None}  # fmt: skip


def aggregation(y: m.IntArray, pred: RhdPredictions, cfg: EvalConfig) -> dict[str, Any]:
    """AUROC (with CI) of attention pooling and of each clip baseline, and paired differences."""
    scores = {"attention": pred.p_screen, **pred.baselines}
    out: dict[str, Any] = {}
    for name, s in scores.items():
        entry = ranking(y, s, cfg)
        if name != "attention" and m.has_both_classes(y):
            diff = m.auroc(y, pred.p_screen) - m.auroc(y, s)
            ci = bootstrap_difference_ci(m.auroc_weighted, y, pred.p_screen, s,
                                         cfg.n_boot, cfg.seed)  # fmt: skip
            entry["auroc_attention_minus_this"] = estimate(diff, ci)
        out[name] = entry
    return out


def ece_if_calibrated(probs: m.FloatArray, bins: int, n_draw: int = 500,
                      seed: int = 0) -> dict[str, float] | None:  # fmt: skip
    """The ECE a perfectly calibrated model with these probabilities would show.

    Outcomes are drawn as Bernoulli(p) for every case ``n_draw`` times; the ECE of each
    draw is pure sampling noise (large on a few cases: one case alone in a bin adds
    ``|p - outcome| / n``). Returns the mean and the 95th percentile, None without cases.
    """
    if len(probs) == 0:
        return None
    rng = np.random.default_rng(seed)
    draws = rng.random((n_draw, len(probs))) < probs
    eces = [m.expected_calibration_error(d.astype(np.int64), probs, bins) for d in draws]
    return {"mean": float(np.mean(eces)), "p95": float(np.quantile(eces, 0.95))}


def calibration(y: m.IntArray, probs: m.FloatArray, bins: int, seed: int = 0) -> dict[str, Any]:
    """ECE, the ECE expected of a calibrated model on these cases, the reliability curve."""
    return {"ece": estimate(m.expected_calibration_error(y, probs, bins), reason="no studies"),
            "ece_if_calibrated": ece_if_calibrated(probs, bins, seed=seed),
            "bins": bins, "curve": m.reliability_curve(y, probs, bins)}  # fmt: skip


def rhd_metrics(val: RhdPredictions, test: RhdPredictions, cfg: EvalConfig) -> dict[str, Any]:
    """All screening metrics of ``test`` at the operating point chosen on ``val``."""
    known = test.label_index >= 0
    lab = test.label_index[known]
    y, s = (lab > 0).astype(np.int64), test.p_screen[known]
    op = operating_point(val, cfg)
    t = op["threshold"]
    out: dict[str, Any] = {
        "n_studies": int(known.sum()), "n_unlabelled_excluded": int((~known).sum()),
        "n_positive": int(y.sum()), "n_negative": int((y == 0).sum()),
        "prevalence": float(y.mean()) if len(y) else None,
        **ranking(y, s, cfg), "operating_point": op,
    }  # fmt: skip
    if t is None:
        why = f"no operating point ({op['reason']})"
        out["sensitivity"] = out["specificity"] = estimate(None, reason=why)
        out["confusion_screen"] = None
    else:
        r = m.rates_at(y, s, t)
        out["sensitivity"] = proportion(r.tp, r.tp + r.fn, "the split has no positive studies")
        out["specificity"] = proportion(r.tn, r.tn + r.fp, "the split has no normal studies")
        out["confusion_screen"] = {"labels": ["normal", "screen-positive"],
                                   "matrix": [[r.tn, r.fp], [r.fn, r.tp]]}  # fmt: skip
    pred3 = np.argmax(test.p3[known], axis=1)
    out["confusion_3class"] = {"labels": list(LABELS),
                               "matrix": m.confusion_matrix(lab, pred3, 3).tolist()}  # fmt: skip
    out["accuracy_3class"] = proportion(int(np.sum(pred3 == lab)), len(lab), "no studies")
    out["calibration"] = calibration(y, s, cfg.bins, cfg.seed)
    top3 = test.p3[known].max(axis=1) if len(lab) else np.zeros(0)
    out["calibration_3class"] = calibration((pred3 == lab).astype(np.int64), top3, cfg.bins,
                                            cfg.seed)  # fmt: skip
    sexes = [sex_group(x) for x, k in zip(test.sex, known, strict=True) if k]
    ages = [age_band(a) for a in test.age_years[known]]
    out["subgroups"] = {"sex": subgroup_table(y, s, sexes, t),
                        "age_band": subgroup_table(y, s, ages, t)}  # fmt: skip
    test_known = RhdPredictions(test.studies, lab, s, test.p3[known], sexes, test.age_years[known],
                                {k: v[known] for k, v in test.baselines.items()})  # fmt: skip
    out["aggregation"] = aggregation(y, test_known, cfg)
    return out


def view_metrics(test: ViewPredictions, cfg: EvalConfig) -> dict[str, Any]:
    """View accuracy and 7x7 confusion, Doppler accuracy/AUROC and 2x2 confusion, calibration."""
    kv = test.view >= 0
    true, pred = test.view[kv], test.view_pred[kv]
    correct = (true == pred).astype(np.int64)
    conf = test.p_view[kv].max(axis=1) if kv.any() else np.zeros(0)
    per_view = {v: proportion(int(np.sum(correct[true == i])), int(np.sum(true == i)),
                              "no clips of this view") for i, v in enumerate(VIEWS)}  # fmt: skip
    kd = test.doppler >= 0
    yd, sd = test.doppler[kd], test.p_doppler[kd]
    pd = (sd >= 0.5).astype(np.int64)
    return {
        "n_clips": len(test.view), "n_view_known": int(kv.sum()), "n_doppler_known": int(kd.sum()),
        "view_accuracy": proportion(int(correct.sum()), len(correct), "no clips with a known view"),
        "view_recall": per_view,
        "confusion_view": {"labels": list(VIEWS),
                           "matrix": m.confusion_matrix(true, pred, len(VIEWS)).tolist()},
        "view_calibration": calibration(correct, conf, cfg.bins, cfg.seed),
        "doppler_accuracy": proportion(int(np.sum(pd == yd)), len(yd), "no clips with known mode"),
        "doppler": ranking(yd, sd, cfg),
        "confusion_doppler": {"labels": ["b-mode", "doppler"], "threshold": 0.5,
                              "matrix": m.confusion_matrix(yd, pd, 2).tolist()},
    }  # fmt: skip
