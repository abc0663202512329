"""``echoscreen publish RHD_RUN --view-run VIEW_RUN --registry DIR --name NAME --version V``."""

from __future__ import annotations

from pathlib import Path

import typer

from echoscreen.cli.common import console, out


def publish_command(
    run: Path = typer.Argument(..., help="The rhd run folder (echoscreen train rhd)."),
    view_run: Path = typer.Option(..., "--view-run", help="The view run folder (train view)."),
    registry: Path = typer.Option(..., "--registry", help="The registry folder."),
    name: str = typer.Option(..., "--name", help="Package name, e.g. rhd-screen."),
    version: str = typer.Option(..., "--version", help="Package version, e.g. 1.0.0."),
    min_view_confidence: float = typer.Option(
        0.5, "--min-view-confidence", min=0.0, max=1.0,
        help="A clip is RHD evidence only if its predicted view has this probability."),
    tolerance: float = typer.Option(1e-4, "--tolerance", min=0.0,
                                    help="Largest |torch - ONNX| output difference accepted."),
    clip_frames: int | None = typer.Option(
        None, "--clip-frames", min=1,
        help="Stored clip frames, for runs without clips.json trained remotely."),
    clip_size: int | None = typer.Option(None, "--clip-size", min=8,
                                         help="Stored clip side in px, as --clip-frames."),
) -> None:
    """Publish a view run and an rhd run as one immutable, checksummed screening package."""
    from echoscreen.dicom.preprocess import PreprocessSpec
    from echoscreen.errors import ConfigError
    from echoscreen.registry import PublishConfig, publish

    spec = None
    if (clip_frames is None) != (clip_size is None):
        raise ConfigError("give both --clip-frames and --clip-size, or neither")
    if clip_frames is not None and clip_size is not None:
        spec = PreprocessSpec(size=clip_size, frames=clip_frames)
    pc = PublishConfig(rhd_run=run, view_run=view_run, registry=registry, name=name,
                       version=version, min_view_confidence=min_view_confidence,
                       tolerance=tolerance, spec=spec)  # fmt: skip
    with console.status(f"publishing {name}:{version} (ONNX export and check)"):
        path = publish(pc)
    out.print(f"published {name}:{version} at {path}")
