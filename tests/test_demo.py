"""The demo's stages run end to end on a tiny cohort (what `make demo` runs at full size)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.console import Console

from echoscreen.demo import DemoConfig, run_demo
from echoscreen.registry import MANIFEST
from echoscreen.store.site import Site

STAGES = ("1. phantom cohort", "2. fast cine reading", "3. data site", "4. data server",
          "5a. train", "5b. evaluate", "5c. publish", "5d. screen held-out",
          "6. screening service")  # fmt: skip


def test_demo_runs_every_stage_on_a_tiny_cohort(tmp_path: Path) -> None:
    console = Console(record=True, width=160)
    cfg = DemoConfig(workdir=tmp_path / "work", studies=8, frames=16, cohort_size=(64, 64),
                     split=(0.5, 0.25, 0.25), workers=1, view_epochs=1, rhd_epochs=1,
                     batch_size=8, threads=1, held_out=2)  # fmt: skip
    before = torch.get_num_threads()
    run_demo(cfg, console)
    assert torch.get_num_threads() == before  # training's thread setting is undone
    text = console.export_text()
    for stage in STAGES:
        assert stage in text
    assert "chain verified" in text and "Wall time per stage" in text
    with Site.open(cfg.workdir / "site") as site:
        summary = site.summary()
        assert summary["studies"] == 8 and summary["quarantined"] == 0
        assert site.verify() == []
    clips = sum(1 for _ in (cfg.workdir / "cohort").rglob("*.dcm"))
    assert summary["clips"] == clips
    # every split row reports all its clips equal to the local read
    rows = [line for line in text.splitlines() if line.startswith(("│ train", "│ val", "│ test"))]
    assert len(rows) == 3
    for row in rows:
        cells = [c.strip() for c in row.strip("│").split("│")]
        equal, total = cells[-1].split("/")
        assert equal == total and int(cells[1]) == int(total)
    # stage 5: both runs trained remotely, evaluated, published, and held-out studies screened
    for task in ("view", "rhd"):
        run = cfg.workdir / "runs" / task
        config = json.loads((run / "config.json").read_text())
        assert config["data"].startswith("https://") and config["identity"]
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["task"] == task and metrics["split"] == "test"
        assert (run / "report.html").stat().st_size > 0
        assert str(run / "report.html") in text.replace("\n", "")
    package = cfg.workdir / "registry" / "rhd-demo" / "1"
    assert (package / MANIFEST).is_file() and "published rhd-demo:1" in text
    held_out = sorted(p.parent.relative_to(cfg.workdir / "held-out").as_posix()
                      for p in (cfg.workdir / "held-out").glob("*/*/IM0001.dcm"))  # fmt: skip
    assert len(held_out) == 2
    rows = [[c.strip() for c in line.strip("│").split("│")]
            for line in text.splitlines() if line.startswith("│ P")]  # fmt: skip
    assert len(rows) == 4  # stage 5d's table, then stage 6's
    offline, served = rows[:2], rows[2:]
    for study, cells in zip(held_out, sorted(offline), strict=True):
        assert cells[0] == study
        assert cells[1] in ("normal", "borderline", "definite")
        assert cells[2] in ("normal", "screen-positive", "inconclusive")
    # stage 6: the same studies through the service's API, with the same decisions
    decided = {c[0]: c[2] for c in offline}
    for cells in served:
        assert cells[1] == decided[cells[0]] and cells[4] == "yes"
    assert "2/2 decisions as in stage 5d" in text


def test_demo_refuses_a_workdir_holding_other_files(tmp_path: Path) -> None:
    import pytest

    from echoscreen.demo import claim_workdir
    from echoscreen.errors import ConfigError

    mine = tmp_path / "notes"
    (mine / "cohort").mkdir(parents=True)
    (mine / "cohort" / "my_notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="holds files no demo made"):
        claim_workdir(mine)
    assert (mine / "cohort" / "my_notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="is a file"):
        claim_workdir(mine / "cohort" / "my_notes.txt")
    claim_workdir(tmp_path / "new")  # a new folder, then the demo's own again
    (tmp_path / "new" / "cohort").mkdir()
    claim_workdir(tmp_path / "new")
