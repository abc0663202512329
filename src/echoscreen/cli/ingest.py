"""``echoscreen ingest`` and ``echoscreen listen``: studies into a data site."""

from __future__ import annotations

from pathlib import Path

import typer

from echoscreen.cli.common import SITE_OPTION, console, dataset_name, out, print_warning


def ingest_command(
    source: str = typer.Argument(
        ..., help="A folder, a .zip, or a DICOMweb base URL. Folder and zip walks skip dot "
        "files and folders, __MACOSX, DICOMDIR and side files (.csv, .json, .png, ...)."
    ),
    site: Path = SITE_OPTION,
    labels: Path = typer.Option(None, "--labels", help="labels.csv (by study_instance_uid)."),
    clips: Path = typer.Option(None, "--clips", help="clips.csv (by sop_instance_uid)."),
    dataset: str = typer.Option(None, "--dataset", callback=dataset_name,
                                help="Put the studies in this dataset."),
    size: int = typer.Option(112, "--size", min=8, max=1024,
                                help="Side of the stored clip tensors (pixels)."),
    frames: int = typer.Option(32, "--frames", min=1, max=1024,
                                  help="Frames of the stored clip tensors."),
    workers: int = typer.Option(
        0, "--workers", help="Processes preparing clips (0 = one per CPU core; 1 = in-process)."
    ),
) -> None:
    """De-identify, preprocess, encrypt and catalog every study of SOURCE."""
    from echoscreen.dicom import PreprocessSpec
    from echoscreen.ingest import open_source
    from echoscreen.ingest.pipeline import ingest
    from echoscreen.ingest.summary import report_tables, report_warnings
    from echoscreen.store.report import progress_bar
    from echoscreen.store.site import Site

    src = open_source(source)
    spec = PreprocessSpec(size=size, frames=frames)
    with Site.open(site) as s, progress_bar(console, "studies") as progress:
        report = ingest(src, s, labels=labels, clips=clips, dataset=dataset, spec=spec,
                        progress=lambda done, total: progress(done, total or done),
                        workers=workers or None)  # fmt: skip
    for table in report_tables(report, src.describe()):
        out.print(table)
    for warning in report_warnings(report):
        print_warning(warning)
    if not (report.ingested or report.skipped or report.quarantined):
        from echoscreen.errors import IngestError

        raise IngestError(f"found no DICOM files in {src.describe()}: nothing was ingested; "
                          "name a folder, zip or DICOMweb server that holds studies (walks "
                          "skip dot files, __MACOSX, DICOMDIR and side files)")  # fmt: skip


def listen_command(
    site: Path = SITE_OPTION,
    port: int = typer.Option(11112, "--port", min=0, max=65535,
                              help="TCP port of the C-STORE SCP."),
    aet: str = typer.Option("ECHOSCREEN", "--aet", help="AE title scanners must call."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface (0.0.0.0: all)."),
    dataset: str = typer.Option(None, "--dataset", callback=dataset_name,
                                help="Put the studies in this dataset."),
    size: int = typer.Option(112, "--size", min=8, max=1024,
                                help="Side of the stored clip tensors (pixels)."),
    frames: int = typer.Option(32, "--frames", min=1, max=1024,
                                  help="Frames of the stored clip tensors."),
) -> None:
    """Receive studies by DICOM C-STORE; ingest each when its association ends (Ctrl-C stops)."""
    from echoscreen.dicom import PreprocessSpec
    from echoscreen.ingest.listen import listen
    from echoscreen.ingest.summary import report_tables
    from echoscreen.store.site import Site

    spec = PreprocessSpec(size=size, frames=frames)
    with Site.open(site) as s:
        report = listen(s, port=port, aet=aet, host=host, dataset=dataset, spec=spec, say=out.print)
    for table in report_tables(report, f"DICOM listener {aet}@{host}:{port}"):
        out.print(table)
