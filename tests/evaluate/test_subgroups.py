"""Subgroup tables and parity gaps."""

from __future__ import annotations

import numpy as np
import pytest

from echoscreen.evaluate.subgroups import age_band, parity_gap, sex_group, subgroup_table


def test_age_bands_and_sex_groups() -> None:
    assert [age_band(a) for a in (5, 9.9, 10, 14, 15, 20.5, 21, 3)] == [
        "5-9", "5-9", "10-14", "10-14", "15-20", "15-20", "other", "other"]  # fmt: skip
    assert age_band(float("nan")) == "unknown"
    assert [sex_group(s) for s in ("F", "M", "", "O")] == ["F", "M", "unknown", "unknown"]


def test_subgroup_rates_and_parity_gaps_by_hand() -> None:
    # F: positives 0.9, 0.3 (1 missed at t=0.5 -> FNR 0.5), negatives 0.1, 0.6 (FPR 0.5)
    # M: positives 0.8, 0.7 (FNR 0), negatives 0.2, 0.1 (FPR 0)
    # unknown: one positive missed (FNR 1) - reported, not compared
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0, 1], dtype=np.int64)
    s = np.array([0.9, 0.3, 0.1, 0.6, 0.8, 0.7, 0.2, 0.1, 0.2])
    labels = ["F"] * 4 + ["M"] * 4 + ["unknown"]
    t = subgroup_table(y, s, labels, 0.5)
    f, mm, u = t["groups"]["F"], t["groups"]["M"], t["groups"]["unknown"]
    assert (f["n"], f["n_pos"], f["fnr"], f["fpr"]) == (4, 2, 0.5, 0.5)
    assert (mm["fnr"], mm["fpr"], mm["auroc"]) == (0.0, 0.0, 1.0)
    assert f["auroc"] == pytest.approx(0.75)
    assert u["fnr"] == 1.0 and u["fpr"] is None and u["auroc"] is None
    assert t["parity"]["fnr"] == {"gap": 0.5, "max_group": "F", "min_group": "M",
                                  "groups_compared": ["F", "M"]}  # fmt: skip
    assert t["parity"]["fpr"]["gap"] == 0.5
    assert list(t["groups"]) == ["F", "M", "unknown"]


def test_parity_gap_needs_two_groups() -> None:
    gap = parity_gap({"F": {"fnr": 0.2}, "M": {"fnr": None}}, "fnr")
    assert gap["gap"] is None and "fewer than two" in gap["reason"]
