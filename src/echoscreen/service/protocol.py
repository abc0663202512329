"""uvicorn's HTTP/1.1 protocol (h11), with a deadline on each request's head.

uvicorn bounds an idle keep-alive connection (``timeout_keep_alive``), but that timer
is cancelled by the first byte that arrives, and a connection that has sent nothing yet
has no timer at all. A client that opens connections and sends nothing, or sends a
request line and then one header byte every few seconds (slowloris), held each
connection, its socket and its buffers for as long as it liked. The body of a request
is bounded by the app (``ServiceConfig.upload_idle_s``); the head is read before the
app sees the request, so it is bounded here:

* a new connection must deliver a complete request head within ``head_timeout_s``;
* after a response, an idle connection is uvicorn's (closed after
  ``timeout_keep_alive``); the next request's first byte starts a new
  ``head_timeout_s`` for its head, and so does a pipelined request whose head was
  only partly read when the previous response ended.

Past the deadline the client gets ``408 Request Timeout`` with ``Connection: close``
and the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_MESSAGE = b"request head not received in time; connection closed\n"
#: written as is: h11 cannot frame a response to a request it has not parsed yet
_HEAD = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
         b"connection: close\r\ncontent-length: %d\r\n\r\n")  # fmt: skip
TIMEOUT_408 = _HEAD % len(_MESSAGE) + _MESSAGE


class HeadTimeoutH11Protocol(H11Protocol):
    """:class:`H11Protocol` whose request heads must arrive within :attr:`head_timeout_s`.

    Use :func:`with_head_timeout` to get the class for a given deadline (uvicorn builds
    the protocol itself, so the deadline is a class attribute).
    """

    head_timeout_s: float = 20.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_deadline is None and self._between_requests():
            self._arm_head_deadline()  # the first byte of the next request
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self._head_deadline is not None and not self._between_requests():
            self._disarm_head_deadline()  # a Request event started a cycle: the head is in

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if (self._head_deadline is None and self._between_requests()
                and self.conn.trailing_data[0]):  # fmt: skip
            self._arm_head_deadline()  # a pipelined request's head, partly read

    def _between_requests(self) -> bool:
        """True while no request is being served: none yet, or the last one answered."""
        return self.cycle is None or self.cycle.response_complete

    def _arm_head_deadline(self) -> None:
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing() or not self._between_requests():
            return
        if self.conn.our_state is h11.IDLE:  # nothing of a response written yet
            self.transport.write(TIMEOUT_408)
        self.transport.close()


def with_head_timeout(seconds: float) -> type[HeadTimeoutH11Protocol]:
    """The protocol class (for ``uvicorn.Config(http=...)``) with this head deadline."""
    return type("HeadTimeoutH11Protocol", (HeadTimeoutH11Protocol,), {"head_timeout_s": seconds})
