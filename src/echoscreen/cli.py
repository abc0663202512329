"""The ``echoscreen`` command line: parses arguments into config objects and calls library code.

Every command is thin. Errors derived from :class:`echoscreen.errors.EchoscreenError`
are printed as one red line with the hint they carry, and the process exits
non-zero; they never surface as a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from echoscreen import __version__
from echoscreen.errors import EchoscreenError

app = typer.Typer(
    name="echoscreen",
    help="Rheumatic Heart Disease screening from echocardiograms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()


def _version(value: bool) -> None:
    if value:
        out.print(f"echoscreen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Rheumatic Heart Disease screening from echocardiograms."""


# ---- demo ---------------------------------------------------------------------------------


@app.command()
def demo(
    workdir: Path = typer.Option(
        Path("demo-work"), "--workdir", help="Folder for everything the demo makes."
    ),
) -> None:
    """Run the main job end to end on embedded defaults."""
    from echoscreen.demo import DemoConfig, run_demo

    run_demo(DemoConfig(workdir=workdir), out)


# ---- synth (phantom) ----------------------------------------------------------------------


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    rows, sep, cols = text.lower().partition("x")
    if not sep or not rows.strip().isdigit() or not cols.strip().isdigit():
        from echoscreen.errors import ConfigError

        raise ConfigError(f"--size must look like ROWSxCOLS, e.g. 64x64, got {text!r}")
    return int(rows), int(cols)


@app.command()
def synth(
    out_dir: Path = typer.Argument(..., help="Empty (or new) folder for the cohort."),
    studies: int = typer.Option(..., "--studies", help="Number of studies (one patient each)."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed gives identical files."),
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


# ---- dicom --------------------------------------------------------------------------------


@app.command()
def inspect(
    paths: list[Path] = typer.Argument(..., help="DICOM files or folders (searched recursively)."),
) -> None:
    """Print one row per DICOM file: what it holds and whether it decodes."""
    from rich.progress import track
    from rich.table import Table
    from rich.text import Text

    from echoscreen.dicom.inspect import inspect_file, iter_files, short_syntax_name
    from echoscreen.errors import DicomError

    files = list(iter_files(paths))
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
    failed = sum(not r.ok for r in rows)
    if not rows:
        raise DicomError("no files found; name DICOM files or folders that hold them")
    if failed:
        raise DicomError(f"{failed} of {len(rows)} files failed; the status column says why")


# ---- site ---------------------------------------------------------------------------------

site_app = typer.Typer(
    help="Create and inspect a data site (keys, encrypted objects, catalog).",
    no_args_is_help=True,
)
app.add_typer(site_app, name="site")
SITE_OPTION = typer.Option(
    ..., "--site", envvar="ECHOSCREEN_SITE", help="The site folder (or $ECHOSCREEN_SITE)."
)


@site_app.command("init")
def site_init(
    site: Path = typer.Argument(..., help="Folder of the new site (must not exist or be empty)."),
    catalog: str = typer.Option(
        None, "--catalog", help="postgresql://USER[:PASSWORD]@HOST/DB (default: SQLite in SITE)."
    ),
) -> None:
    """Create a site: key-encryption key, pseudonymisation secret, object store, catalog."""
    from echoscreen.store.site import Site

    with Site.init(site, catalog) as s:
        out.print(f"created site {s.path} (catalog: {s.catalog!r}, key {s.keys.active_key_id})")


@site_app.command("ls")
def site_ls(site: Path = SITE_OPTION) -> None:
    """Summarise the site: studies, labels, views, datasets and splits."""
    from echoscreen.store.report import summary_tables
    from echoscreen.store.site import Site

    with Site.open(site) as s:
        for table in summary_tables(s.summary()):
            out.print(table)


@site_app.command("show")
def site_show(
    study: str = typer.Argument(..., help="Study id (pseudonymised) or a unique prefix."),
    site: Path = SITE_OPTION,
) -> None:
    """Show one study and its clips."""
    from echoscreen.store.report import study_tables
    from echoscreen.store.site import Site

    with Site.open(site) as s:
        for table in study_tables(s.catalog.study(study)):
            out.print(table)


@site_app.command("verify")
def site_verify(site: Path = SITE_OPTION) -> None:
    """Decrypt and check every object and every catalog reference; non-zero exit on failure."""
    from echoscreen.errors import IntegrityError
    from echoscreen.store.report import failures_table, progress_bar
    from echoscreen.store.site import Site

    with Site.open(site) as s, progress_bar(console, "verifying objects") as progress:
        failures = s.verify(progress)
    if failures:
        out.print(failures_table(failures))
        raise IntegrityError(
            f"{len(failures)} object(s) or reference(s) failed verification; restore them from "
            "backup or re-ingest their studies"
        )
    out.print("[green]all objects decrypt and authenticate; all catalog references resolve[/]")


@site_app.command("rotate-key")
def site_rotate_key(site: Path = SITE_OPTION) -> None:
    """New key-encryption key; re-wrap every data key under it (data is not re-encrypted)."""
    from echoscreen.store.report import progress_bar
    from echoscreen.store.site import Site

    with Site.open(site) as s, progress_bar(console, "re-wrapping data keys") as progress:
        rot = s.rotate_key(progress)
    out.print(
        f"active key {rot.new_key_id}; re-wrapped {rot.rewrapped} object(s); "
        f"retired {', '.join(rot.retired) or 'none'}"
    )
    if rot.kept:
        out.print(f"[yellow]kept {', '.join(rot.kept)}: damaged objects still use them[/]")


@site_app.command("split")
def site_split(
    name: str = typer.Argument(..., help="Dataset name."),
    site: Path = SITE_OPTION,
    train: float = typer.Option(0.7, "--train", help="Fraction of studies for training."),
    val: float = typer.Option(0.15, "--val", help="Fraction for validation."),
    test: float = typer.Option(0.15, "--test", help="Fraction for test."),
    seed: int = typer.Option(0, "--seed", help="Shuffle seed."),
) -> None:
    """Patient-level, label-stratified train/val/test split of a dataset."""
    from echoscreen.store.catalog import make_split
    from echoscreen.store.site import Site

    with Site.open(site) as s:
        counts = make_split(s.catalog, name, train, val, test, seed)
    out.print(f"split {name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@site_app.command("grant")
def site_grant(
    tenant: str = typer.Argument(..., help="Tenant name (from `pki issue`)."),
    dataset: str = typer.Argument(..., help="Dataset the tenant may read."),
    site: Path = SITE_OPTION,
) -> None:
    """Let TENANT read DATASET through the data server."""
    from echoscreen.datasite.access import grant
    from echoscreen.store.site import Site

    with Site.open(site) as s:
        new = grant(s, tenant, dataset)
    out.print(f"{tenant} may read {dataset}" + ("" if new else " (already could)"))


@site_app.command("revoke-grant")
def site_revoke_grant(
    tenant: str = typer.Argument(..., help="Tenant name."),
    dataset: str = typer.Argument(..., help="Dataset to withdraw."),
    site: Path = SITE_OPTION,
) -> None:
    """Withdraw TENANT's access to DATASET (takes effect on the next request)."""
    from echoscreen.datasite.access import revoke_grant
    from echoscreen.store.site import Site

    with Site.open(site) as s:
        had = revoke_grant(s, tenant, dataset)
    out.print(f"{tenant} may no longer read {dataset}" + ("" if had else " (had no grant)"))


@site_app.command("audit")
def site_audit(
    site: Path = SITE_OPTION,
    verify: bool = typer.Option(False, "--verify", help="Check the hash chain; exit 1 if broken."),
    last: int = typer.Option(50, "--last", help="Show the newest N records (0: all)."),
) -> None:
    """Show the data server's audit log; with --verify, detect any tampering."""
    from echoscreen.datasite.audit import AuditLog
    from echoscreen.datasite.report import audit_table, problems_table
    from echoscreen.errors import DatasiteError
    from echoscreen.store.site import Site

    with Site.open(site) as s:
        log = AuditLog(s)
        out.print(audit_table(log.records(last or None)))
        problems = log.verify() if verify else []
    if problems:
        out.print(problems_table(problems))
        raise DatasiteError(
            f"the audit log fails verification at {len(problems)} point(s): it was altered; "
            "keep the site read-only and compare with a backup"
        )
    if verify:
        out.print("[green]audit chain intact: every record matches its hash and the head[/]")


# ---- ingest -------------------------------------------------------------------------------


@app.command("ingest")
def ingest_command(
    source: str = typer.Argument(..., help="A folder, a .zip, or a DICOMweb base URL."),
    site: Path = SITE_OPTION,
    labels: Path = typer.Option(None, "--labels", help="labels.csv (by study_instance_uid)."),
    clips: Path = typer.Option(None, "--clips", help="clips.csv (by sop_instance_uid)."),
    dataset: str = typer.Option(None, "--dataset", help="Put the studies in this dataset."),
    size: int = typer.Option(112, "--size", help="Side of the stored clip tensors (pixels)."),
    frames: int = typer.Option(32, "--frames", help="Frames of the stored clip tensors."),
    workers: int = typer.Option(
        0, "--workers", help="Processes preparing clips (0 = one per CPU core; 1 = in-process)."
    ),
) -> None:
    """De-identify, preprocess, encrypt and catalog every study of SOURCE."""
    from echoscreen.dicom import PreprocessSpec
    from echoscreen.ingest import open_source
    from echoscreen.ingest.pipeline import ingest
    from echoscreen.ingest.summary import report_tables
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


@app.command("listen")
def listen_command(
    site: Path = SITE_OPTION,
    port: int = typer.Option(11112, "--port", help="TCP port of the C-STORE SCP."),
    aet: str = typer.Option("ECHOSCREEN", "--aet", help="AE title scanners must call."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface (0.0.0.0: all)."),
    dataset: str = typer.Option(None, "--dataset", help="Put the studies in this dataset."),
    size: int = typer.Option(112, "--size", help="Side of the stored clip tensors (pixels)."),
    frames: int = typer.Option(32, "--frames", help="Frames of the stored clip tensors."),
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

# ---- datasite -----------------------------------------------------------------------------

pki_app = typer.Typer(help="The site's certificate authority and tenant identities.",
                      no_args_is_help=True)  # fmt: skip
app.add_typer(pki_app, name="pki")
datasite_app = typer.Typer(help="Serve clips to compute sites over mTLS; list them remotely.",
                           no_args_is_help=True)  # fmt: skip
app.add_typer(datasite_app, name="datasite")


@pki_app.command("init")
def pki_init(
    site: Path = SITE_OPTION,
    san: list[str] = typer.Option([], "--san", help="Extra host name or IP of the server."),
) -> None:
    """Create the site CA and the data server's certificate (SITE/pki)."""
    from echoscreen.datasite.pki import init_pki

    paths = init_pki(site, san)
    out.print(f"created CA {paths.ca_cert} and server certificate {paths.server_cert}")


@pki_app.command("issue")
def pki_issue(
    tenant: str = typer.Argument(..., help="Tenant name: 1-64 of a-z 0-9 - _."),
    site: Path = SITE_OPTION,
    out_dir: Path = typer.Option(..., "--out", help="Folder for client.crt, client.key, ca.crt."),
) -> None:
    """Issue a client identity (certificate + key bundle) for TENANT."""
    from echoscreen.datasite.pki import issue
    from echoscreen.store.site import Site

    with Site.open(site) as s:
        ident = issue(s, tenant, out_dir)
    out.print(f"issued {tenant} serial {ident.serial} (valid to {ident.not_after:%Y-%m-%d}) "
              f"in {ident.folder}")  # fmt: skip


@pki_app.command("revoke")
def pki_revoke(
    tenant: str = typer.Argument(..., help="Tenant whose certificates are revoked."),
    site: Path = SITE_OPTION,
) -> None:
    """Revoke every certificate of TENANT (the server checks on every request)."""
    from echoscreen.datasite.pki import revoke
    from echoscreen.store.site import Site

    with Site.open(site) as s:
        serials = revoke(s, tenant)
    out.print(f"revoked {len(serials)} certificate(s) of {tenant}: {', '.join(serials) or '-'}")


@datasite_app.command("serve")
def datasite_serve(
    site: Path = SITE_OPTION,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8443, "--port", help="TCP port."),
    max_batch: int = typer.Option(64, "--max-batch", help="Most clips per batch request."),
    rate: float = typer.Option(2000.0, "--rate", help="Clips per second per tenant."),
) -> None:
    """Serve the site's clips over HTTPS with client certificates (Ctrl-C stops)."""
    from echoscreen.datasite.limits import Limits
    from echoscreen.datasite.pki import require_pki
    from echoscreen.datasite.server import ServerConfig, serve

    require_pki(site)
    limits = Limits(max_batch=max_batch, rate=rate, burst=max(rate * 2, max_batch))
    console.print(f"data server on https://{host}:{port} (site {site})")
    serve(ServerConfig(site, host, port, limits, "warning"))


@datasite_app.command("ls")
def datasite_ls(
    url: str = typer.Option(..., "--url", help="https://HOST:PORT of the data server."),
    identity: Path = typer.Option(..., "--identity", help="Folder written by `pki issue`."),
) -> None:
    """List the datasets, splits and clip counts this identity may read."""
    from echoscreen.data.remote import RemoteSite
    from echoscreen.datasite.report import datasets_table

    remote = RemoteSite(url, identity)
    try:
        who = remote.session()
        out.print(datasets_table(remote.datasets(), f"readable by {who['tenant']} at {url}"))
    finally:
        remote.close()


def main() -> None:
    """Console-script entry point: run the app, turning echoscreen errors into clean exits."""
    try:
        # Outside standalone mode click returns (not raises) the code of a typer.Exit.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except EchoscreenError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.print("[yellow]aborted[/]")
        sys.exit(1)
    except typer.TyperException as exc:  # usage errors (bad option values) in non-standalone mode
        show = getattr(exc, "show", None)  # typer's bundled click exceptions render usage + hint
        if callable(show):
            show()
        else:
            console.print(f"[bold red]error:[/] {exc.format_message()}", highlight=False)
        sys.exit(exc.exit_code)
