"""Dynamic micro-batching: concurrent ``Backend.run`` calls merged into one inference call.

Job threads call :meth:`BatchingBackend.run` as they would any backend; a dispatcher
thread per model collects the calls that arrive within ``max_wait_ms`` of the first one
(up to ``max_batch`` rows), runs them as one batch on the inner backend, and hands each
caller its own rows. "view" inputs are concatenated on axis 0, and a call that does not
fit whole is split: its first rows fill the batch, the rest start the next one (so batches
run full under load); "rhd" studies (whole calls only) are padded
to the largest clip count N of the batch (padding clips: zeros, ``mask`` False, view -1),
which the model ignores, and each caller gets its outputs cut back to its own N.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from echoscreen.errors import ServiceError
from echoscreen.screen.backends import Backend
from echoscreen.service.metrics import Metrics

log = logging.getLogger(__name__)
#: outputs of "rhd" that have a clip axis (cut back to each caller's N)
PER_CLIP = ("clip_screen", "attention")
#: models whose batch rows are independent: a call's rows may be split across batches
ROW_WISE = frozenset({"view"})


@dataclass
class _Call:
    """One caller's request, waiting for its outputs (its rows may run in several batches)."""

    inputs: Mapping[str, np.ndarray]
    rows: int
    done: threading.Event = field(default_factory=threading.Event)
    outputs: dict[str, np.ndarray] | None = None
    error: BaseException | None = None
    #: first row not yet given to a batch; rows whose outputs are back
    next_row: int = 0
    rows_done: int = 0
    parts: list[Mapping[str, np.ndarray]] = field(default_factory=list)

    def add(self, piece: _Piece, outputs: Mapping[str, np.ndarray]) -> None:
        """Take a piece's outputs (pieces come back in order); wake the caller when whole."""
        if self.done.is_set():  # an earlier piece failed
            return
        self.parts.append(outputs)
        self.rows_done += piece.stop - piece.start
        if self.rows_done >= self.rows:
            ps = self.parts
            self.outputs = dict(ps[0]) if len(ps) == 1 else {
                k: np.concatenate([o[k] for o in ps]) for k in ps[0]}  # fmt: skip
            self.done.set()


@dataclass
class _Piece:
    """Rows ``[start, stop)`` of a call, in one batch (the whole call unless row-wise)."""

    call: _Call
    start: int
    stop: int

    def inputs(self, row_wise: bool) -> Mapping[str, np.ndarray]:
        """The piece's inputs (sliced on axis 0 when the model is row-wise)."""
        if not row_wise or (self.start == 0 and self.stop == self.call.rows):
            return self.call.inputs
        return {k: v[self.start : self.stop] for k, v in self.call.inputs.items()}


def merge(name: str, calls: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One batch from several callers' inputs (see the module docstring for padding)."""
    if name != "rhd":
        return {k: np.concatenate([c[k] for c in calls]) for k in calls[0]}
    n = max(c["mask"].shape[1] for c in calls)
    out: dict[str, list[np.ndarray]] = {"clips": [], "mask": [], "views": []}
    for c in calls:
        pad = n - c["mask"].shape[1]
        out["clips"].append(np.pad(c["clips"], [(0, 0), (0, pad)] + [(0, 0)] * 4))
        out["mask"].append(np.pad(c["mask"], [(0, 0), (0, pad)], constant_values=False))
        out["views"].append(np.pad(c["views"], [(0, 0), (0, pad)], constant_values=-1))
    return {k: np.concatenate(v) for k, v in out.items()}


def split(name: str, outputs: Mapping[str, np.ndarray],
          calls: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:  # fmt: skip
    """Each caller's rows (and, for "rhd", its own clip count) of a merged batch's outputs."""
    parts: list[dict[str, np.ndarray]] = []
    start = 0
    for c in calls:
        rows = next(iter(c.values())).shape[0]
        part = {k: v[start : start + rows] for k, v in outputs.items()}
        if name == "rhd":
            n = c["mask"].shape[1]
            part = {k: (v[:, :n] if k in PER_CLIP else v).copy() for k, v in part.items()}
        parts.append(part)
        start += rows
    return parts


class BatchingBackend:
    """A thread-safe :class:`~echoscreen.screen.backends.Backend` that micro-batches calls.

    Args:
        inner: the backend that runs the merged batches.
        max_batch: most rows per merged call. "view": clips; a call is split to fill a
            batch, its rest going into the next. "rhd": the callers' clips (B x N each,
            before padding); calls join whole, and a single larger one runs alone.
        max_wait_ms: how long a batch stays open for more callers after its first (ms).
        metrics: where batch sizes are recorded (``batch_size`` by model), or None.
    """

    def __init__(self, inner: Backend, max_batch: int = 16, max_wait_ms: float = 10.0,
                 metrics: Metrics | None = None) -> None:  # fmt: skip
        self.inner = inner
        self.name = inner.name
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.metrics = metrics
        self._queues: dict[str, queue.Queue[_Call | None]] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def run(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """See :meth:`Backend.run`; blocks until this call's batch has run."""
        rows = int(np.asarray(inputs["clips"]).shape[0])
        if name == "rhd":
            rows *= int(np.asarray(inputs["mask"]).shape[1])
        call = _Call(inputs=inputs, rows=rows)
        self._queue(name).put(call)
        call.done.wait()
        if call.error is not None:
            raise call.error
        assert call.outputs is not None
        return call.outputs

    def close(self) -> None:
        """Stop the dispatchers once the calls already queued have run."""
        with self._lock:
            self._closed = True
            for q in self._queues.values():
                q.put(None)
            threads = list(self._threads)
        for t in threads:
            t.join()

    def _queue(self, name: str) -> queue.Queue[_Call | None]:
        with self._lock:
            if self._closed:
                raise ServiceError("the inference batcher is closed; the service is stopping",
                                   status=503)  # fmt: skip
            if name not in self._queues:
                q: queue.Queue[_Call | None] = queue.Queue()
                t = threading.Thread(target=self._dispatch, args=(name, q),
                                     name=f"batcher-{name}", daemon=True)  # fmt: skip
                self._queues[name] = q
                self._threads.append(t)
                t.start()
            return self._queues[name]

    def _dispatch(self, name: str, q: queue.Queue[_Call | None]) -> None:
        """Dispatcher loop of one model: collect a batch, run it, repeat until closed."""
        carry: _Call | None = None
        while True:
            first = carry if carry is not None else q.get()
            if first is None:
                return
            pieces, stop, carry = self._collect(name, q, first)
            self._execute(name, pieces)
            if stop:
                return

    def _collect(self, name: str, q: queue.Queue[_Call | None],
                 call: _Call) -> tuple[list[_Piece], bool, _Call | None]:  # fmt: skip
        """Rows joining ``call`` within the window: ``(pieces, stop seen, carried call)``.

        "view" rows are independent, so a call may be split to fill the batch exactly
        (its rest is carried into the next batch); an "rhd" call joins whole or waits.
        """
        pieces: list[_Piece] = []
        total = 0
        deadline = time.monotonic() + self.max_wait
        while True:
            left = call.rows - call.next_row
            if name in ROW_WISE:
                left = min(left, self.max_batch - total)
            elif pieces and total + left > self.max_batch:
                return pieces, False, call
            pieces.append(_Piece(call, call.next_row, call.next_row + left))
            call.next_row += left
            total += left
            if call.next_row < call.rows:
                return pieces, False, call
            if total >= self.max_batch:
                return pieces, False, None
            wait = deadline - time.monotonic()
            try:
                nxt = q.get(timeout=wait) if wait > 0 else q.get_nowait()
            except queue.Empty:
                return pieces, False, None
            if nxt is None:
                return pieces, True, None
            call = nxt

    def _execute(self, name: str, pieces: list[_Piece]) -> None:
        """Run one merged batch and hand each call its rows (every call gets a failure)."""
        inputs = [p.inputs(name in ROW_WISE) for p in pieces]
        try:
            merged = inputs[0] if len(pieces) == 1 else merge(name, inputs)
            outputs = self.inner.run(name, merged)
            parts = [outputs] if len(pieces) == 1 else split(name, outputs, inputs)
            if self.metrics is not None:
                size = next(iter(merged.values())).shape[0]
                self.metrics.batch_size.labels(model=name).observe(size)
        except BaseException as exc:  # every caller must wake up, with the failure
            log.exception("inference batch of %d %s piece(s) failed", len(pieces), name)
            for p in pieces:
                p.call.error = exc
                p.call.done.set()
            return
        for p, part in zip(pieces, parts, strict=True):
            p.call.add(p, part)
