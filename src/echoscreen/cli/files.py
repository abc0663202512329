"""Commands on DICOM files and the phantom: ``demo``, ``synth``, ``inspect``."""

from __future__ import annotations

from pathlib import Path

import typer

from echoscreen.cli.common import console, out, print_warning
from echoscreen.errors import DicomError


def demo(
    workdir: Path = typer.Option(
        Path("demo-work"), "--workdir", help="Folder for everything the demo makes."
    ),
    serve: bool = typer.Option(
        False, "--serve", help="Then keep the screening service running and print its web page."
    ),
    port: int = typer.Option(8080, "--port", min=0, max=65535,
                              help="Port of the service with --serve."),
) -> None:
    """Run the main job end to end on embedded defaults."""
    from echoscreen.demo import DemoConfig, run_demo

    run_demo(DemoConfig(workdir=workdir), out, serve_port=port if serve else None)


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    rows, sep, cols = text.lower().partition("x")
    if not sep or not rows.strip().isdigit() or not cols.strip().isdigit():
        from echoscreen.errors import ConfigError

        raise ConfigError(f"--size must look like ROWSxCOLS, e.g. 64x64, got {text!r}")
    return int(rows), int(cols)


def synth(
    out_dir: Path = typer.Argument(..., help="Empty (or new) folder for the cohort."),
    studies: int = typer.Option(
        ..., "--studies", help="Number of studies (one patient each, 1 to 100000)."
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, help="Seed (>= 0); the same seed gives identical files."
    ),
    prevalence: str | None = typer.Option(
        None, "--prevalence", help="e.g. normal=.6,borderline=.2,definite=.2 (default .5/.25/.25)"
    ),
    frames: int = typer.Option(32, "--frames", help="Frames per clip."),
    size: str | None = typer.Option(None, "--size", help="ROWSxCOLS for every clip, e.g. 64x64."),
    transfer_syntax: str = typer.Option(
        "jpeg-baseline", "--transfer-syntax", help="jpeg-baseline, explicit-le or rle."
    ),
    masks: bool = typer.Option(False, "--masks", help="Also write jet/leaflet masks (.npz)."),
    workers: int = typer.Option(0, "--workers", help="Processes (0 = one per CPU core)."),
) -> None:
    """Generate a phantom cohort of echo studies (DICOM cine) with labels.csv and clips.csv."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    from echoscreen.synth import DEFAULT_PREVALENCE, CohortConfig, generate_cohort
    from echoscreen.synth import parse_prevalence as _prev

    cfg = CohortConfig(
        studies=studies,
        seed=seed,
        prevalence=_prev(prevalence) if prevalence is not None else dict(DEFAULT_PREVALENCE),
        frames=frames,
        size=_parse_size(size),
        transfer_syntax=transfer_syntax,
        masks=masks,
        workers=workers,
    )
    cfg.validate()
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress("[bold]synth[/]", *columns, console=console, transient=True) as bar:
        task = bar.add_task("studies", total=studies)
        summary = generate_cohort(out_dir, cfg, lambda done, _n: bar.update(task, completed=done))
    table = Table(title=f"phantom cohort in {summary.out}")
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, n in sorted(summary.per_label.items()):
        table.add_row(f"studies {label}", str(n))
    for view, n in summary.per_view.items():
        table.add_row(f"clips {view}", str(n))
    table.add_row("clips with colour Doppler", str(summary.doppler_clips))
    table.add_row("clips in all", str(summary.clips))
    table.add_row("seconds", f"{summary.seconds:.1f}")
    out.print(table)


def inspect(
    paths: list[Path] = typer.Argument(..., help="DICOM files or folders (searched recursively)."),
) -> None:
    """Print one row per DICOM file: what it holds and whether it decodes."""
    from rich.progress import track
    from rich.table import Table
    from rich.text import Text

    from echoscreen.dicom.inspect import inspect_file, iter_files, short_syntax_name

    unreadable: list[OSError] = []
    files = list(iter_files(paths, unreadable))
    rows = [inspect_file(f) for f in track(files, description="decoding", console=console)]
    table = Table("file", "modality", "frames", "size", "fps", "transfer syntax", "photometric",
                  "regions", "status")
    for r in rows:
        cells = [str(r.path), r.modality, str(r.frames or ""), f"{r.cols}x{r.rows}" if r.ok else "",
                 f"{r.fps:.1f}" if r.fps else "", short_syntax_name(r.transfer_syntax),
                 r.photometric, str(r.n_regions) if r.ok else ""]
        status = Text("ok", style="green") if r.ok else Text(r.error or "failed", style="red")
        table.add_row(*(Text(c) for c in cells), status)
    out.print(table)
    for exc in unreadable:  # rglob skipped them without a word
        print_warning(f"cannot read folder {exc.filename} ({exc.strerror}): its files are not "
                      "inspected")  # fmt: skip
    failed = sum(not r.ok for r in rows)
    if not rows and unreadable:
        n = len(unreadable)
        raise DicomError(f"no file could be read: {n} folder{'s' if n > 1 else ''} could not "
                         "be read (see the warnings); fix their permissions")  # fmt: skip
    if not rows:
        raise DicomError("no files found; name DICOM files or folders that hold them")
    if failed:
        raise DicomError(f"{failed} of {len(rows)} files failed; the status column says why")
