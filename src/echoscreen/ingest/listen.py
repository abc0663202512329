"""``echoscreen listen``: a C-STORE SCP that ingests each study when its association ends."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from echoscreen.ingest.base import StudyBatch
from echoscreen.ingest.labels import Annotations
from echoscreen.ingest.pipeline import Ingestor, IngestReport
from echoscreen.ingest.scp import StoreSCP

if TYPE_CHECKING:
    from echoscreen.dicom import PreprocessSpec
    from echoscreen.store.site import Site


def listen(
    site: Site,
    *,
    port: int,
    aet: str,
    host: str,
    dataset: str | None,
    spec: PreprocessSpec,
    say: Callable[[str], None],
    stop: threading.Event | None = None,
) -> IngestReport:
    """Serve C-STORE until ``stop`` is set, SIGINT (Ctrl-C) or SIGTERM; ingest every study received.

    Studies are ingested one at a time on the listener's worker thread, after the
    association that carried them ends. Messages passed to ``say`` name no patient data
    (pseudonymised counts only).

    Returns:
        The report of everything ingested while listening.

    Raises:
        IngestError: the port cannot be bound.
    """
    runner = Ingestor(site, annotations=Annotations(), dataset=dataset, spec=spec,
                      kind="dimse", describe=f"dimse {aet}")  # fmt: skip
    report = runner.report

    def on_study(batch: StudyBatch) -> None:
        before = (report.ingested, report.skipped, len(report.quarantined), report.clips)
        runner.batch(batch)
        ing, skip, quar, clips = (a - b for a, b in zip(
            (report.ingested, report.skipped, len(report.quarantined), report.clips), before,
            strict=True))  # fmt: skip
        say(f"study received: {ing} ingested ({clips} clips), {skip} skipped, {quar} quarantined")

    stop = stop or threading.Event()
    scp = StoreSCP(on_study, port=port, ae_title=aet, host=host)
    scp.start()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        # handled explicitly, not through KeyboardInterrupt: a process started in the
        # background by a shell without job control inherits SIGINT ignored, and Python
        # then never raises KeyboardInterrupt (the listener would not stop on Ctrl-C)
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGINT, signal.SIGTERM)}  # fmt: skip
    say(f"listening as {aet} on {host}:{scp.port}; Ctrl-C stops")
    try:
        while not stop.wait(0.25):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        scp.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return runner.finish()
