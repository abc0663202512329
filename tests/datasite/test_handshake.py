"""Unauthenticated connections cannot lock tenants out (handshake DoS), on real sockets.

A server with small bounds (4 established connections, 8 handshakes at once, 1.5 s per
handshake) on loopback. Raw TCP connections that never start TLS, or trickle a
ClientHello byte by byte, must neither hold a slot for long nor keep a real client
with a certificate from being served.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from tests.datasite.sitefix import Served, make_site

from echoscreen.data import RemoteSite
from echoscreen.datasite.limits import Limits
from echoscreen.datasite.server import ServerConfig, running


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A data server whose connection bounds are small enough to fill in a test."""
    root = tmp_path_factory.mktemp("handshake")
    site, ids, truth = make_site(root)
    cfg = ServerConfig(site.path, port=0, limits=Limits(max_batch=8, rate=10_000, burst=10_000),
                       max_connections=4, max_handshakes=8, handshake_timeout_s=1.5)  # fmt: skip
    with running(cfg) as url:
        yield Served(url, site, root, ids, truth)
    site.close()


def _raw(url: str) -> socket.socket:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_by_server(s: socket.socket) -> bool:
    """Whether the server closed ``s`` (waits up to the socket's timeout)."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_tcp_connections_do_not_lock_out_a_tenant(tight: Served) -> None:
    idle = [_raw(tight.url) for _ in range(40)]  # 10x the connection cap, 5x the handshakes
    try:
        src = RemoteSite(tight.url, tight.ids["alice"], timeout_s=20)
        try:
            assert src.session()["tenant"] == "alice"
            truth = tight.truth["cohort-a"]
            ids = sorted(truth)[:4]
            for cid, arr in zip(ids, src.fetch(ids), strict=True):
                assert np.array_equal(arr, truth[cid])
        finally:
            src.close()
        # the older idle connections were evicted to make room for newer handshakes
        for s in idle[:8]:
            s.settimeout(10)
            assert _closed_by_server(s)
    finally:
        for s in idle:
            s.close()


def _client_hello() -> bytes:
    """The first flight of a real TLS 1.3 client (its ClientHello), made in memory."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_a_trickled_handshake_is_cut_at_its_deadline(tight: Served) -> None:
    # a real ClientHello, one byte per 0.3 s: each read is well inside 1.5 s and the hello
    # never completes; the handshake as a whole must still end
    hello = _client_hello()
    s = _raw(tight.url)
    try:
        s.settimeout(0.3)
        cut = False
        for byte in hello[:60]:  # about 18 s of trickling at most
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            if _closed_by_server(s):
                cut = True
                break
        assert cut, "a peer trickling its handshake kept its connection"
    finally:
        s.close()


def test_established_connections_beyond_the_cap_are_closed(tight: Served) -> None:
    clients = [tight.client("alice") for _ in range(5)]
    try:
        for c in clients[:4]:
            assert c.get("/v1/session").status_code == 200  # each holds its keep-alive slot
        with pytest.raises(httpx.TransportError):  # the fifth is closed after its handshake
            clients[4].get("/v1/session")
    finally:
        for c in clients:
            c.close()
    for _ in range(100):  # once the server has seen the four closes, a new client is served
        with tight.client("alice") as c:
            try:
                assert c.get("/v1/session").status_code == 200
                return
            except httpx.TransportError:
                time.sleep(0.05)
    raise AssertionError("the server never freed the slots of closed connections")
