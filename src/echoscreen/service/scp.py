"""The service as a DICOM C-STORE SCP (``echoscreen serve --dicom-port 11112``).

A scanner (or a PACS, or dcmtk's ``storescu``) pushes a study; when its association
ends, each study it carried is submitted to the :class:`ScreeningEngine` as one job
(client ``dimse:{calling AE title}``, source ``"dimse"``), with ``on_done`` (typically
:func:`echoscreen.service.pacs.sr_sender`) called once the result is stored. Receiving
is :class:`echoscreen.ingest.scp.StoreSCP`'s work (each study it delivers names the
calling AE title as ``sender``); this module hands studies to the engine.

Every association holds its instances on the engine's byte budget (``engine.budget``,
``max_queued_bytes``) as they arrive; an instance that would take the bytes held over
the bound is answered 0xA700 (Refused: Out of Resources), logged and counted
(``echoscreen_scp_out_of_resources_total``), and the scanner sends it again later. Each
study's share of the hold goes to its job, which gives it back when it ends; a study
not screened gives it back at once.

The sender has been told every instance was stored before the study is screened, so a
study the engine cannot take right now (queue full) is retried for a while rather than
dropped, its bytes held meanwhile; a study it refuses (not screenable) is logged with
the reason and dropped.
Log lines name the job id, the calling AE title and the instance count, never patient
data.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from echoscreen.errors import BadStudyError, OverloadedError, ServiceError
from echoscreen.ingest.base import StudyBatch
from echoscreen.ingest.scp import StoreSCP
from echoscreen.service.budget import Hold

if TYPE_CHECKING:
    from echoscreen.service.config import ServiceConfig
    from echoscreen.service.engine import ScreeningEngine
    from echoscreen.service.pacs import OnDone

log = logging.getLogger(__name__)

#: how long a study waits in total for room in a full engine queue (s)
OVERLOAD_PATIENCE_S = 120.0


class ScpHandle:
    """A running C-STORE SCP that feeds the engine; :meth:`stop` ends it.

    Attributes:
        port: the TCP port bound; ae_title: the AE title callers must address.
        submitted: job ids of the studies submitted so far, in order.
        refused: reasons of studies the engine refused (fixed text, no patient data).
    """

    def __init__(self, cfg: ServiceConfig, engine: ScreeningEngine, on_done: OnDone | None,
                 patience_s: float = OVERLOAD_PATIENCE_S) -> None:  # fmt: skip
        self._engine = engine
        self._on_done = on_done
        self._patience_s = patience_s
        self._lock = threading.Lock()
        self.submitted: list[str] = []
        self.refused: list[str] = []
        port = cfg.dicom_port if cfg.dicom_port is not None else 11112
        self._scp = StoreSCP(self._on_study, port=port, ae_title=cfg.ae_title, host=cfg.host,
                             reserve=engine.budget.hold,
                             on_refusal=lambda _: engine.metrics.scp_refused.inc())  # fmt: skip

    @property
    def port(self) -> int:
        return self._scp.port

    @property
    def ae_title(self) -> str:
        return self._scp.ae_title

    def start(self) -> None:
        """Listen (returns at once). Raises IngestError when the port cannot be bound."""
        self._scp.start()

    def stop(self) -> None:
        """Stop listening and submit every study already received (then return)."""
        self._scp.stop()

    def _on_study(self, batch: StudyBatch) -> None:
        """Submit one received study; its hold goes to the job, else it is given back."""
        hold = batch.hold if isinstance(batch.hold, Hold) else self._engine.budget.hold()
        try:
            self._submit(batch, hold)
        finally:
            if hold.job is None:  # not screened: its bytes are dropped with it
                hold.release()

    def _submit(self, batch: StudyBatch, hold: Hold) -> None:
        caller = batch.sender or "UNKNOWN"
        files = [(f"dimse-{i:04d}.dcm", inst.data) for i, inst in enumerate(batch.instances)]
        if not files:
            self._refuse(caller, f"{len(batch.unreadable)} instance(s), none readable as DICOM")
            return
        deadline = time.monotonic() + self._patience_s
        while True:
            try:
                job = self._engine.submit(files, client=f"dimse:{caller}", source="dimse",
                                          on_done=self._on_done, hold=hold)  # fmt: skip
            except OverloadedError as exc:
                if time.monotonic() + exc.retry_after > deadline:
                    self._refuse(caller, f"the service stayed overloaded: {exc}")
                    return
                time.sleep(exc.retry_after)
                continue
            except (BadStudyError, ServiceError) as exc:
                self._refuse(caller, str(exc))
                return
            break
        with self._lock:
            self.submitted.append(job)
        log.info("study from %s (%d instances) screened as job %s", caller, len(files), job)

    def _refuse(self, caller: str, reason: str) -> None:
        with self._lock:
            self.refused.append(reason)
        log.warning("study from %s not screened: %s", caller, reason)


def start_scp(cfg: ServiceConfig, engine: ScreeningEngine, on_done: OnDone | None = None,
              ) -> ScpHandle:  # fmt: skip
    """Start the C-STORE SCP of the service on ``cfg.host:cfg.dicom_port``.

    Args:
        cfg: the service settings (``dicom_port``: 0 picks a free port, see
            :attr:`ScpHandle.port`; ``ae_title``: the called AE title callers must use).
        engine: a started engine; each received study becomes one of its jobs.
        on_done: passed to :meth:`ScreeningEngine.submit` (e.g. ``sr_sender(cfg.pacs)``).

    Returns:
        The running handle; call ``.stop()`` on shutdown (before closing the engine).

    Raises:
        IngestError: the port cannot be bound.
    """
    handle = ScpHandle(cfg, engine, on_done)
    handle.start()
    return handle
