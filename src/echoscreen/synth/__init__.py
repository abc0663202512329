"""The echo phantom: WHF screening-protocol views of a beating child's heart, with RHD findings.

``generate_cohort`` writes real DICOM cine loops (US Multi-frame Image Storage) of
phantom studies plus ``labels.csv`` and ``clips.csv`` ground truth; nothing of the
ground truth goes into DICOM headers or pixels. Only tests, benchmarks and the
demo import this package.
"""

from echoscreen.synth.cohort import (
    DEFAULT_PREVALENCE,
    LABELS,
    VIEWS,
    CohortConfig,
    CohortSummary,
    generate_cohort,
    parse_prevalence,
)
from echoscreen.synth.findings import StudyFindings, whf_criterion, whf_label

__all__ = [
    "DEFAULT_PREVALENCE",
    "LABELS",
    "VIEWS",
    "CohortConfig",
    "CohortSummary",
    "StudyFindings",
    "generate_cohort",
    "parse_prevalence",
    "whf_criterion",
    "whf_label",
]
