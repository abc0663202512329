"""A DICOM C-STORE SCP, so scanners and PACS push studies to the data site.

Each association's instances are collected in memory and grouped by study;
when the association ends (released, or aborted after instances were
acknowledged, since the sender will not send them again) every study it
carried is handed to ``on_study``. Calls to ``on_study`` happen one at a time
on a single worker thread, so the ingest behind it never runs concurrently
with itself, and a slow ingest never stalls the network threads.

Instances are kept as the sender encoded them (``Event.encoded_dataset``): no
decoding or re-encoding on the way in. What an association holds is bounded by
``max_association_bytes`` and, given ``reserve``, by a memory budget shared with the
rest of the receiver (the screening service's): each instance grows the association's
reservation before it is kept, each study delivered takes its share of it along
(:attr:`StudyBatch.hold`). An instance past either bound is answered 0xA700 (Refused:
Out of Resources, PS3.4 Annex B), so the sender keeps it and sends it again later;
what was already acknowledged is delivered.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from echoscreen.errors import EchoscreenError, IngestError, cannot_listen
from echoscreen.ingest.base import Instance, Reservation, StudyBatch, group_by_study

log = logging.getLogger(__name__)

#: the storage SOP classes a screening site accepts: ultrasound and screen captures
STORAGE_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
    "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
)
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

STATUS_SUCCESS = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_OUT_OF_RESOURCES = 0xA700


def preferred_transfer_syntaxes() -> list[str]:
    """Every transfer syntax pynetdicom knows, in the order this SCP prefers them.

    When a presentation context offers several, the acceptor's order decides.
    Explicit VR little endian and lossless encodings come first; lossy ones
    (JPEG baseline, lossy JPEG 2000, MPEG) last, so a sender holding
    uncompressed pixels is never asked to compress them lossily for us. A
    sender that proposes a lossy syntax in a context of its own (as scanners
    and storescu do for JPEG files) still gets it accepted unchanged.
    """
    from pydicom import uid as uids
    from pynetdicom import ALL_TRANSFER_SYNTAXES

    lossless = {
        uids.RLELossless,
        uids.JPEGLossless,
        uids.JPEGLosslessSV1,
        uids.JPEG2000Lossless,
        uids.JPEG2000MCLossless,
        uids.JPEGLSLossless,
        uids.HTJ2KLossless,
        uids.HTJ2KLosslessRPCL,
    }

    def rank(ts: str) -> int:
        uid = uids.UID(ts)
        if uid == uids.ExplicitVRLittleEndian:
            return 0
        if uid in lossless:
            return 1
        if uid.is_compressed:
            return 5  # lossy (or unknown) encapsulated syntaxes
        if uid.is_deflated:
            return 2
        return 3 if uid.is_implicit_VR else 4

    return sorted(ALL_TRANSFER_SYNTAXES, key=rank)


@dataclass
class _Association:
    """What one association delivered so far: its instances, caller, bytes, reservation."""

    caller: str
    hold: Reservation | None
    instances: list[Instance] = field(default_factory=list)
    nbytes: int = 0


class StoreSCP:
    """C-STORE (and C-ECHO) service class provider that delivers whole studies.

    Args:
        on_study: called with each study an association delivered, after it ends; it
            owns the batch's ``hold`` (given ``reserve``): it hands it on or releases it.
        port: TCP port to listen on (0 picks a free one; see :attr:`port`).
        ae_title: the AE title callers must address.
        host: interface to bind; loopback by default, give ``0.0.0.0`` to serve a network.
        max_association_bytes: refuse instances once an association holds this much.
        reserve: makes each association's (empty) reservation on the receiver's memory
            budget; an instance that cannot grow it (``EchoscreenError``) is refused.
            None: only ``max_association_bytes`` bounds an association.
        on_refusal: called with the reason of every C-STORE answered 0xA700 (a metric).
    """

    def __init__(
        self,
        on_study: Callable[[StudyBatch], None],
        *,
        port: int = 11112,
        ae_title: str = "ECHOSCREEN",
        host: str = "127.0.0.1",
        max_association_bytes: int = 8 * 1024**3,
        reserve: Callable[[], Reservation] | None = None,
        on_refusal: Callable[[str], None] | None = None,
    ) -> None:
        if not ae_title or len(ae_title) > 16:
            raise IngestError(f"AE title {ae_title!r} must be 1 to 16 characters")
        self.on_study = on_study
        self.host = host
        self.ae_title = ae_title
        self.max_association_bytes = max_association_bytes
        self._reserve = reserve
        self._on_refusal = on_refusal
        self._requested_port = port
        self._pending: dict[int, _Association] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[StudyBatch | None] = queue.Queue()
        self._server: Any = None
        self._worker: threading.Thread | None = None
        self.delivered = 0

    @property
    def port(self) -> int:
        """The port actually bound (useful when constructed with port 0)."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    def _application_entity(self) -> Any:
        from pynetdicom import AE

        syntaxes = preferred_transfer_syntaxes()
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        for uid in STORAGE_SOP_CLASSES:
            ae.add_supported_context(uid, syntaxes)
        ae.add_supported_context(VERIFICATION_SOP_CLASS, syntaxes)
        ae.maximum_pdu_size = 0  # no limit: large cine loops arrive in fewer PDUs
        return ae

    def start(self) -> None:
        """Start listening in the background (returns at once).

        Raises:
            ConfigError: the port cannot be bound (in use, privileged, not this host's).
        """
        from pynetdicom import evt

        if self._server is not None:
            return
        handlers = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end),
        ]
        self._worker = threading.Thread(target=self._deliver, name="storescp-ingest", daemon=True)
        self._worker.start()
        try:
            self._server = self._application_entity().start_server(
                (self.host, self._requested_port), block=False, evt_handlers=handlers
            )
        except OSError as exc:
            self._queue.put(None)
            raise cannot_listen(self.host, self._requested_port, exc) from None

    def stop(self) -> None:
        """Stop listening, then wait until every received study has been delivered."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        with self._lock:
            leftovers = list(self._pending)
        for key in leftovers:
            self._flush(key)
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()
            self._worker = None

    def __enter__(self) -> StoreSCP:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- event handlers (run on pynetdicom's association threads) ----

    @staticmethod
    def _on_echo(event: Any) -> int:
        return STATUS_SUCCESS

    def _on_store(self, event: Any) -> int:
        try:
            data = bytes(event.encoded_dataset())
        except Exception:  # malformed dataset or meta from the peer
            log.warning("C-STORE refused: the dataset could not be encoded")
            return STATUS_CANNOT_UNDERSTAND
        key = id(event.assoc)
        peer = f"dicom://{event.assoc.requestor.address}"
        caller = str(event.assoc.requestor.ae_title).strip()
        with self._lock:
            assoc = self._pending.get(key)
            if assoc is None:
                hold = self._reserve() if self._reserve is not None else None
                assoc = self._pending[key] = _Association(caller, hold)
            size = assoc.nbytes + len(data)
            try:
                if size > self.max_association_bytes:
                    raise IngestError(f"the association holds {size >> 20} MiB, more than "
                                      f"{self.max_association_bytes >> 20} MiB")  # fmt: skip
                if assoc.hold is not None:
                    assoc.hold.resize(size)  # before the instance is kept
            except EchoscreenError as exc:
                refused = str(exc)
            else:
                assoc.instances.append(Instance(data, f"{peer} #{len(assoc.instances) + 1}"))
                assoc.nbytes = size
                return STATUS_SUCCESS
        # the reason is fixed text and sizes: never a UID or other header value
        log.warning("C-STORE from %s answered 0xA700 (out of resources), to be sent again "
                    "later: %s", caller or "UNKNOWN", refused)  # fmt: skip
        if self._on_refusal is not None:
            self._on_refusal(refused)
        return STATUS_OUT_OF_RESOURCES

    def _on_end(self, event: Any) -> None:
        self._flush(id(event.assoc))

    def _flush(self, key: int) -> None:
        with self._lock:
            assoc = self._pending.pop(key, None)
        if assoc is None:
            return
        try:
            for batch in group_by_study(assoc.instances):
                batch.sender = assoc.caller
                if assoc.hold is not None:  # its bytes go with it, held until it is done
                    batch.hold = assoc.hold.split(batch.nbytes)
                self._queue.put(batch)
        finally:
            if assoc.hold is not None:
                assoc.hold.release()  # what no batch took (a DICOMDIR)

    # ---- delivery (one worker thread) ----

    def _deliver(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            try:
                self.on_study(batch)
            except Exception as exc:  # keep listening; the message names no patient data
                log.error(
                    "ingest of a received study failed (%s); the listener keeps running",
                    type(exc).__name__,
                )
            finally:
                self.delivered += 1
