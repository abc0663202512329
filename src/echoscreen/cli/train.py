"""``echoscreen train view|rhd``: train the view classifier or the RHD screening model.

The same command runs one process or one rank of
``torchrun --nproc-per-node N -m echoscreen train ...``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from echoscreen.cli.common import out

train_app = typer.Typer(
    help="Train a model on a site's dataset (local folder or remote data server).",
    no_args_is_help=True,
)

_RUN = typer.Option(
    ..., "--run", "--run-dir",
    help="Run folder (config, metrics, checkpoints, predictions). Under torchrun write "
    "--run-dir: torchrun's own parser takes --run for an abbreviation of its --run-path.",
)
_DATA = typer.Option(None, "--data", help="Site folder, or https:// URL of a data server.")
_IDENTITY = typer.Option(None, "--identity", help="Client identity folder (remote --data).")
_DATASET = typer.Option(None, "--dataset", help="Dataset name (see `site ls`).")
_EPOCHS = typer.Option(None, "--epochs", help="Passes over the training split (default 5).")
_BATCH = typer.Option(
    None, "--batch-size", help="Clips (view) or studies (rhd) per step, per process (default 8)."
)
_LR = typer.Option(None, "--lr", help="Peak learning rate of AdamW (default 1e-3).")
_FRAMES = typer.Option(None, "--frames", help="Frames fed to the model (default 16).")
_SIZE = typer.Option(None, "--size", help="Image side in pixels fed to the model (default 64).")
_SEED = typer.Option(None, "--seed", min=0,
                     help="Seed of weights, order and augmentation (>= 0; default 0).")
_MODEL = typer.Option(None, "--model-size", help="small (CPU) or large (GPU) (default small).")
_DROPOUT = typer.Option(None, "--dropout", help="Dropout before the heads (default 0.1).")
_MAXCLIPS = typer.Option(None, "--max-clips", help="Most clips read per study (rhd) (default 8).")
_RESUME = typer.Option(False, "--resume", help="Continue RUN from its last checkpoint.")
_QUIET = typer.Option(False, "--no-progress", help="No progress bars.")
_CLUSTER = typer.Option(
    None,
    "--cluster",
    help="Train as DDP ranks on the engines of this ipyparallel cluster profile "
    "(see `echoscreen cluster start`, docs/cluster.md).",
)


def _train(task: str, run: Path, resume: bool, quiet: bool, given: dict[str, Any],
           cluster: str | None = None) -> None:  # fmt: skip
    from echoscreen.errors import ConfigError
    from echoscreen.train.config import TrainConfig  # light: bad options fail before torch loads

    given = {k: v for k, v in given.items() if v is not None}
    if resume:
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ConfigError(f"--resume continues the settings saved in {run}; drop {flags}")
        cfg = TrainConfig.resumed(run)
        if cfg.task != task:
            raise ConfigError(f"{run} is a {cfg.task!r} run; resume it with `train {cfg.task}`")
    else:
        if "data" not in given or "dataset" not in given:
            raise ConfigError("give --data SITE_OR_URL and --dataset NAME (or --resume a run)")
        cfg = TrainConfig(task=task, run=run, **given)
    cfg.check_data()
    if cluster is not None:  # --cluster "" is refused by run_on_cluster, not ignored
        from echoscreen.train.cluster import run_on_cluster

        result = run_on_cluster(cfg, cluster)
    else:
        from echoscreen.train import fit

        result = fit(cfg, progress=not quiet)
    if "best_score" in result:  # rank 0
        out.print(json.dumps(result, indent=2, default=str), highlight=False)


def _command(task: str) -> Any:
    def command(
        run: Path = _RUN, data: str = _DATA, identity: Path = _IDENTITY, dataset: str = _DATASET,
        epochs: int = _EPOCHS, batch_size: int = _BATCH, lr: float = _LR, frames: int = _FRAMES,
        size: int = _SIZE, seed: int = _SEED, model_size: str = _MODEL, max_clips: int = _MAXCLIPS,
        dropout: float = _DROPOUT,
        resume: bool = _RESUME, no_progress: bool = _QUIET, cluster: str = _CLUSTER,
    ) -> None:  # fmt: skip
        given = {"data": data, "identity": identity, "dataset": dataset, "epochs": epochs,
                 "batch_size": batch_size, "lr": lr, "frames": frames, "size": size, "seed": seed,
                 "model_size": model_size, "max_clips": max_clips, "dropout": dropout}  # fmt: skip
        _train(task, run, resume, no_progress, given, cluster)

    command.__doc__ = {
        "view": "Train the view classifier (7 views + colour Doppler) on clips.",
        "rhd": "Train the RHD screening model on studies (RHD-view clips, attention pooling).",
    }[task]
    return command


train_app.command("view")(_command("view"))
train_app.command("rhd")(_command("rhd"))
