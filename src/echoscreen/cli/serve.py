"""``echoscreen serve ...`` (the screening service) and ``echoscreen tokens ...`` (its tokens)."""

from __future__ import annotations

from pathlib import Path

import typer

from echoscreen.cli.common import console, out

STATE_OPTION = typer.Option(
    ..., "--state", envvar="ECHOSCREEN_STATE",
    help="The service's state folder: tokens.db, jobs.db (or $ECHOSCREEN_STATE).",
)  # fmt: skip

tokens_app = typer.Typer(help="Bearer tokens of the screening service (stored hashed).",
                         no_args_is_help=True)  # fmt: skip


def serve_command(
    registry: Path = typer.Option(..., "--registry", help="The registry folder."),
    model: str = typer.Option(..., "--model", help="Package to serve, as NAME:VERSION."),
    state: Path = STATE_OPTION,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface the HTTP API listens on."),
    port: int = typer.Option(
        8080, "--port", min=0, max=65535, help="TCP port of the HTTP API (0: any free, printed)."
    ),
    dicom_port: int | None = typer.Option(
        None, "--dicom-port", min=1, max=65535, help="Also run a C-STORE SCP on this port."
    ),
    ae_title: str = typer.Option("ECHOSCREEN", "--ae-title", help="AE title of the SCP."),
    pacs: str | None = typer.Option(
        None, "--pacs", help="STOW-RS base URL the results are sent to as SR."
    ),
    backend: str = typer.Option(
        "auto", "--backend", help="auto (torch on CUDA, else onnx), onnx or torch."
    ),
    workers: int = typer.Option(
        0, "--workers", min=0, help="Preprocessing processes (0: one per core)."
    ),
    job_threads: int = typer.Option(8, "--job-threads", min=1, help="Studies screened at once."),
    max_batch: int = typer.Option(16, "--max-batch", min=1, help="Most clips per inference batch."),
    max_wait_ms: float = typer.Option(10.0, "--max-wait-ms", min=0.0, help="Batching window (ms)."),
    queue_size: int = typer.Option(64, "--queue-size", min=1, help="Jobs waiting; more get 503."),
    result_ttl: float = typer.Option(
        3600.0, "--result-ttl", help="Seconds results are kept (> 0)."
    ),
    explain: bool = typer.Option(
        True, "--explain/--no-explain", help="Key frames with saliency overlays."
    ),
    max_upload_mb: int = typer.Option(
        512, "--max-upload-mb", min=1, max=1 << 20, help="Largest upload (MiB)."
    ),
    max_queued_mb: int = typer.Option(
        2048, "--max-queued-mb", min=1, max=1 << 24,
        help="Most MiB of studies held in memory at once (uploads being read, studies the "
             "DICOM port is receiving, jobs not finished); more get 503. An upload counts its "
             "body and its files while both are held: twice --max-upload-mb takes every "
             "upload that limit allows.",
    ),
    max_files: int = typer.Option(500, "--max-files", min=1, help="Most files in one study."),
    max_sync_files: int = typer.Option(
        40, "--max-sync-files", min=1, help="Most files for POST /v1/screen."
    ),
    access_log: bool = typer.Option(
        True,
        "--access-log/--no-access-log",
        help="Log every request (token name, route, status, ms).",
    ),
) -> None:
    """Serve a published model: HTTP API, web page, optional DICOM SCP (SIGTERM drains)."""
    import logging

    from echoscreen.service.config import ServiceConfig
    from echoscreen.service.server import serve

    cfg = ServiceConfig(
        registry=registry, model=model, state_dir=state, host=host, port=port,
        dicom_port=dicom_port, ae_title=ae_title, pacs=pacs, backend=backend,
        cpu_workers=workers, job_threads=job_threads, max_batch=max_batch,
        max_wait_ms=max_wait_ms, queue_size=queue_size, result_ttl_s=result_ttl,
        explain=explain, max_upload_bytes=max_upload_mb << 20,
        max_queued_bytes=max_queued_mb << 20, max_files=max_files,
        max_sync_files=max_sync_files,
    ).validate()  # fmt: skip
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if access_log:
        logging.getLogger("echoscreen.service.access").setLevel(logging.INFO)

    def listening(url: str) -> None:  # the port bound: --port 0 picks one
        console.print(f"serving {model} on {url}"
                      + (f" and DICOM port {dicom_port}" if dicom_port else ""))  # fmt: skip

    console.print(f"starting {model}")
    serve(cfg, on_listen=listening)
    console.print("stopped: every accepted job finished")


@tokens_app.command("create")
def tokens_create(
    name: str = typer.Argument(..., help="The client's name (shown in the access log)."),
    state: Path = STATE_OPTION,
) -> None:
    """Create a token for NAME and print it (only now: it is stored hashed)."""
    from echoscreen.service.tokens import TokenStore

    secret = TokenStore(state / "tokens.db").create(name)
    console.print(f"token for {name} (shown once; send it as `Authorization: Bearer ...`):")
    out.print(secret, highlight=False)


@tokens_app.command("revoke")
def tokens_revoke(
    name: str = typer.Argument(..., help="The client whose tokens are revoked."),
    state: Path = STATE_OPTION,
) -> None:
    """Revoke NAME's token (a running service refuses it from the next request)."""
    from echoscreen.service.tokens import TokenStore

    _existing_state(state)
    n = TokenStore(state / "tokens.db").revoke(name)
    out.print(f"revoked {n} token(s) of {name}")


@tokens_app.command("list")
def tokens_list(state: Path = STATE_OPTION) -> None:
    """List the tokens' names, when they were created and revoked (never the secrets)."""
    from rich.table import Table

    from echoscreen.service.tokens import TokenStore

    _existing_state(state)
    table = Table(title=f"tokens in {state}")
    for col in ("name", "created", "revoked"):
        table.add_column(col)
    if (state / "tokens.db").exists():  # else none were created: list without making one
        for t in TokenStore(state / "tokens.db").list():
            table.add_row(t.name, t.created, t.revoked or "")
    out.print(table)


def _existing_state(state: Path) -> None:
    """Refuse a --state that is not a folder: reading or revoking must not create one."""
    if not state.is_dir():
        from echoscreen.errors import ConfigError

        raise ConfigError(f"--state {state} is not a folder; give the service's state folder "
                          "(made by `echoscreen tokens create NAME --state DIR`)")  # fmt: skip
