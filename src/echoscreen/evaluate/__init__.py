"""Evaluation of trained runs: metrics, bootstrap CIs, calibration, subgroup parity, reports.

Pure functions over the prediction files ``echoscreen.train`` writes; no torch needed.
"""

from __future__ import annotations

from echoscreen.evaluate.metrics import (
    auroc,
    average_precision,
    confusion_matrix,
    expected_calibration_error,
    pr_curve,
    rates_at,
    reliability_curve,
    roc_curve,
    threshold_for_sensitivity,
    wilson_interval,
)
from echoscreen.evaluate.run import evaluate_run
from echoscreen.evaluate.summary import EvalConfig

__all__ = [
    "EvalConfig",
    "auroc",
    "average_precision",
    "confusion_matrix",
    "evaluate_run",
    "expected_calibration_error",
    "pr_curve",
    "rates_at",
    "reliability_curve",
    "roc_curve",
    "threshold_for_sensitivity",
    "wilson_interval",
]
