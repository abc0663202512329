"""Make a small split phantom site for the training tests (and bigger ones by hand)."""

from __future__ import annotations

from pathlib import Path


def make_site(root: Path, studies: int, seed: int = 0) -> Path:
    """Generate a phantom cohort, ingest it as dataset ``ph`` and split it 50/25/25."""
    from echoscreen.dicom.preprocess import PreprocessSpec
    from echoscreen.ingest.pipeline import ingest
    from echoscreen.ingest.source import open_source
    from echoscreen.store.catalog import make_split
    from echoscreen.store.site import Site
    from echoscreen.synth import CohortConfig, generate_cohort

    cohort = root / "cohort"
    generate_cohort(cohort, CohortConfig(studies=studies, seed=seed, frames=16, size=(64, 64),
                                         workers=1))  # fmt: skip
    with Site.init(root / "site") as site:
        ingest(open_source(str(cohort)), site, labels=cohort / "labels.csv",
               clips=cohort / "clips.csv", dataset="ph", spec=PreprocessSpec(size=64, frames=16),
               workers=1)  # fmt: skip
        make_split(site.catalog, "ph", 0.5, 0.25, 0.25, seed=0)
    return root / "site"
