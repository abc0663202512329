"""Clips from a remote data server over mutual TLS (the compute-site side of the API).

:class:`RemoteSite` keeps one ``httpx.Client`` with a connection pool (keep-alive,
TLS 1.3, the identity bundle's certificate, only the bundle's CA trusted). It is
safe to call from several threads at once; :class:`~echoscreen.data.ClipDataset`
does so to prefetch. Responses are parsed in memory: nothing is written to disk.

Clip batches (the bulk of the bytes) bypass httpx, which capped a client core at about
100 MB/s: :class:`BlockConnections` keeps its own pool of TLS sockets from the same client
context and reads each clip with ``recv_into`` straight into the array handed over.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import numpy as np

from echoscreen.data.sources import ClipInfo
from echoscreen.datasite.wire import (
    BATCH_TYPE,
    WireError,
    npy_array,
    stream_records,
)
from echoscreen.errors import DatasiteError

IDENTITY_FILES = ("client.crt", "client.key", "ca.crt")


_MAX_HEAD = 64 * 1024
_BLOCK = 1 << 20


class _Stale(Exception):
    """A pooled socket the server closed before answering (retried once, fresh)."""


class Truncated(ConnectionError):
    """The server closed the connection before the whole answer arrived."""


class _Filler:
    """Fills views with a body's next bytes: first those read with the head, then
    ``recv_into`` straight into the view (SSL_read gives one 16 KiB TLS record a call)."""

    def __init__(self, sock: ssl.SSLSocket, early: memoryview, size: int) -> None:
        self.sock, self.early, self.size, self.have = sock, early, size, 0

    def __call__(self, view: memoryview) -> None:
        pos = min(len(self.early), len(view))
        view[:pos] = self.early[:pos]
        self.early = self.early[pos:]
        while pos < len(view):
            try:
                n = self.sock.recv_into(view[pos:], min(_BLOCK, len(view) - pos))
            except (ConnectionError, ssl.SSLError):  # mid-body: never resent
                n = 0
            if n == 0:
                raise Truncated(f"connection closed after {self.have + pos} of {self.size} "
                                "body bytes")  # fmt: skip
            pos += n
        self.have += pos


class BlockConnections:
    """Keep-alive TLS sockets for bulk answers, read in large blocks (thread-safe).

    HTTP/1.1 with ``Content-Length`` only (what the data server sends). A body is read
    with ``recv_into`` into one buffer of exactly its length (``numpy.empty``: not
    zero-filled first): no per-chunk parsing and no copies beyond the TLS layer's.

    Args:
        url: ``https://host:port``.
        ctx: the client TLS context (mTLS, TLS 1.3).
        connections: most idle sockets kept.
        timeout_s: socket timeout per operation.
    """

    def __init__(self, url: str, ctx: ssl.SSLContext, connections: int, timeout_s: float) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.authority = parts.hostname or "", parts.port or 443, parts.netloc
        self.ctx, self.connections, self.timeout_s = ctx, connections, timeout_s
        self._idle: list[ssl.SSLSocket] = []
        self._lock = threading.Lock()

    def _connect(self) -> ssl.SSLSocket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return self.ctx.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise

    def post(self, path: str, body: bytes, content_type: str,
             on_record: Callable[[str, memoryview], None] | None = None,
             ) -> tuple[int, dict[str, str], memoryview]:  # fmt: skip
        """``POST`` ``body``; returns ``(status, lower-cased headers, body)``.

        With ``on_record``, a 200 batch answer (:data:`~.wire.BATCH_TYPE`) is read record
        by record (:func:`~.wire.stream_records`): each ``(clip id, .npy bytes)`` goes to
        ``on_record`` as soon as its bytes are in, and the returned body is empty.
        A pooled socket that the server closed meanwhile is replaced once.

        Raises:
            OSError: (``ssl.SSLError`` included) the connection or TLS failed.
        """
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.authority}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Accept-Encoding: identity\r\n\r\n").encode("ascii")  # fmt: skip
        with self._lock:
            sock = self._idle.pop() if self._idle else None
        reused = sock is not None
        while True:
            if sock is None:
                sock = self._connect()
            try:
                sock.sendall(head + body)
                status, headers, data = self._read(sock, on_record)
                break
            except Truncated:  # records may have been handed over: never resend
                sock.close()
                raise
            except (ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError, _Stale) as exc:
                sock.close()
                if not reused:
                    if isinstance(exc, ConnectionError):
                        raise
                    raise ConnectionError(str(exc) or "connection closed") from exc
                sock, reused = None, False
            except BaseException:
                sock.close()
                raise
        self._release(sock, headers.get("connection", "").lower() != "close")
        return status, headers, data

    def _release(self, sock: ssl.SSLSocket, keep: bool) -> None:
        with self._lock:
            if keep and len(self._idle) < self.connections:
                self._idle.append(sock)
                return
        sock.close()

    @staticmethod
    def _read(sock: ssl.SSLSocket, on_record: Callable[[str, memoryview], None] | None,
              ) -> tuple[int, dict[str, str], memoryview]:  # fmt: skip
        buf = bytearray()
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > _MAX_HEAD:
                raise ConnectionError("response header over 64 KiB")
            chunk = sock.recv(_BLOCK)
            if not chunk:
                raise _Stale() if not buf else ConnectionError("connection closed mid-header")
            buf += chunk
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise ConnectionError("answer without Content-Length (chunked is not expected)")
        size = int(headers["content-length"])
        fill = _Filler(sock, memoryview(buf)[end + 4 :], size)
        if on_record is not None and status == 200 and \
                headers.get("content-type", "").startswith(BATCH_TYPE):  # fmt: skip
            for cid, data in stream_records(fill, size):
                on_record(cid, data)
            return status, headers, memoryview(b"")
        body = np.empty(size, dtype=np.uint8).data
        fill(body)
        return status, headers, body

    def close(self) -> None:
        """Close the idle sockets."""
        with self._lock:
            idle, self._idle = self._idle, []
        for s in idle:
            s.close()


def _detail(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("detail", resp.text))[:300]
    except (ValueError, AttributeError):
        return resp.text[:300]


class RemoteSite:
    """A data server reached at ``url`` with the identity bundle in ``identity``.

    Args:
        url: ``https://host:port`` of ``echoscreen datasite serve``.
        identity: folder from ``echoscreen pki issue`` (``client.crt``, ``client.key``,
            ``ca.crt``).
        connections: size of the connection pool.
        timeout_s: per-request timeout.
        retries: how often a 429 (rate limit) is retried, waiting ``Retry-After``.

    Raises:
        DatasiteError: the identity folder is incomplete.
    """

    def __init__(self, url: str, identity: Path, *, connections: int = 8,
                 timeout_s: float = 60.0, retries: int = 5) -> None:  # fmt: skip
        self.url = url.rstrip("/")
        if not self.url.startswith("https://"):
            raise DatasiteError(f"{url!r}: the data server is reached over https:// only")
        self.identity = Path(identity)
        missing = [f for f in IDENTITY_FILES if not (self.identity / f).is_file()]
        if missing:
            raise DatasiteError(
                f"{self.identity} lacks {', '.join(missing)}: pass the folder that "
                "`echoscreen pki issue TENANT --out DIR` wrote"
            )
        self.connections, self.timeout_s, self.retries = connections, timeout_s, retries
        self._client: httpx.Client | None = None
        self._blocks: BlockConnections | None = None
        self._blocks_lock = threading.Lock()
        self._session: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_client=None, _blocks=None, _blocks_lock=None)  # each process: own pools
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._blocks_lock = threading.Lock()

    def _context(self) -> ssl.SSLContext:
        from echoscreen.datasite.tls import client_context

        i = self.identity
        return client_context(str(i / "ca.crt"), str(i / "client.crt"), str(i / "client.key"))

    @property
    def client(self) -> httpx.Client:
        """The pooled HTTPS client for JSON requests (created on first use)."""
        if self._client is None:
            limits = httpx.Limits(max_connections=self.connections,
                                  max_keepalive_connections=self.connections)  # fmt: skip
            self._client = httpx.Client(base_url=self.url, verify=self._context(), limits=limits,
                                        timeout=self.timeout_s)  # fmt: skip
        return self._client

    @property
    def blocks(self) -> BlockConnections:
        """The pooled TLS sockets clip batches are read through (created on first use)."""
        with self._blocks_lock:
            if self._blocks is None:
                self._blocks = BlockConnections(self.url, self._context(), self.connections,
                                                self.timeout_s)  # fmt: skip
            return self._blocks

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """Send a request; retry 429s; turn failures into :class:`DatasiteError`.

        Raises:
            DatasiteError: TLS or connection failure, or a 4xx/5xx answer (with its reason).
        """
        for attempt in range(self.retries + 1):
            try:
                resp = self.client.request(method, path, **kw)
            except httpx.TransportError as exc:
                raise DatasiteError(
                    f"cannot talk to the data server at {self.url} ({exc.__class__.__name__}: "
                    f"{exc}); check the URL, and that the identity in {self.identity} is "
                    "issued by this site and not revoked"
                ) from exc
            if resp.status_code == 429 and attempt < self.retries:
                time.sleep(min(30.0, float(resp.headers.get("retry-after", "1"))))
                continue
            if resp.status_code >= 400:
                raise DatasiteError(
                    f"data server refused {method} {path} ({resp.status_code}): {_detail(resp)}"
                )
            return resp
        raise AssertionError("unreachable")

    def session(self) -> dict[str, Any]:
        """``GET /v1/session``: tenant, certificate serial and the server's limits."""
        if self._session is None:
            self._session = dict(self.request("GET", "/v1/session").json())
        return self._session

    @property
    def max_batch(self) -> int:
        """Most ids the server accepts in one batch."""
        return int(self.session()["limits"]["max_batch"])

    def datasets(self) -> list[dict[str, Any]]:
        """The datasets granted to this identity, with studies and clips per split."""
        return list(self.request("GET", "/v1/datasets").json()["datasets"])

    def clips(self, dataset: str, split: str | None) -> list[ClipInfo]:
        """The clips of ``dataset`` (one split, or all with ``None``)."""
        params = {"split": split} if split is not None else {}
        path = f"/v1/datasets/{quote(dataset, safe='')}/clips"
        body = self.request("GET", path, params=params).json()
        return [ClipInfo.from_json(c) for c in body["clips"]]

    def fetch(self, ids: Sequence[str]) -> list[np.ndarray]:
        """Fetch the tensors of ``ids`` in batches of at most :attr:`max_batch`.

        Returns:
            read-only ``uint8`` arrays ``(3, T, S, S)`` in the order of ``ids``.

        Raises:
            DatasiteError: refused, or the answer is malformed or incomplete.
        """
        got: dict[str, np.ndarray] = {}
        self.fetch_each(ids, got.__setitem__)
        return [got[c] for c in ids]

    def fetch_each(self, ids: Sequence[str], on_clip: Callable[[str, np.ndarray], None]) -> None:
        """Fetch ``ids`` (batches of at most :attr:`max_batch`), handing each clip over
        as soon as its bytes are in: ``on_clip(id, read-only uint8 (3, T, S, S) array)``,
        in the order of ``ids``.

        Each clip handed over is complete and authentic (the server authenticated it
        before sending it; TLS protects the way). If the answer breaks later (e.g. a
        later clip failed its integrity check at the site), the clips not yet handed
        over are not, and this raises.

        Raises:
            DatasiteError: refused, or the answer is malformed or incomplete.
        """
        step = self.max_batch
        for i in range(0, len(ids), step):
            chunk = list(ids[i : i + step])
            done = [0]

            def record(cid: str, buf: memoryview, chunk: list[str] = chunk,
                       done: list[int] = done) -> None:  # fmt: skip
                if done[0] >= len(chunk) or cid != chunk[done[0]]:
                    raise WireError("the answer's clip ids differ from those asked for")
                arr = npy_array(buf)
                arr.flags.writeable = False
                done[0] += 1
                on_clip(cid, arr)

            self._post_batch(chunk, record)
            if done[0] != len(chunk):
                raise DatasiteError(f"the data server answered {done[0]} of {len(chunk)} clips")

    def _post_batch(self, ids: list[str], on_record: Callable[[str, memoryview], None],
                    ) -> None:  # fmt: skip
        """``POST /v1/clips:batch`` through :attr:`blocks`, streaming records to
        ``on_record``; retry 429s; map failures."""
        path, body = "/v1/clips:batch", json.dumps({"ids": ids}).encode()
        for attempt in range(self.retries + 1):
            try:
                status, headers, data = self.blocks.post(path, body, "application/json",
                                                         on_record)  # fmt: skip
            except Truncated as exc:
                raise DatasiteError(
                    f"the data server at {self.url} cut its answer short ({exc}); clips that "
                    "arrived whole were kept: retry, and check that the server is running"
                ) from exc
            except WireError as exc:
                raise DatasiteError(f"malformed answer from the data server: {exc}") from exc
            except (OSError, ValueError, IndexError) as exc:
                raise DatasiteError(
                    f"cannot talk to the data server at {self.url} ({exc.__class__.__name__}: "
                    f"{exc}); check the URL, and that the identity in {self.identity} is "
                    "issued by this site and not revoked"
                ) from exc
            if status == 429 and attempt < self.retries:
                time.sleep(min(30.0, float(headers.get("retry-after", "1"))))
                continue
            if status >= 400:
                try:
                    detail = str(json.loads(bytes(data)).get("detail", ""))[:300]
                except (ValueError, AttributeError):
                    detail = bytes(data[:300]).decode("utf-8", "replace")
                raise DatasiteError(f"data server refused POST {path} ({status}): {detail}")
            if not headers.get("content-type", "").startswith(BATCH_TYPE):
                raise DatasiteError(f"unexpected answer type {headers.get('content-type')!r}")
            return
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the connection pools."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._blocks is not None:
            self._blocks.close()
            self._blocks = None
