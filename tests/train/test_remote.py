"""Training from a data server over mTLS computes exactly what training at the site computes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from echoscreen.datasite import access, pki
from echoscreen.datasite.limits import Limits
from echoscreen.datasite.server import ServerConfig, running
from echoscreen.store.site import Site
from echoscreen.train import TrainConfig, fit
from echoscreen.train.checkpoint import load


def test_remote_equals_local(tiny_cfg: TrainConfig, tiny_site: Path, tmp_path: Path) -> None:
    with Site.open(tiny_site) as site:
        if not (tiny_site / "pki").exists():
            pki.init_pki(site.path)
        identity = pki.issue(site, "trainer", tmp_path / "id").folder
        access.grant(site, "trainer", "ph")
    cfg = replace(tiny_cfg, task="rhd", batch_size=2)
    fit(cfg, progress=False)
    limits = Limits(max_batch=8, rate=10_000, burst=10_000, max_body=4096)
    with running(ServerConfig(tiny_site, port=0, limits=limits)) as url:
        remote = replace(cfg, data=url, identity=identity, run=tmp_path / "remote")
        fit(remote, progress=False)
    a, b = load(cfg.run / "checkpoint.pt")["model"], load(remote.run / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    for split in ("val", "test"):
        local = json.loads((cfg.run / f"predictions_{split}.json").read_text())
        assert local == json.loads((remote.run / f"predictions_{split}.json").read_text())
