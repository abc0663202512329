"""The hand-rolled keep-alive TLS client of clip batches (``BlockConnections``) at its edges.

Real mTLS on loopback throughout: the real data server (restarted, or revoking an
identity between two requests on one pooled connection), and for cut-short answers
a minimal TLS server with the site's own server certificate that answers the
batch request with a body shorter than it announced.
"""

from __future__ import annotations

import io
import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.datasite.sitefix import Served, make_site

from echoscreen.data import ClipDataset, RemoteSite
from echoscreen.datasite import pki
from echoscreen.datasite.audit import AuditLog
from echoscreen.datasite.limits import Limits
from echoscreen.datasite.server import ServerConfig, free_port, running
from echoscreen.datasite.tls import server_context
from echoscreen.datasite.wire import BATCH_TYPE, encode_batch
from echoscreen.errors import DatasiteError


def test_pooled_connection_of_a_restarted_server_is_replaced_once(tmp_path: Path) -> None:
    site, ids, truth = make_site(tmp_path)
    cfg = ServerConfig(site.path, port=free_port(), limits=Limits(max_batch=8))
    want = sorted(truth["cohort-a"])[:3]
    remote = RemoteSite(f"https://127.0.0.1:{cfg.port}", ids["alice"])
    try:
        with running(cfg):
            remote.fetch(want[:1])
            (old,) = remote.blocks._idle  # the keep-alive socket, pooled
        with running(cfg):  # a new server: the pooled socket's peer is gone
            got = remote.fetch(want)
        (new,) = remote.blocks._idle
        assert new is not old and old.fileno() == -1  # closed and replaced, transparently
        assert all(np.array_equal(a, truth["cohort-a"][c]) for a, c in zip(got, want, strict=True))
    finally:
        remote.close()
        site.close()


def test_identity_revoked_mid_run_is_refused_on_the_same_connection(served: Served) -> None:
    ds = ClipDataset(RemoteSite(served.url, served.ids["mallory"]), "cohort-a", None,
                     cache_bytes=0)  # fmt: skip
    with ds:
        x, meta = ds[0]
        assert np.array_equal(x.numpy(), served.truth["cohort-a"][meta["clip"]])
        pooled = list(ds.source.blocks._idle)
        pki.revoke(served.site, "mallory")
        with pytest.raises(DatasiteError, match=r"refused POST /v1/clips:batch \(403\): "
                           r"certificate revoked"):  # fmt: skip
            ds[1]
        assert pooled and ds.source.blocks._idle == pooled
    last = AuditLog(served.site).records(last=1)[0]
    assert (last.who, last.allowed, last.status, last.detail) == \
        ("mallory", False, 403, "certificate revoked")  # fmt: skip


def _answer(tls: socket.socket, answers: dict[str, bytes]) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    while length and len(rest) < int(length[1]):
        rest += tls.recv(65536)
    tls.sendall(answers[head.split(b" ")[1].split(b"?")[0].decode()])


@pytest.fixture()
def cut_short(served: Served) -> Iterator[tuple[str, dict[str, bytes]]]:
    """A TLS server (the site's certificate, client certificates required) that answers
    each connection's one request from ``answers`` (path -> raw HTTP answer), then closes."""
    ctx = server_context(pki.require_pki(served.site.path))
    answers: dict[str, bytes] = {}
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(10)
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    _answer(tls, answers)
            except OSError:
                pass

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}", answers
    stop.set()
    thread.join(5)
    listener.close()


def _http(body: bytes, content_type: str, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return (f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {n}\r\n"
            "connection: close\r\n\r\n").encode() + body  # fmt: skip


@pytest.mark.parametrize("cut", ["mid-body", "mid-record"])
def test_answer_cut_short_is_an_error_never_partial_pixels(
    served: Served, cut_short: tuple[str, dict[str, bytes]], cut: str
) -> None:
    url, answers = cut_short
    session = {"api": 1, "tenant": "alice", "serial": "0", "limits": {"max_batch": 8}}
    answers["/v1/session"] = _http(json.dumps(session).encode(), "application/json")
    cids = sorted(served.truth["cohort-a"])[:2]
    npys = []
    for c in cids:
        buf = io.BytesIO()
        np.save(buf, served.truth["cohort-a"][c])
        npys.append(buf.getvalue())
    body = encode_batch(zip(cids, npys, strict=True))
    if cut == "mid-body":  # announces the whole body, sends 70% of it, closes
        answers["/v1/clips:batch"] = _http(body[: len(body) * 7 // 10], BATCH_TYPE, len(body))
        expect = r"cut its answer short \(connection closed after \d+ of \d+ body bytes\)"
    else:  # a Content-Length that matches what is sent, but the second record is cut
        answers["/v1/clips:batch"] = _http(body[: len(body) - 100], BATCH_TYPE)
        expect = r"malformed answer from the data server: record of clip .* is truncated"
    remote = RemoteSite(url, served.ids["alice"])
    try:
        with pytest.raises(DatasiteError, match=expect):
            remote.fetch(cids)
        assert remote.blocks._idle == []  # the cut connection is not pooled
    finally:
        remote.close()
