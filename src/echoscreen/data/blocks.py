"""The keep-alive TLS sockets clip batches are read through (bypassing httpx).

httpx capped a client core at about 100 MB/s on clip batches: :class:`BlockConnections`
keeps its own pool of TLS sockets from the client's mTLS context, speaks the one HTTP/1.1
form the data server answers batches with (``Content-Length``, no chunking) and reads
each clip with ``recv_into`` straight into the buffer handed over. Nothing is written to
disk.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

import numpy as np

from echoscreen.datasite.wire import BATCH_TYPE, stream_records

_MAX_HEAD = 64 * 1024
_BLOCK = 1 << 20


class _Stale(Exception):
    """A pooled socket the server closed before answering (retried once, fresh)."""


class Truncated(ConnectionError):
    """The server closed the connection before the whole answer arrived."""


class _Filler:
    """Fills views with a body's next bytes: first those read with the head, then
    straight into the view, one TLS record (at most 16 KiB) a call.

    The reads go to the socket's ``_sslobj.read`` (what ``SSLSocket.recv_into`` calls
    after two Python-level checks that hold for the whole body): a clip is about 30
    records, and those checks were a tenth of the reader's CPU. A socket without it
    (another Python) is read with ``recv_into``.
    """

    def __init__(self, sock: ssl.SSLSocket, early: memoryview, size: int) -> None:
        self.sock, self.early, self.size, self.have = sock, early, size, 0
        obj = getattr(sock, "_sslobj", None)
        self.read = obj.read if obj is not None and hasattr(obj, "read") else None

    def __call__(self, view: memoryview) -> None:
        pos = min(len(self.early), len(view))
        view[:pos] = self.early[:pos]
        self.early = self.early[pos:]
        end, read = len(view), self.read
        while pos < end:
            try:
                if read is not None:
                    n = read(end - pos, view[pos:])
                else:
                    n = self.sock.recv_into(view[pos:], min(_BLOCK, end - pos))
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
