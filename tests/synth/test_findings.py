"""WHF 2012 rules on crafted findings, findings sampled per label, prevalence parsing."""

from __future__ import annotations

import numpy as np
import pytest

from echoscreen.errors import ConfigError
from echoscreen.synth import CohortConfig, parse_prevalence, whf_criterion, whf_label
from echoscreen.synth.cohort import assign_labels
from echoscreen.synth.findings import Jet, StudyFindings, sample_findings

MR_PATH = Jet((("plax", 2.4), ("a4c", 1.9)), full_phase=True)
AR_PATH = Jet((("plax", 1.2), ("a5c", 0.8)), full_phase=True)
MV2 = frozenset({"almv_thickening", "chordal_thickening"})
AV2 = frozenset({"av_thickening", "av_coaptation_defect"})


@pytest.mark.parametrize(
    ("findings", "expected"),
    [
        (StudyFindings(), "normal"),
        (StudyFindings(mr=MR_PATH, mv_features=MV2), "definite-A"),
        (StudyFindings(ar=AR_PATH, av_features=AV2), "definite-C"),
        (StudyFindings(mr=MR_PATH, ar=AR_PATH), "definite-D"),
        (StudyFindings(ar=AR_PATH, mv_features=MV2), "definite-D"),
        (StudyFindings(mv_features=MV2), "borderline-A"),
        (StudyFindings(mr=MR_PATH, mv_features=frozenset({"restricted_mv"})), "borderline-B"),
        (StudyFindings(ar=AR_PATH, av_features=frozenset({"av_prolapse"})), "borderline-C"),
        # physiological confounders stay normal
        (StudyFindings(mr=Jet((("plax", 1.9), ("a4c", 1.8)), True)), "normal"),  # too short
        (StudyFindings(mr=Jet((("plax", 3.0),), True)), "normal"),  # one view only
        (StudyFindings(mr=Jet((("plax", 2.6), ("a4c", 2.2)), False, 0.4)), "normal"),  # early
        (StudyFindings(ar=Jet((("plax", 0.9), ("a5c", 0.8)), True)), "normal"),
        (StudyFindings(ar=Jet((("a5c", 1.4),), True)), "normal"),
        (StudyFindings(mv_features=frozenset({"almv_thickening"})), "normal"),
        (StudyFindings(av_features=AV2), "normal"),  # aortic features alone are not RHD
    ],
)
def test_whf_rules(findings: StudyFindings, expected: str) -> None:
    assert whf_criterion(findings) == expected
    assert whf_label(findings) == expected.split("-")[0]


def test_jet_thresholds_are_inclusive() -> None:
    mr = Jet((("plax", 2.0), ("a4c", 1.0)), True)
    ar = Jet((("plax", 1.0), ("a5c", 0.3)), True)
    assert whf_criterion(StudyFindings(mr=mr)) == "borderline-B"
    assert whf_criterion(StudyFindings(ar=ar)) == "borderline-C"


@pytest.mark.parametrize("label", ["normal", "borderline", "definite"])
def test_sampled_findings_have_their_label(label: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        f = sample_findings(label, rng, ("plax", "a4c"), ("plax", "a5c"))
        assert whf_label(f) == label
        for jet in (f.mr, f.ar):
            if jet is not None:
                assert {v for v, _ in jet.lengths} <= {"plax", "a4c", "a5c"}


def test_normal_studies_include_physiological_jets() -> None:
    rng = np.random.default_rng(3)
    normals = [sample_findings("normal", rng, ("plax", "a4c"), ("plax", "a5c")) for _ in range(200)]
    with_mr = [f.mr for f in normals if f.mr is not None]
    assert len(with_mr) > 60
    assert any(j.max_cm >= 2.0 for j in with_mr)  # long but single-view or not pan-systolic
    assert any(j.n_views >= 2 for j in with_mr)


def test_parse_prevalence() -> None:
    assert parse_prevalence("normal=.6, borderline=.2,definite=.2") == {
        "normal": 0.6,
        "borderline": 0.2,
        "definite": 0.2,
    }
    assert parse_prevalence("normal=1") == {"normal": 1.0, "borderline": 0.0, "definite": 0.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("normal=.5,borderline=.2", "sum to 1"),
        ("normal=.5,sick=.5", "unknown label"),
        ("normal", "LABEL=FRACTION"),
        ("normal=abc", "not a number"),
        ("normal=.5,normal=.5", "twice"),
        ("normal=1.5,definite=-.5", ">= 0"),
        ("", "empty"),
    ],
)
def test_parse_prevalence_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_prevalence(text)


def test_assign_labels_follows_prevalence_and_seed() -> None:
    cfg = CohortConfig(
        studies=10, seed=1, prevalence={"normal": 0.6, "borderline": 0.2, "definite": 0.2}
    )
    labels = assign_labels(cfg)
    assert sorted(labels) == sorted(["normal"] * 6 + ["borderline"] * 2 + ["definite"] * 2)
    assert labels == assign_labels(cfg)
    assert labels != assign_labels(CohortConfig(studies=10, seed=2, prevalence=cfg.prevalence))
