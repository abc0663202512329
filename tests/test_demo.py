"""The demo's stages run end to end on a tiny cohort (what `make demo` runs at full size)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from echoscreen.demo import DemoConfig, run_demo
from echoscreen.store.site import Site


def test_demo_runs_every_stage_on_a_tiny_cohort(tmp_path: Path) -> None:
    console = Console(record=True, width=120)
    cfg = DemoConfig(workdir=tmp_path / "work", studies=6, frames=16)
    run_demo(cfg, console)
    text = console.export_text()
    for stage in ("1. phantom cohort", "2. fast cine reading", "3. data site", "4. data server"):
        assert stage in text
    assert "chain verified" in text
    with Site.open(cfg.workdir / "site") as site:
        summary = site.summary()
        assert summary["studies"] == 6 and summary["quarantined"] == 0
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
