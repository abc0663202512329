"""``echoscreen site ...``: create, inspect, verify and share a data site."""

from __future__ import annotations

from pathlib import Path

import typer

from echoscreen.cli.common import SITE_OPTION, console, dataset_name, out

site_app = typer.Typer(
    help="Create and inspect a data site (keys, encrypted objects, catalog).",
    no_args_is_help=True,
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
        out.print(f"[yellow]kept {', '.join(rot.kept)}: damaged or missing objects may still "
                  "use them (see `echoscreen site verify`)[/]")


@site_app.command("split")
def site_split(
    name: str = typer.Argument(..., callback=dataset_name, help="Dataset name."),
    site: Path = SITE_OPTION,
    train: float = typer.Option(0.7, "--train", help="Fraction of studies for training."),
    val: float = typer.Option(0.15, "--val", help="Fraction for validation."),
    test: float = typer.Option(0.15, "--test", help="Fraction for test."),
    seed: int = typer.Option(0, "--seed", min=0, help="Shuffle seed (>= 0)."),
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
    dataset: str = typer.Argument(..., callback=dataset_name,
                                  help="Dataset the tenant may read."),
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
            f"the audit log fails verification at {len(problems)} point(s) (listed above): "
            "treat it as altered; keep the site read-only and compare with a backup"
        )
    if verify:
        out.print("[green]audit chain intact: every record matches its hash and the head[/]")
