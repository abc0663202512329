"""Run the screening service: engine, tokens, metrics, the app under uvicorn, the SCP.

:func:`serve` blocks (``echoscreen serve``). SIGTERM or SIGINT drains gracefully: the
C-STORE SCP stops, ``/healthz`` answers 503 ``draining``, new studies are refused with
503 and ``Retry-After``, the engine finishes every job it accepted (their results stay
readable over HTTP meanwhile), then the HTTP server stops and the process exits 0. A
second signal stops at once. :func:`running` runs the same stack in a background thread
of this process and yields its base URL (tests, benchmark, demo).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from echoscreen.errors import ServiceError, cannot_listen
from echoscreen.service.protocol import with_head_timeout

if TYPE_CHECKING:
    from fastapi import FastAPI

    from echoscreen.service.config import ServiceConfig
    from echoscreen.service.engine import ScreeningEngine
    from echoscreen.service.outbox import SrOutbox

_log = logging.getLogger("echoscreen.service")


@dataclass
class Service:
    """A built (not yet serving) service: its parts, and the uvicorn server around the app."""

    cfg: ServiceConfig
    engine: ScreeningEngine
    app: FastAPI
    scp: Any = None
    outbox: SrOutbox | None = None
    server: DrainingServer | None = None

    def drain(self, timeout: float = 300.0) -> None:
        """Stop taking work, finish the accepted jobs, then let the HTTP server stop."""
        self.app.state.draining = True
        try:
            if self.scp is not None:
                self.scp.stop()
            self.engine.close(drain=True, timeout=timeout)
            if self.outbox is not None:
                self.outbox.flush()  # a last try for what waits; the rest is logged, dropped
                self.outbox.close()
        except Exception:  # never keep the process up because draining failed
            _log.exception("draining the engine failed")
        finally:
            if self.server is not None:
                self.server.should_exit = True

    def http(self) -> DrainingServer:
        """The uvicorn server (set by :func:`build`)."""
        if self.server is None:
            raise ServiceError("the service was not built with build()", status=500)
        return self.server


def build(cfg: ServiceConfig, log_level: str = "warning") -> Service:
    """Start the engine (loads and verifies the package) and build the app and server.

    Args:
        cfg: the settings (validated here).
        log_level: uvicorn's log level.

    Raises:
        ConfigError: a setting is invalid; RegistryError: the package cannot be loaded.
    """
    from echoscreen.service.app import create_app
    from echoscreen.service.engine import ScreeningEngine
    from echoscreen.service.metrics import Metrics
    from echoscreen.service.tokens import TokenStore

    cfg.validate()
    metrics = Metrics()
    engine = ScreeningEngine(cfg, metrics)
    engine.start()
    scp = outbox = None
    try:
        on_done = None
        if cfg.pacs is not None:
            from echoscreen.service.outbox import SrOutbox
            from echoscreen.service.pacs import sr_sender

            outbox = SrOutbox(cfg.pacs, capacity=cfg.sr_outbox_size, retry_s=cfg.sr_retry_s,
                              metrics=metrics)  # fmt: skip
            outbox.start()
            on_done = sr_sender(cfg.pacs, outbox=outbox)
        if cfg.dicom_port is not None:
            from echoscreen.service.scp import start_scp

            scp = start_scp(cfg, engine, on_done)
        tokens = TokenStore(cfg.state_dir / "tokens.db")
        app = create_app(cfg, engine, tokens, metrics, scp, on_done)
    except BaseException:
        engine.close(drain=False, timeout=5.0)
        if outbox is not None:
            outbox.close()
        raise
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, lifespan="off",
                            http=with_head_timeout(cfg.head_timeout_s), log_level=log_level,
                            access_log=False, timeout_keep_alive=30,
                            timeout_graceful_shutdown=30)  # fmt: skip
    service = Service(cfg, engine, app, scp, outbox)
    service.server = DrainingServer(config, service.drain)
    return service


class DrainingServer(uvicorn.Server):
    """uvicorn, with a first signal draining the service before the server stops.

    uvicorn's own handler stops the server at once and re-raises the signal afterwards
    (the process would die by it); here the first signal starts ``drain`` in a thread and
    the process exits 0 once it is done; a second signal stops at once.
    """

    def __init__(self, config: uvicorn.Config, drain: Callable[[], None]) -> None:
        super().__init__(config)
        self.drain = drain
        self.draining: threading.Thread | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.draining is not None:
            self.should_exit = self.force_exit = True
            return
        self.draining = threading.Thread(target=self._drain, args=(sig,), name="drain",
                                         daemon=True)  # fmt: skip
        self.draining.start()

    def _drain(self, sig: int) -> None:
        # logged here, not in the signal handler (which may interrupt a logging call)
        _log.warning("signal %d: draining (a second signal stops at once)", sig)
        self.drain()


def serve(cfg: ServiceConfig, log_level: str = "warning",
          on_listen: Callable[[str], None] | None = None) -> None:  # fmt: skip
    """Serve until SIGTERM/SIGINT, then drain (see the module docstring).

    Args:
        cfg: the settings; ``port`` 0 picks a free port.
        log_level: uvicorn's log level.
        on_listen: called with the base URL (the port actually bound) once the service
            is built, just before it serves.

    Raises:
        OSError: the port cannot be bound (in use, no permission); nothing was started.
    """
    sock = bind_socket(cfg.host, cfg.port)  # first: a port in use fails before models load
    try:
        port = sock.getsockname()[1]
        service = build(replace(cfg, port=port), log_level)
        if on_listen is not None:
            on_listen(base_url(cfg.host, port))
        try:
            service.http().run(sockets=[sock])
        finally:
            if not service.app.state.draining:  # stopped some other way: still finish the jobs
                service.drain()
    finally:
        sock.close()


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (IPv6 for a host with ``:``; port 0: any free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise cannot_listen(host, port, exc) from None
    except BaseException:
        sock.close()
        raise
    return sock


def base_url(host: str, port: int) -> str:
    """``http://host:port`` (an IPv6 host in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextmanager
def running(cfg: ServiceConfig, timeout_s: float = 60.0) -> Iterator[tuple[str, Service]]:
    """Run the service in a background thread; yield ``(base URL, service)``.

    ``cfg.port == 0`` picks a free port. The block's end drains and stops it.

    Raises:
        ServiceError: the server did not start within ``timeout_s``.
    """
    from echoscreen.datasite.server import free_port

    if cfg.port == 0:
        cfg = replace(cfg, port=free_port(cfg.host))
    service = build(cfg)
    thread = threading.Thread(target=service.http().run, name="service", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not service.http().started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise ServiceError(f"the service did not start on {cfg.host}:{cfg.port}", 503)
            time.sleep(0.02)
        yield base_url(cfg.host, cfg.port), service
    finally:
        service.drain(timeout=30.0)
        thread.join(timeout=30)
