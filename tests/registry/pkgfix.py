"""One tiny published package shared by the registry and screen tests.

A 8-study phantom site (3x16x64x64 clips), a view run (12 epochs at 8 frames x 32 px:
it memorises the training clips, so the views of training studies are right) and an
rhd run (1 epoch at 16 x 64), published as ``tiny:1``. Built once per test session: the
folder lives in the session's base temp dir and is reused by whichever test asks second.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Published:
    """Paths of the shared package and where it came from."""

    root: Path
    cohort: Path
    site: Path
    view_run: Path
    rhd_run: Path
    registry: Path
    ref: str = "tiny:1"

    def clips(self) -> list[dict[str, str]]:
        """Rows of the cohort's clips.csv (path, view, doppler, study uid, ...)."""
        with open(self.cohort / "clips.csv", newline="") as f:
            return list(csv.DictReader(f))

    def train_study_folders(self) -> list[Path]:
        """Cohort folders of the studies in the site's ``train`` split."""
        from echoscreen.data import LocalSite
        from echoscreen.deid import Deidentifier
        from echoscreen.store.site import Site

        with Site.open(self.site) as site:
            deid = Deidentifier(site.pseudonym_secret)
        train = {c.id for c in LocalSite(self.site).clips("ph", "train")}
        folders = {str(Path(r["path"]).parent) for r in self.clips()
                   if deid.pseudonym_uid(r["sop_instance_uid"]) in train}  # fmt: skip
        return [self.cohort / f for f in sorted(folders)]


def build(root: Path) -> Published:
    """Make (or reuse) the site, both runs and the package under ``root``."""
    import torch
    from tests.train.sitefix import make_site

    from echoscreen.registry import PublishConfig, publish
    from echoscreen.train import TrainConfig, fit

    pub = Published(root=root, cohort=root / "cohort", site=root / "site", view_run=root / "view",
                    rhd_run=root / "rhd", registry=root / "registry")
    if (root / "done").exists():
        return pub
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        make_site(root, 8)
        common = {"data": str(pub.site), "dataset": "ph", "seed": 0, "dropout": 0.0}
        # no zoom/shift: this model is meant to memorise its training clips
        fit(TrainConfig(task="view", run=pub.view_run, epochs=12, lr=3e-3, batch_size=8,
                        geometric=False, frames=8, size=32, **common), progress=False)  # type: ignore[arg-type]
        fit(TrainConfig(task="rhd", run=pub.rhd_run, epochs=1, batch_size=4, frames=16,
                        size=64, max_clips=4, **common), progress=False)  # type: ignore[arg-type]
        publish(PublishConfig(rhd_run=pub.rhd_run, view_run=pub.view_run,
                              registry=pub.registry, name="tiny", version="1",
                              min_view_confidence=0.0))  # fmt: skip
    finally:
        torch.set_num_threads(before)
    (root / "done").touch()
    return pub


@pytest.fixture(scope="session")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    """The shared package (built on first use in the session)."""
    root = tmp_path_factory.getbasetemp() / "registry-package"
    root.mkdir(exist_ok=True)
    return build(root)
