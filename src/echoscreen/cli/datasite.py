"""``echoscreen pki ...`` and ``echoscreen datasite ...``: identities and the data server."""

from __future__ import annotations

from pathlib import Path

import typer

from echoscreen.cli.common import SITE_OPTION, console, out

pki_app = typer.Typer(help="The site's certificate authority and tenant identities.",
                      no_args_is_help=True)  # fmt: skip
datasite_app = typer.Typer(help="Serve clips to compute sites over mTLS; list them remotely.",
                           no_args_is_help=True)  # fmt: skip

#: the files of an identity bundle written by ``pki issue``
BUNDLE = ("client.crt", "client.key", "ca.crt")


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
    out_dir: Path = typer.Option(
        ..., "--out", help="Folder for client.crt, client.key, ca.crt (none of them there yet)."
    ),
) -> None:
    """Issue a client identity (certificate + key bundle) for TENANT into a folder without one."""
    from echoscreen.datasite.pki import issue
    from echoscreen.errors import DatasiteError
    from echoscreen.store.site import Site

    held = [name for name in BUNDLE if (out_dir / name).exists()]
    if held:  # checked before the catalog records a certificate nobody would hold
        raise DatasiteError(f"{out_dir} already holds {', '.join(held)} of an identity bundle, "
                            "which is never overwritten; choose another --out folder (or move "
                            "that bundle away first)")  # fmt: skip
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
    port: int = typer.Option(8443, "--port", min=0, max=65535,
                             help="TCP port (0: a free one, printed)."),
    max_batch: int = typer.Option(64, "--max-batch", help="Most clips per batch request."),
    rate: float = typer.Option(2000.0, "--rate", help="Clips per second per tenant."),
) -> None:
    """Serve the site's clips over HTTPS with client certificates (Ctrl-C stops)."""
    from echoscreen.datasite.limits import Limits
    from echoscreen.datasite.server import ServerConfig, serve, url_of

    limits = Limits(max_batch=max_batch, rate=rate, burst=max(rate * 2, max_batch))

    def listening(bound_host: str, bound_port: int) -> None:  # the port bound: 0 picks one
        console.print(f"data server on {url_of(bound_host, bound_port)} (site {site})")

    serve(ServerConfig(site, host, port, limits, "warning"), on_listening=listening)


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
        datasets = remote.datasets()
        if not datasets:  # an empty table would read as a dataset without clips
            out.print(f"no dataset is granted to {who['tenant']} at {url}: the data site "
                      f"grants one with `echoscreen site grant {who['tenant']} DATASET`",
                      soft_wrap=True, markup=False)  # fmt: skip
            return
        out.print(datasets_table(datasets, f"readable by {who['tenant']} at {url}"))
    finally:
        remote.close()
