"""Run the data server: the threaded mTLS server (:mod:`.httpd`) around the app.

:func:`serve` blocks (the CLI's ``datasite serve``); :func:`running` starts the
server in a background thread of this process and yields its base URL (tests,
benchmark, demo).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echoscreen.datasite.attest import AttestationVerifier
from echoscreen.datasite.audit import AuditLog, Event
from echoscreen.datasite.limits import Limits
from echoscreen.errors import DatasiteError
from echoscreen.store.site import Site


@dataclass
class ServerConfig:
    """Settings of one data server process.

    Attributes:
        site: the site folder (``pki init`` must have been run).
        host: address to listen on.
        port: TCP port (0: pick a free one, see :func:`running`).
        limits: batch and rate bounds.
        log_level: level of the ``echoscreen.datasite`` logger (``datasite serve``).
        max_connections: established (authenticated) connections at once.
        max_handshakes: TLS handshakes in progress at once (one more evicts the oldest).
        handshake_timeout_s: the most one TLS handshake may take, in seconds.
    """

    site: Path
    host: str = "127.0.0.1"
    port: int = 8443
    limits: Limits = field(default_factory=Limits)
    log_level: str = "warning"
    max_connections: int = 64
    max_handshakes: int = 128
    handshake_timeout_s: float = 10.0


def url_of(host: str, port: int) -> str:
    """``https://host:port`` (an IPv6 host in brackets)."""
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def build(cfg: ServerConfig, site: Site, verifier: AttestationVerifier | None = None,
          on_listening: Callable[[str, int], None] | None = None) -> Any:  # fmt: skip
    """A configured (not yet started) :class:`~.httpd.ThreadedServer` for an open site;
    ``on_listening(host, port)`` is called once it listens (the port bound).

    Raises:
        DatasiteError: the site has no PKI.
    """
    from echoscreen.datasite.app import create_app
    from echoscreen.datasite.httpd import ThreadedServer
    from echoscreen.datasite.pki import require_pki
    from echoscreen.datasite.tls import server_context

    paths = require_pki(site.path)
    audit = AuditLog(site)

    def refused(reason: str) -> None:
        audit.append(Event("unauthenticated", "tls-handshake", False, detail=reason))

    app = create_app(site, limits=cfg.limits, verifier=verifier, audit=audit)
    return ThreadedServer(app, server_context(paths), cfg.host, cfg.port, on_refused=refused,
                          keep_alive_s=30.0, handshake_timeout_s=cfg.handshake_timeout_s,
                          max_connections=cfg.max_connections,
                          max_handshakes=cfg.max_handshakes, on_listening=on_listening)  # fmt: skip


def tune_allocator(keep_bytes: int = 256 << 20) -> bool:
    """Let glibc reuse freed multi-MB buffers instead of returning them to the kernel.

    A served clip passes through several fresh buffers of its size (file read, the
    decrypted plaintext, TLS records). glibc serves such sizes with ``mmap`` (or trims
    them off thread arenas with ``madvise``), so every request paid page faults and
    kernel page zeroing, about a fifth of the server's CPU. Raising the mmap threshold
    to its 32 MiB maximum and the trim threshold to ``keep_bytes`` keeps that memory
    mapped for reuse. Called by :func:`serve` (the server's own process), and by a
    :class:`~echoscreen.data.ClipDataset` when it starts fetching (the reading process:
    its receive buffers, batch copies and the store's read buffers are as large).

    Returns:
        whether the settings were applied (False off glibc).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, keep_bytes))


def serve(cfg: ServerConfig, verifier: AttestationVerifier | None = None,
          on_listening: Callable[[str, int], None] | None = None) -> None:  # fmt: skip
    """Serve until SIGINT/SIGTERM, then let requests in progress finish (audited) and stop.

    Tunes this process's allocator first and logs connection failures to stderr;
    ``on_listening(host, port)`` is called once the port is bound (``cfg.port`` 0: a
    free one).

    Raises:
        StoreError: ``cfg.site`` is not a site.
        DatasiteError: the site has no PKI.
        OSError: the address cannot be bound.
    """
    import logging
    import signal

    tune_allocator()
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    with Site.open(cfg.site) as site:
        server = build(cfg, site, verifier, on_listening)

        def stop(_signum: int, _frame: Any) -> None:
            server.should_exit = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop)
        server.run()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def running(cfg: ServerConfig, verifier: AttestationVerifier | None = None,
            timeout_s: float = 20.0) -> Iterator[str]:  # fmt: skip
    """Run the server in a background thread; yield ``https://host:port``.

    ``cfg.port == 0`` binds a free port (the one yielded). The server stops when the
    block ends.

    Raises:
        DatasiteError: it did not start within ``timeout_s``.
    """
    site = Site.open(cfg.site)
    server = build(cfg, site, verifier)
    thread = threading.Thread(target=server.run, name="datasite-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise DatasiteError(f"the data server did not start on {cfg.host}:{cfg.port}")
            time.sleep(0.02)
        yield url_of(cfg.host, server.port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        site.close()
