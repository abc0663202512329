"""Metric functions against values worked out by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from echoscreen.evaluate import metrics as m
from echoscreen.evaluate.bootstrap import bootstrap_ci, stratified_weights


def _arr(*v: float) -> np.ndarray:
    return np.array(v, dtype=np.float64)


def _lab(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


def test_auroc_counts_ties_as_half() -> None:
    # pairs (pos, neg): 0.8>0.3, 0.8>0.5, 0.5=0.5 (half), 0.5>0.3 -> 3.5 of 4
    y, s = _lab(1, 1, 0, 0), _arr(0.8, 0.5, 0.5, 0.3)
    assert m.auroc(y, s) == pytest.approx(3.5 / 4)
    # all scores tied -> 0.5; perfect -> 1; reversed -> 0
    assert m.auroc(y, _arr(0.4, 0.4, 0.4, 0.4)) == pytest.approx(0.5)
    assert m.auroc(y, _arr(0.9, 0.8, 0.2, 0.1)) == pytest.approx(1.0)
    assert m.auroc(y, _arr(0.1, 0.2, 0.8, 0.9)) == pytest.approx(0.0)


def test_auroc_equals_pairwise_mann_whitney_on_random_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    s = rng.integers(0, 6, 60) / 5.0  # many ties
    pairs = [(a, b) for a, b in itertools.product(s[y == 1], s[y == 0])]
    expected = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs])
    assert m.auroc(y, s) == pytest.approx(expected)


def test_auroc_one_class_is_nan() -> None:
    assert np.isnan(m.auroc(_lab(0, 0, 0), _arr(0.1, 0.5, 0.9)))
    assert not m.has_both_classes(_lab(1, 1))


def test_average_precision_by_hand() -> None:
    # ranked: 0.9 pos (P=1, R=1/2), 0.8 neg, 0.7 pos (P=2/3, R=1), 0.1 neg
    y, s = _lab(1, 0, 1, 0), _arr(0.9, 0.8, 0.7, 0.1)
    assert m.average_precision(y, s) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # a tie between a positive and a negative at the top enters together: P = 1/2 at R = 1
    assert m.average_precision(_lab(1, 0), _arr(0.5, 0.5)) == pytest.approx(0.5)


def test_curves_start_and_end_at_the_corners() -> None:
    y, s = _lab(1, 0, 1, 0), _arr(0.9, 0.8, 0.7, 0.1)
    fpr, tpr, thr = m.roc_curve(y, s)
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1] and tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    assert thr[0] == np.inf
    precision, recall, _ = m.pr_curve(y, s)
    assert precision.tolist() == pytest.approx([1, 0.5, 2 / 3, 0.5])
    assert recall.tolist() == [0.5, 0.5, 1, 1]


def test_operating_point_is_highest_threshold_reaching_the_sensitivity() -> None:
    # positives at 0.9, 0.8, 0.6, 0.4, 0.2: sens >= 0.8 first at threshold 0.4 (4/5)
    y = _lab(1, 1, 1, 1, 1, 0, 0, 0)
    s = _arr(0.9, 0.8, 0.6, 0.4, 0.2, 0.7, 0.3, 0.1)
    assert m.threshold_for_sensitivity(y, s, 0.8) == pytest.approx(0.4)
    assert m.threshold_for_sensitivity(y, s, 0.9) == pytest.approx(0.2)  # 5/5 needed
    r = m.rates_at(y, s, 0.4)
    assert (r.tp, r.fn, r.tn, r.fp) == (4, 1, 2, 1)
    assert r.sensitivity == pytest.approx(0.8) and r.fnr == pytest.approx(0.2)
    assert r.specificity == pytest.approx(2 / 3) and r.fpr == pytest.approx(1 / 3)
    assert np.isnan(m.threshold_for_sensitivity(_lab(0, 0), _arr(0.1, 0.2)))


def test_student_t_quantiles_match_the_table() -> None:
    for q, dof, table in ((0.90, 3, 1.6377), (0.975, 1, 12.7062), (0.95, 10, 1.8125),
                          (0.90, 1e6, 1.2816), (0.10, 5, -1.4759)):  # fmt: skip
        assert m.student_t_quantile(q, dof) == pytest.approx(table, abs=2e-4)


def test_predictive_threshold_keeps_the_target_for_new_positives() -> None:
    """With 5 validation positives the empirical rule (the lowest positive) lets a new positive
    through with probability 5/6 = 0.83 < 0.90; the predictive threshold keeps 0.90."""
    rng = np.random.default_rng(0)
    y = _lab(1, 1, 1, 1, 1, 0, 0)
    hit_pred = hit_emp = 0
    reps = 2000
    for _ in range(reps):
        z = rng.normal(1.5, 2.0, size=7)  # logits; only the positives matter
        s = 1 / (1 + np.exp(-z))
        new = 1 / (1 + np.exp(-rng.normal(1.5, 2.0)))
        hit_pred += new >= m.threshold_predictive(y, s, 0.90)
        hit_emp += new >= m.threshold_for_sensitivity(y, s, 0.90)
    assert abs(hit_pred / reps - 0.90) < 0.025 and abs(hit_emp / reps - 5 / 6) < 0.025
    assert np.isnan(m.threshold_predictive(_lab(1, 0), _arr(0.9, 0.1)))  # one positive
    # identical positives: just below them, never above
    t = m.threshold_predictive(_lab(1, 1, 0), _arr(0.8, 0.8, 0.1))
    assert 0 < t <= 0.8


def test_confusion_matrix_rows_true_columns_predicted() -> None:
    cm = m.confusion_matrix(_lab(0, 0, 1, 2, 2, 2), _lab(0, 1, 1, 2, 0, 2), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_ece_and_reliability_by_hand() -> None:
    # bin [0.2,0.3): probs 0.2, 0.2 -> mean 0.2, frac_pos 0.5; bin [0.8,0.9): 0.8, 0.8 -> 0.8, 1.0
    y, p = _lab(0, 1, 1, 1), _arr(0.2, 0.2, 0.8, 0.8)
    assert m.expected_calibration_error(y, p, 10) == pytest.approx(0.5 * 0.3 + 0.5 * 0.2)
    curve = m.reliability_curve(y, p, 10)
    assert [b["n"] for b in curve] == [0, 0, 2, 0, 0, 0, 0, 0, 2, 0]
    assert curve[8]["frac_pos"] == pytest.approx(1.0) and curve[0]["mean_prob"] is None
    assert m.reliability_curve(_lab(1), _arr(1.0), 10)[9]["n"] == 1  # p = 1 in the last bin
    assert m.expected_calibration_error(_lab(0, 1), _arr(0.0, 1.0)) == pytest.approx(0.0)


def test_wilson_interval_known_value() -> None:
    lo, hi = m.wilson_interval(8, 10)  # textbook: 0.490 - 0.943
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert m.wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_bootstrap_is_stratified_deterministic_and_contains_the_estimate() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.3).astype(np.int64)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    w = stratified_weights(y, 500, seed=1)
    assert w.shape == (500, 200)
    assert np.all(w[:, y == 1].sum(axis=1) == y.sum())  # class sizes kept in every replicate
    ci = bootstrap_ci(m.auroc_weighted, y, s, 500, seed=1)
    assert ci == bootstrap_ci(m.auroc_weighted, y, s, 500, seed=1)
    assert ci != bootstrap_ci(m.auroc_weighted, y, s, 500, seed=2)
    assert ci[0] < m.auroc(y, s) < ci[1] and ci[1] - ci[0] < 0.25
    ap_ci = bootstrap_ci(m.average_precision_weighted, y, s, 500, seed=1)
    assert ap_ci[0] < m.average_precision(y, s) < ap_ci[1]


def test_weighted_auroc_matches_auroc_of_the_resampled_cases() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 40)
    s = rng.integers(0, 8, 40) / 7.0
    w = stratified_weights(y, 3, seed=0)
    for row in range(3):
        idx = np.repeat(np.arange(40), w[row].astype(int))
        assert m.auroc_weighted(y, s, w[row : row + 1])[0] == pytest.approx(m.auroc(y[idx], s[idx]))
        assert m.average_precision_weighted(y, s, w[row : row + 1])[0] == pytest.approx(
            m.average_precision(y[idx], s[idx])
        )


def test_ece_of_a_calibrated_model_is_large_on_few_cases() -> None:
    """The three-class ECE of ~0.2 on 7 test studies is what sampling noise alone gives."""
    from echoscreen.evaluate.summary import ece_if_calibrated

    few = ece_if_calibrated(_arr(0.48, 0.55, 0.55, 0.64, 0.95, 0.95, 0.95), 10)
    assert few is not None and 0.15 < few["mean"] < few["p95"] < 0.6
    many = ece_if_calibrated(np.linspace(0.05, 0.95, 2000), 10)
    assert many is not None and many["p95"] < 0.05  # noise fades with n
    assert ece_if_calibrated(_arr(), 10) is None
    # a draw from the model's own probabilities: its ECE falls in the null's range
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 1, 300)
    y = (rng.uniform(0, 1, 300) < p).astype(np.int64)
    null = ece_if_calibrated(p, 10)
    assert null is not None and m.expected_calibration_error(y, p, 10) < 2 * null["p95"]
