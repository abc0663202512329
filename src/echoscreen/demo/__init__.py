"""``echoscreen demo``: the main job end to end on embedded defaults.

Stages (one module per group): 1-4 in :mod:`echoscreen.demo.data` (phantom cohort,
fast read-back, data site, data server over mutual TLS); 5 in
:mod:`echoscreen.demo.models` (train both models through that server, evaluate,
publish, screen held-out studies); 6 in :mod:`echoscreen.demo.service` (the screening
service: held-out studies through its API; with ``serve_port`` it then stays up). The
wall time of every stage is printed at the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from echoscreen.demo import data, models
from echoscreen.demo import service as service_stage
from echoscreen.demo.config import DemoConfig
from echoscreen.errors import ConfigError

__all__ = ["DemoConfig", "claim_workdir", "run_demo"]


class _Clock:
    """Wall time per stage, in the order the stages ran."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, title: str) -> Iterator[None]:
        self.console.rule(title)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[title] = time.perf_counter() - start

    def table(self) -> Table:
        table = Table(title="Wall time per stage")
        table.add_column("stage")
        table.add_column("s", justify="right")
        for title, s in self.seconds.items():
            table.add_row(title, f"{s:.1f}")
        table.add_row("total", f"{sum(self.seconds.values()):.1f}")
        return table


#: marks a folder as the demo's own: its stage folders are replaced on every run
MARKER = ".echoscreen-demo"


def claim_workdir(workdir: Path) -> None:
    """Make ``workdir`` the demo's, refusing a folder that holds anything else.

    The demo replaces its stage folders (``cohort``, ``site``, ``runs``, ``registry``,
    ``held-out``) on every run, so it only works in a new or empty folder, or one an
    earlier demo made (it holds :data:`MARKER`).

    Raises:
        ConfigError: ``workdir`` is a file, or a non-empty folder no demo made.
    """
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"--workdir {workdir} is a file; give a new or empty folder")
    if workdir.is_dir() and any(workdir.iterdir()) and not (workdir / MARKER).exists():
        raise ConfigError(f"--workdir {workdir} holds files no demo made, and the demo replaces "
                          "its folders there; give a new or empty folder")  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).touch()


def run_demo(cfg: DemoConfig, console: Console, serve_port: int | None = None) -> None:
    """Run every demo stage in order, printing what each produced and how long it took.

    Args:
        cfg: the demo's settings.
        console: where tables and progress go.
        serve_port: after the last stage, keep the screening service running on this
            port (in the foreground, until Ctrl-C); None: stop when done.
    """
    claim_workdir(cfg.workdir)
    clock = _Clock(console)
    with clock.stage("1. phantom cohort"):
        cohort = data.make_cohort(cfg, console)
        console.print(f"{cfg.studies} studies written to {cohort}")
    with clock.stage("2. fast cine reading"):
        console.print(data.read_back(cohort, cfg.spec, console))
    with clock.stage("3. data site: de-identify, encrypt, catalog"):
        site = data.build_site(cfg, cohort, console)
        console.print(f"site at {site} (keys in {site / 'keys'}, owner-only)")
    with data.serving(cfg, site, console) as server:
        with clock.stage("4. data server: mutual TLS, grants, audit"):
            console.print(data.read_remote(cfg, site, server))
        if cfg.train:
            with clock.stage("5a. train view + rhd models through the data server"):
                runs = models.train_models(cfg, server, console)
    console.print(data.audit_summary(site))
    if cfg.train:
        _evaluate_publish_screen(cfg, runs, clock)
    console.print(clock.table())
    if cfg.train and serve_port is not None:
        service_stage.serve_forever(cfg, ":".join(models.PACKAGE), serve_port, console)


def _evaluate_publish_screen(cfg: DemoConfig, runs: models.Runs, clock: _Clock) -> None:
    """Stage 5b-d: metrics on the test split, the published package, held-out screening."""
    console = clock.console
    with clock.stage("5b. evaluate (test split)"):
        table, _ = models.evaluate_models(runs)
        console.print(table)
        for run in (runs.view, runs.rhd):
            console.print(f"report: {run / 'report.html'} (metrics: {run / 'metrics.json'})")
    with clock.stage("5c. publish"):
        package = models.publish_package(cfg, runs)
        console.print(f"published {':'.join(models.PACKAGE)} at {package}")
    with clock.stage("5d. screen held-out studies"):
        table, summary = models.screen_held_out(cfg, package, console)
        console.print(table)
        console.print(models.held_out_line(summary))
    with clock.stage("6. screening service: held-out studies through its API"):
        console.print(service_stage.screen_through_api(cfg, ":".join(models.PACKAGE),
                                                       summary["decisions"], console))
