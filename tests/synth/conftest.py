"""A tiny phantom cohort (16 frames x 64 x 64), made once per test session."""

from __future__ import annotations

import pytest

from echoscreen.synth import CohortConfig, CohortSummary, generate_cohort


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> CohortSummary:
    """Three studies, native RGB (lossless, so pixels can be checked exactly), with masks."""
    out = tmp_path_factory.mktemp("synth") / "cohort"
    cfg = CohortConfig(
        studies=3,
        seed=11,
        frames=16,
        size=(64, 64),
        workers=1,
        transfer_syntax="explicit-le",
        masks=True,
    )
    return generate_cohort(out, cfg)
