"""A thread-per-connection HTTP/1.1 server over blocking TLS sockets that runs an ASGI app.

Why not uvicorn: the data server's bulk answers are clip tensors (tens of MB per
request). Under asyncio every byte went through one event-loop thread: the TLS
transport encrypted into a memory BIO, copied the records out into Python bytes and
wrote those to the socket, 16 KB at a time. Here each connection has its own thread
and a blocking ``ssl.SSLSocket``: a body part (a view of the decrypted clip, not a
copy) goes to ``SSLSocket.sendall`` in one call, which encrypts and writes straight to
the socket with the GIL released, so connections encrypt in parallel.

The application is unchanged: each connection runs its requests as one coroutine on
its own asyncio loop (``run_in_threadpool`` in the app still works; :func:`run_blocking`
skips that hop here, where blocking the loop blocks only this connection), with the ASGI
``scope`` uvicorn would build plus ``scope["extensions"]["tls"]``
(:func:`~.tls.tls_extension`). HTTP parsing and framing are h11's, as under uvicorn.

TLS: the context decides (TLS 1.3, client certificate required). A handshake refused
by the TLS layer is reported to ``on_refused`` (the audit log), then the socket closes.
Bounds: request head 16 KiB; ``keep_alive_s`` for any read. Handshakes are bounded
apart from established connections, so unauthenticated connections cannot starve
tenants: at most ``max_handshakes`` at once (a new one evicts the oldest) and
``handshake_timeout_s`` in all for each (also swept from the accept loop, however
slowly their bytes trickle). Only connections whose handshake succeeded (a client
certificate of this site's CA) count toward ``max_connections``; more are closed.
``should_exit`` stops accepting; requests in progress get ``grace_s`` to finish
(their audit records are committed before their responses complete).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import unquote

import h11
from starlette.concurrency import run_in_threadpool

from echoscreen.datasite.tls import tls_extension
from echoscreen.errors import cannot_listen

log = logging.getLogger("echoscreen.datasite")
#: ASGI extension this server adds to every scope: the request runs in its connection's
#: own thread, so the app may call blocking code inline (see :func:`run_blocking`)
INLINE = "echoscreen.inline_blocking"
_MAX_HEAD = 16 * 1024
_RECV = 64 * 1024
T = TypeVar("T")


class AbortAnswer(Exception):
    """Raised by an app to end an answer it has begun, without completing it: the
    connection is closed short of its ``Content-Length``, so the client sees the answer
    broken (e.g. a clip failed authentication after earlier clips were sent)."""


async def run_blocking(scope: Mapping[str, Any], fn: Callable[..., T], *args: Any) -> T:
    """Call blocking ``fn(*args)`` from an ASGI app: inline under this server, else in
    starlette's thread pool (an event loop shared by connections must not block)."""
    if INLINE in (scope.get("extensions") or {}):
        return fn(*args)
    return await run_in_threadpool(fn, *args)


class ThreadedServer:
    """Serve ``app`` over TLS on ``host:port``, one thread per connection.

    Interface as ``uvicorn.Server``'s: :meth:`run` blocks; ``started`` turns true once
    listening; setting ``should_exit`` stops it.

    Args:
        app: the ASGI application.
        ctx: the server TLS context.
        host: address to listen on.
        port: TCP port.
        on_refused: called with the reason of each handshake the TLS layer refuses.
        keep_alive_s: socket timeout of every read once the handshake is done.
        handshake_timeout_s: the most a handshake may take in all (seconds).
        max_connections: established (authenticated) connections served at once.
        max_handshakes: handshakes in progress at once; one more evicts the oldest.
        grace_s: how long requests in progress may take to finish at shutdown.
        on_listening: called with ``(host, port)`` once the socket is bound and listening
            (``port`` the one bound: a free one when 0 was asked for).
    """

    def __init__(self, app: Any, ctx: ssl.SSLContext, host: str, port: int, *,
                 on_refused: Callable[[str], None] | None = None, keep_alive_s: float = 30.0,
                 handshake_timeout_s: float = 10.0, max_connections: int = 64,
                 max_handshakes: int = 128, grace_s: float = 10.0,
                 on_listening: Callable[[str, int], None] | None = None) -> None:  # fmt: skip
        self.app, self.ctx, self.host, self.port = app, ctx, host, port
        self.on_refused, self.on_listening = on_refused, on_listening
        self.keep_alive_s, self.handshake_timeout_s = keep_alive_s, handshake_timeout_s
        self.max_connections, self.max_handshakes = max_connections, max_handshakes
        self.grace_s = grace_s
        self.started = False
        self.should_exit = False
        self._lock = threading.Lock()
        # accepted socket -> [busy with a request, the socket in use (TLS once wrapped)]
        self._open: dict[socket.socket, list[Any]] = {}
        # accepted socket still in its handshake -> [deadline, the socket in use]; oldest first
        self._pending: dict[socket.socket, list[Any]] = {}

    def run(self) -> None:
        """Listen and serve until ``should_exit``; then close connections and return."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            listener = socket.create_server((self.host, self.port), family=family, backlog=128)
        except OSError as exc:
            raise cannot_listen(self.host, self.port, exc) from None
        listener.settimeout(0.2)
        self.port = int(listener.getsockname()[1])
        self.started = True
        if self.on_listening is not None:
            self.on_listening(self.host, self.port)
        try:
            while not self.should_exit:
                self._sweep()
                try:
                    raw, addr = listener.accept()
                except (TimeoutError, InterruptedError):
                    continue
                except OSError:  # e.g. out of file descriptors: wait, keep serving
                    log.exception("data server could not accept a connection")
                    time.sleep(0.5)
                    continue
                with self._lock:  # the oldest handshake makes room (its thread sees it gone)
                    evict = (self._pending.pop(next(iter(self._pending)))[1]
                             if len(self._pending) >= self.max_handshakes else None)  # fmt: skip
                    self._pending[raw] = [time.monotonic() + self.handshake_timeout_s, raw]
                if evict is not None:
                    _cut(evict)  # its thread fails the handshake and forgets it
                threading.Thread(target=self._connection, args=(raw, addr), daemon=True,
                                 name="datasite-conn").start()  # fmt: skip
        finally:
            listener.close()
            with self._lock:
                pending = [s for _, s in self._pending.values()]
            for s in pending:
                _cut(s)
            self._drain()

    def _sweep(self) -> None:
        """Cut the handshakes past their deadline: CPython's ``do_handshake`` already
        spends the socket timeout on the whole handshake, this makes it our guarantee."""
        now = time.monotonic()
        with self._lock:
            late = [raw for raw, (deadline, _) in self._pending.items() if deadline < now]
            cuts = [self._pending.pop(raw)[1] for raw in late]
        for s in cuts:
            _cut(s)

    def _drain(self) -> None:
        deadline = time.monotonic() + self.grace_s
        while True:
            with self._lock:
                busy = [s for b, s in self._open.values() if b]
                idle = [s for b, s in self._open.values() if not b]
            for s in idle if busy and time.monotonic() < deadline else idle + busy:
                _cut(s)
            if not busy or time.monotonic() >= deadline:
                return
            time.sleep(0.02)

    def _handshake(self, raw: socket.socket) -> ssl.SSLSocket | None:
        """The TLS socket once the handshake succeeded; ``None`` (closed) otherwise."""
        raw.settimeout(self.handshake_timeout_s)  # the whole handshake (and _sweep)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = None
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            with self._lock:  # wrapping detached ``raw``: a cut must go to ``tls``
                if raw not in self._pending:
                    raise ConnectionAbortedError("evicted or timed out before it began")
                self._pending[raw][1] = tls
            tls.do_handshake()
            tls.settimeout(self.keep_alive_s)
            return tls
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            pass  # closed before TLS began (a port probe, a cut): nothing was refused
        except ssl.SSLError as exc:
            with self._lock:
                cut = raw not in self._pending
            if self.on_refused is not None and not cut:
                self.on_refused(f"TLS handshake refused: {exc.reason or exc}")
        except OSError:  # timed out, cut, reset
            pass
        if tls is not None:
            tls.close()
        return None

    def _established(self, raw: socket.socket, tls: ssl.SSLSocket) -> bool:
        """Move a connection from handshaking to established, if there is room for it."""
        with self._lock:
            if self._pending.pop(raw, None) is None or len(self._open) >= self.max_connections:
                return False  # cut meanwhile, or full
            self._open[raw] = [False, tls]
            return True

    def _connection(self, raw: socket.socket, addr: Any) -> None:
        tls = None
        try:
            tls = self._handshake(raw)
            if tls is not None and self._established(raw, tls):
                loop = asyncio.new_event_loop()
                try:
                    loop.run_until_complete(_Connection(self, raw, tls, addr).serve())
                finally:
                    loop.close()
        except Exception:  # a connection's failure must not reach the accept loop
            log.exception("data server connection from %s failed", addr)
        finally:
            with self._lock:
                self._open.pop(raw, None)
                self._pending.pop(raw, None)
            (tls or raw).close()

    def mark(self, raw: socket.socket, busy: bool) -> None:
        """Note whether the connection accepted as ``raw`` is in the middle of a request."""
        with self._lock:
            if raw in self._open:
                self._open[raw][0] = busy


def _cut(sock: socket.socket) -> None:
    """Shut a connection's socket down from another thread: the fd only
    (``SSLSocket.shutdown`` would drop its TLS state under the thread using it); wakes
    that thread's blocked handshake or recv, and it closes the socket."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Connection:
    """The requests of one TLS connection, in order (HTTP/1.1 keep-alive)."""

    def __init__(self, server: ThreadedServer, raw: socket.socket, tls: ssl.SSLSocket,
                 addr: Any) -> None:  # fmt: skip
        self.server, self.raw, self.tls = server, raw, tls
        self.client = (str(addr[0]), int(addr[1]))
        self.tls_ext = tls_extension(tls)
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)

    def _event(self) -> Any:
        """The next h11 event, reading from the socket as needed."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = self.tls.recv(_RECV)
            except (TimeoutError, ssl.SSLError, OSError):
                data = b""
            self.h11.receive_data(data)

    def _write(self, event: Any) -> None:
        for piece in self.h11.send_with_data_passthrough(event) or ():
            if len(piece):
                self.tls.sendall(piece)

    async def serve(self) -> None:
        """Serve requests until the peer closes, a timeout, an error or shutdown."""
        while not self.server.should_exit:
            try:
                event = self._event()
            except h11.RemoteProtocolError as exc:
                self._refuse(exc.error_status_hint, f"malformed request: {exc}")
                return
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed (or timeout) between requests
            self.server.mark(self.raw, True)
            try:
                ok = await self._request(event)
            finally:
                self.server.mark(self.raw, False)
            if not ok or self.h11.our_state is not h11.DONE:
                return
            if self.h11.their_state is not h11.DONE:
                self._drain_body()
            if self.h11.their_state is not h11.DONE:
                return
            self.h11.start_next_cycle()

    def _drain_body(self) -> None:
        """Read the rest of a request body the app did not read (bounded), or give up."""
        read = 0
        while read <= 1 << 20:
            try:
                event = self._event()
            except h11.RemoteProtocolError:
                return
            if isinstance(event, h11.EndOfMessage):
                return
            if not isinstance(event, h11.Data):
                return
            read += len(event.data)

    def _scope(self, req: h11.Request) -> dict[str, Any] | None:
        raw_path, _, query = bytes(req.target).partition(b"?")
        try:
            path = unquote(raw_path.decode("ascii"))
        except UnicodeDecodeError:
            return None
        return {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": req.http_version.decode("ascii"), "scheme": "https",
            "method": req.method.decode("ascii"), "root_path": "", "path": path,
            "raw_path": raw_path, "query_string": query,
            "headers": [(k.lower(), v) for k, v in req.headers],
            "server": (self.server.host, self.server.port), "client": self.client,
            "extensions": {"tls": self.tls_ext, INLINE: {}}, "state": {},
        }  # fmt: skip

    async def _request(self, req: h11.Request) -> bool:
        """Run the app for one request; whether the connection may carry another."""
        scope = self._scope(req)
        if scope is None:
            self._refuse(400, "request target is not ASCII")
            return False
        state = {"started": False, "body_done": False}
        complete = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if state["body_done"]:
                await complete.wait()
                return {"type": "http.disconnect"}
            if self.h11.client_is_waiting_for_100_continue:
                self._write(h11.InformationalResponse(status_code=100, headers=[]))
            event = self._event()
            if isinstance(event, h11.Data):
                return {"type": "http.request", "body": bytes(event.data), "more_body": True}
            state["body_done"] = True
            if isinstance(event, h11.EndOfMessage):
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                self._write(h11.Response(status_code=int(message["status"]),
                                         headers=list(message.get("headers", []))))  # fmt: skip
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if len(body):
                    self._write(h11.Data(data=body))
                if not message.get("more_body", False):
                    self._write(h11.EndOfMessage())
                    complete.set()

        try:
            await self.server.app(scope, receive, send)
        except h11.RemoteProtocolError as exc:  # a malformed or cut-short request body
            if not state["started"]:
                self._refuse(exc.error_status_hint, f"malformed request: {exc}")
            return False
        except (OSError, h11.LocalProtocolError):
            return False  # the peer went away mid-answer, or the app broke the framing
        except AbortAnswer as exc:
            log.warning("data server aborted its answer to %s %s: %s", scope["method"],
                        scope["path"], exc)  # fmt: skip
            if not state["started"]:
                self._refuse(500, "internal error")
            return False
        except Exception:
            log.exception("data server app failed on %s %s", scope["method"], scope["path"])
            if not state["started"]:
                self._refuse(500, "internal error")
            return False
        return complete.is_set()

    def _refuse(self, status: int, reason: str) -> None:
        """Answer with a JSON error and close (only while no answer has begun)."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = json.dumps({"detail": reason}).encode()
        try:
            self._write(h11.Response(status_code=status, headers=[
                (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                (b"connection", b"close")]))  # fmt: skip
            self._write(h11.Data(data=body))
            self._write(h11.EndOfMessage())
        except (OSError, h11.LocalProtocolError):
            pass
