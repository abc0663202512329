"""``SrOutbox``: SRs the PACS could not take, kept in memory and sent again.

When the PACS cannot be reached (or answers 5xx) through all of
:func:`~echoscreen.service.pacs.sr_sender`'s tries, the SR goes here instead of being
dropped. It is sent again after the next SR the PACS stores and every ``retry_s``
seconds by a background thread, oldest first, until the PACS takes it. The outbox holds
at most ``capacity`` SRs: a new one past that drops the oldest, logged with its job id.
SRs carry patient data, so they are never written to disk: an outbox still holding SRs
when the service stops logs their job ids and drops them (each result stays readable
from the API until it expires). A refusal of the SR itself (4xx, Failed SOP Sequence) is
not kept: the same SR would be refused again.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

import httpx
from pydicom.dataset import Dataset

from echoscreen.errors import ServiceError

if TYPE_CHECKING:
    from echoscreen.service.metrics import Metrics

log = logging.getLogger(__name__)


def retryable(exc: ServiceError) -> bool:
    """The PACS could not be reached or answered 5xx (not a refusal of the SR itself)."""
    return isinstance(exc.__cause__, httpx.HTTPError)


class SrOutbox:
    """A bounded, in-memory queue of SRs waiting for the PACS; thread-safe.

    Args:
        url: the PACS's DICOMweb root (``ServiceConfig.pacs``).
        capacity: most SRs kept (``ServiceConfig.sr_outbox_size``).
        retry_s: seconds between background resends (``ServiceConfig.sr_retry_s``).
        timeout: seconds per STOW-RS request.
        metrics: where ``echoscreen_sr_outbox`` and ``echoscreen_sr_dropped_total`` go.
    """

    def __init__(self, url: str, *, capacity: int = 100, retry_s: float = 60.0,
                 timeout: float = 30.0, metrics: Metrics | None = None) -> None:  # fmt: skip
        self.url, self.capacity, self.retry_s, self.timeout = url, capacity, retry_s, timeout
        self.metrics = metrics
        self.dropped = 0
        self._items: OrderedDict[str, Dataset] = OrderedDict()
        self._lock = threading.Lock()
        self._sending = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def put(self, job_id: str, sr: Dataset) -> None:
        """Keep a job's SR to send later (a second SR of the same job replaces the first)."""
        with self._lock:
            self._items.pop(job_id, None)
            while len(self._items) >= self.capacity:
                old, _ = self._items.popitem(last=False)
                self.dropped += 1
                log.warning("job %s: SR dropped, never stored on the PACS: the outbox is full "
                            "(%d SRs waiting); its result stays readable from the API", old,
                            self.capacity)  # fmt: skip
                if self.metrics is not None:
                    self.metrics.sr_dropped.inc()
            self._items[job_id] = sr
            self._count()

    def flush(self) -> int:
        """Send the waiting SRs, oldest first, until the PACS fails; returns how many it took.

        Returns 0 at once when another flush is running.
        """
        from echoscreen.service.pacs import stow

        if not self._sending.acquire(blocking=False):
            return 0
        sent = 0
        try:
            while True:
                with self._lock:
                    if not self._items:
                        return sent
                    job_id, sr = next(iter(self._items.items()))
                try:
                    stow(self.url, [sr], timeout=self.timeout)
                except ServiceError as exc:
                    if retryable(exc):
                        log.info("job %s: SR still not stored (the PACS is unavailable); %d "
                                 "waiting", job_id, len(self))  # fmt: skip
                        return sent
                    log.error("job %s: SR refused by the PACS and dropped: %s", job_id, exc)
                else:
                    sent += 1
                    log.info("job %s: SR from the outbox stored on the PACS", job_id)
                with self._lock:
                    if self._items.get(job_id) is sr:
                        del self._items[job_id]
                    self._count()
        finally:
            self._sending.release()

    def start(self) -> None:
        """Start the background thread that flushes every ``retry_s`` seconds."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="sr-outbox", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the thread; SRs still waiting are dropped (never written), logged by job."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)
        with self._lock:
            left = list(self._items)
            self._items.clear()
            self._count()
        if left:
            log.warning("stopping with %d SRs not stored on the PACS (dropped; jobs %s); "
                        "their results stay readable from the API until they expire",
                        len(left), ", ".join(left))  # fmt: skip

    def _loop(self) -> None:
        while not self._stop.wait(self.retry_s):
            if len(self):
                try:
                    self.flush()
                except Exception:  # never let the resend thread die
                    log.exception("resending SRs from the outbox failed")

    def _count(self) -> None:
        if self.metrics is not None:
            self.metrics.sr_outbox.set(len(self._items))
