"""Phantom cohort -> ingest pipeline -> split -> data server over mTLS -> ClipDataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from echoscreen.data import ClipDataset, LocalSite, RemoteSite
from echoscreen.datasite import access, pki
from echoscreen.datasite.audit import AuditLog
from echoscreen.datasite.server import ServerConfig, running
from echoscreen.dicom import PreprocessSpec
from echoscreen.ingest import FolderSource
from echoscreen.ingest.pipeline import ingest
from echoscreen.store.catalog import make_split
from echoscreen.store.site import Site


def test_ingested_cohort_trains_through_the_data_server(tmp_path: Path) -> None:
    from echoscreen.synth import CohortConfig, generate_cohort

    cohort = tmp_path / "cohort"
    made = generate_cohort(cohort, CohortConfig(studies=4, frames=16, size=(64, 64), workers=1))
    with Site.init(tmp_path / "site") as site:
        ingest(FolderSource(cohort), site, labels=cohort / "labels.csv",
               clips=cohort / "clips.csv", dataset="phantom",
               spec=PreprocessSpec(size=64, frames=16))  # fmt: skip
        make_split(site.catalog, "phantom", 0.5, 0.25, 0.25, 0)
        pki.init_pki(site.path)
        ident = pki.issue(site, "gpu-team", tmp_path / "id")
        access.grant(site, "gpu-team", "phantom")
        with running(ServerConfig(site.path, port=0)) as url:
            remote = RemoteSite(url, ident.folder)
            listed = remote.datasets()
            assert [d["name"] for d in listed] == ["phantom"]
            assert sum(n["clips"] for n in listed[0]["splits"].values()) == made.clips
            splits = [k for k, n in listed[0]["splits"].items() if n["clips"]]
            assert "train" in splits
            for split in splits:
                with ClipDataset(RemoteSite(url, ident.folder), "phantom", split) as r, \
                        ClipDataset(LocalSite(site.path), "phantom", split) as loc:  # fmt: skip
                    assert len(r) == len(loc) > 0
                    for (xr, mr), (xl, ml) in zip(r.__getitems__(range(len(r))),
                                                  loc.__getitems__(range(len(loc))),
                                                  strict=True):  # fmt: skip
                        assert mr == ml and mr["view"] and mr["label"]
                        assert xr.shape == (3, 16, 64, 64) and torch.equal(xr, xl)
                        assert np.asarray(xr).std() > 0  # real pixels, not blank
            remote.close()
        assert AuditLog(site).verify() == []
