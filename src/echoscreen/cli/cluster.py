"""``echoscreen cluster start|stop`` and ``echoscreen sweep view|rhd``: ipyparallel clusters.

A cluster started here keeps running after the command returns; ``train ... --cluster
PROFILE`` runs DDP ranks on its engines and ``sweep`` spreads a grid of runs over them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from echoscreen.cli.common import console, out

cluster_app = typer.Typer(
    help="Start or stop an ipyparallel cluster on this host (for train --cluster and sweep).",
    no_args_is_help=True,
)

_PROFILE = typer.Option(
    "default", "--profile",
    help="Profile name (folder $IPYTHONDIR/profile_NAME) or a profile folder path.",
)  # fmt: skip


@cluster_app.command("start")
def start_command(
    engines: int = typer.Option(..., "--engines", "-n", max=256,
                                help="Engines (processes) to start (at most 256)."),
    profile: str = _PROFILE,
) -> None:
    """Start a controller and N engines on loopback, left running in the background."""
    from echoscreen.train.cluster import profile_dir, start_cluster

    with console.status(f"starting {engines} engines"):
        n = start_cluster(engines, profile)
    where = profile_dir(profile)
    out.print(f"cluster {profile!r} running with {n} engines ({where})", soft_wrap=True)


@cluster_app.command("stop")
def stop_command(profile: str = _PROFILE) -> None:
    """Stop the controller and engines of a profile."""
    from echoscreen.train.cluster import stop_cluster

    stop_cluster(profile)
    out.print(f"cluster {profile!r} stopped", soft_wrap=True)


def _fmt(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.4f}"


def sweep_command(
    task: str = typer.Argument(..., help="view or rhd."),
    grid: str = typer.Option(..., "--grid", help="Settings to vary: lr=1e-3,3e-4,frames=8,16."),
    runs: Path = typer.Option(..., "--runs", help="Folder for one run folder per grid point."),
    data: str = typer.Option(..., "--data", help="Site folder, or https:// URL of a data server."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset name (see `site ls`)."),
    identity: Path = typer.Option(None, "--identity", help="Identity folder (remote --data)."),
    epochs: int = typer.Option(None, "--epochs", help="Epochs of every run (default 5)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Batch size (default 8)."),
    seed: int = typer.Option(None, "--seed", min=0, help="Seed (>= 0) of every run (default 0)."),
    cluster: str = typer.Option(
        None, "--cluster", help="Cluster profile to run on; without it the runs go one by one here."
    ),
    engines: int = typer.Option(None, "--engines", help="Engines to use (default: all)."),
) -> None:
    """Train one run per grid point (spread over a cluster's engines) and rank them."""
    from echoscreen.train import TrainConfig
    from echoscreen.train.config import check_folder
    from echoscreen.train.sweep import SCORE, expand_grid, parse_grid, run_sweep

    given: dict[str, Any] = {"identity": identity, "epochs": epochs, "batch_size": batch_size,
                             "seed": seed}  # fmt: skip
    given = {k: v for k, v in given.items() if v is not None}
    base = TrainConfig(task=task, data=data, dataset=dataset, run=runs, **given)
    check_folder(runs, "--runs")  # before check_data, which would name it --run
    base.check_data()
    parsed = parse_grid(grid)
    total = len(expand_grid(parsed))
    where = f"cluster {cluster!r}" if cluster else "this process (no --cluster)"
    with console.status(f"sweep: {total} runs on {where}") as status:
        done = [0]

        def on_done(e: Any) -> None:
            done[0] += 1
            status.update(f"sweep: {done[0]}/{total} runs done on {where}")

        entries = run_sweep(base, parsed, runs, profile=cluster, engines=engines, on_done=on_done)
    _table(entries, SCORE[task], runs)
    if any(e.error for e in entries):
        raise typer.Exit(1)


def _table(entries: list[Any], metric: str, runs: Path) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"sweep ranked by validation {metric}")
    table.add_column("#", justify="right")
    for key in entries[0].params:
        table.add_column(key, justify="right")
    table.add_column(f"val {metric}", justify="right")
    table.add_column(f"test {metric}", justify="right")
    table.add_column("run")
    for i, e in enumerate(entries, 1):
        # errors and names are shown as they are, not read as markup ('[Errno 2]', '[b]')
        tail = [f"[red]failed: {escape(e.error)}[/]", "", escape(e.run.name)] if e.error else \
            [_fmt(e.val), _fmt(e.test), escape(e.run.name)]  # fmt: skip
        table.add_row(str(i), *(escape(str(v)) for v in e.params.values()), *tail)
    out.print(table)
    out.print(f"wrote {Path(runs) / 'sweep.json'}", soft_wrap=True)
