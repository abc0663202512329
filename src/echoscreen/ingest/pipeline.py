"""The ingest pipeline: source -> de-identify -> preprocess -> encrypted store -> catalog.

Per study (one :class:`StudyBatch`):

1. Read each instance's header and compute its pseudonymised study and clip ids;
   when the catalog already holds the study with all those clips, skip it (re-ingest
   is idempotent and costs one header read per file).
2. For each new instance: decode (:func:`echoscreen.dicom.read_cine`), de-identify
   header and pixels (:func:`echoscreen.deid.deidentify_instance`), preprocess the
   CLEANED frames, and put both the de-identified DICOM and the clip tensor
   (``np.save`` bytes) into the encrypted object store. Objects are written first,
   atomically; a crash leaves at most unreferenced objects, never a row pointing to
   a missing one.
3. One catalog transaction adds the study, its clips, dataset membership and any
   quarantine rows of this batch.

Step 2 runs in a pool of worker processes when ``workers`` > 1
(:class:`echoscreen.ingest.workers.Preparer`): the instances of one study are prepared
in parallel while the next study's are already queued (at most two studies in
flight, so memory stays bounded), and studies are still committed one at a time, in
source order, by this process, after all their objects are written.

An instance that cannot be read, decoded or cleaned is quarantined under a keyed
hash of its origin (the origin itself may be identifying) with a fixed reason, and
the run goes on. labels.csv/clips.csv are joined on the ORIGINAL UIDs; only the
pseudonymised ids are stored.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from echoscreen.cpus import usable_cpus
from echoscreen.ingest.base import UNREADABLE_KEY, ClipSource, Instance, StudyBatch
from echoscreen.ingest.labels import Annotations, Unmatched, load_annotations, study_fields
from echoscreen.ingest.workers import Prepared, Preparer

if TYPE_CHECKING:

    from echoscreen.deid import Deidentifier
    from echoscreen.dicom import PreprocessSpec
    from echoscreen.store.site import Site

log = logging.getLogger(__name__)

#: called after each batch with (batches done, total batches or None)
IngestProgress = Callable[[int, int | None], None]


@dataclass
class IngestReport:
    """What one ingest run did.

    Attributes:
        ingested: studies added (or grown by new clips).
        skipped: studies already in the catalog with all their clips.
        quarantined: ``(reference, reason)`` per quarantined input; the reference is a
            keyed hash of the input's origin, the reason a fixed phrase.
        clips: clips stored.
        seconds: wall time of the run.
        unmatched: per labels.csv / clips.csv, the rows whose UID matched no study (clip)
            the run read (stored or skipped), by line number; set by ``finish``.
    """

    ingested: int = 0
    skipped: int = 0
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    clips: int = 0
    seconds: float = 0.0
    unmatched: list[Unmatched] = field(default_factory=list)


@dataclass
class _Ticket:
    """A batch submitted for preparation, waiting to be committed.

    Attributes:
        bad: ``(instance, reason)`` quarantined so far.
        key: the original study UID when clips may be added, else None.
        study_id: the pseudonymised study UID (None for unreadable files).
        futures: ``(instance, its preparation)`` in source order.
        skipped: the catalog already holds the study with all its clips.
    """

    bad: list[tuple[Instance, str]]
    key: str | None = None
    study_id: str | None = None
    futures: list[tuple[Instance, Future[Prepared | str]]] = field(default_factory=list)
    skipped: bool = False


def source_kind(source: ClipSource) -> str:
    """``folder``, ``zip``, ``dicomweb`` or ``dimse`` (for the catalog), from the class."""
    name = type(source).__name__.lower()
    for kind in ("folder", "zip", "dicomweb"):
        if kind in name:
            return kind
    return name.removesuffix("source")[:32] or "other"


def quarantine_ref(secret: bytes, source: str, origin: str) -> str:
    """A non-identifying, stable reference to an input: keyed hash of source and origin."""
    msg = f"{source}\x00{origin}".encode()
    return "q-" + hmac.new(secret, b"quarantine/v1\x00" + msg, hashlib.sha256).hexdigest()[:30]


class Ingestor:
    """Ingests batches into one site; :func:`ingest` drives it over a source, and the
    C-STORE listener calls :meth:`batch` for each study an association delivered.

    Args:
        site: the open site.
        annotations: labels/clips rows keyed by original UID.
        dataset: put every ingested study into this dataset (None: none).
        spec: tensor shape to store.
        kind: the source kind recorded in the catalog.
        describe: the source's description (mixed into quarantine references).
        workers: processes preparing instances; 1 prepares them in this process.
    """

    def __init__(
        self,
        site: Site,
        *,
        annotations: Annotations,
        dataset: str | None,
        spec: PreprocessSpec,
        kind: str,
        describe: str,
        workers: int = 1,
    ) -> None:
        from echoscreen.deid import Deidentifier
        from echoscreen.store.schema import IngestRun

        self.site = site
        self.deid: Deidentifier = Deidentifier(site.pseudonym_secret)
        self._preparer = Preparer(site.path, site.objects, self.deid, spec, workers)
        self.annotations = annotations
        self.dataset = dataset
        self.spec = spec
        self.kind = kind
        self.describe = describe
        self.report = IngestReport()
        #: original study / SOP instance UIDs read that have a labels.csv / clips.csv row
        self._matched: tuple[set[str], set[str]] = (set(), set())
        self._start = time.perf_counter()
        with site.catalog.session() as s:
            run = IngestRun(source_kind=kind)
            s.add(run)
            s.flush()
            self.run_id: int = run.id

    # ---- per batch -----------------------------------------------------------------------

    def batch(self, batch: StudyBatch) -> None:
        """Ingest one batch (a study, or unreadable files); quarantines what fails."""
        self._finish(self._submit(batch))

    def run(self, batches: Iterable[StudyBatch], done: Callable[[], None]) -> None:
        """Ingest ``batches`` in order, preparing the next study while one finishes.

        With more than one worker, a study's instances are queued to the pool before
        the previous study is committed (two studies in flight at most); a study whose
        pseudonym is already in flight waits for it. ``done`` is called after each
        batch is committed. On any error, queued work is dropped and the pool stopped.
        """
        depth = 2 if self._preparer.workers > 1 else 1
        pending: deque[_Ticket] = deque()
        try:
            for batch in batches:
                if batch.key != UNREADABLE_KEY and any(
                    t.study_id == self.deid.pseudonym_uid(batch.key) for t in pending
                ):
                    while pending:  # the same study twice: commit the first one first
                        self._finish(pending.popleft())
                        done()
                pending.append(self._submit(batch))
                while len(pending) >= depth:
                    self._finish(pending.popleft())
                    done()
            while pending:
                self._finish(pending.popleft())
                done()
        except BaseException:
            self._preparer.close(cancel=True)
            raise

    def _submit(self, batch: StudyBatch) -> _Ticket:
        """Check the batch against the catalog and queue its new instances."""
        bad = [(inst, reason) for inst, reason in batch.unreadable]
        if batch.key == UNREADABLE_KEY or not batch.instances:
            return _Ticket(bad)
        if batch.key in self.annotations.studies:  # matched, even when skipped or quarantined
            self._matched[0].add(batch.key)
        study_id = self.deid.pseudonym_uid(batch.key)
        wanted = self._new_instances(study_id, batch, bad)
        if wanted is None:
            return _Ticket(bad, study_id=study_id, skipped=True)
        futures = [(inst, self._preparer.submit(inst)) for inst in wanted]
        return _Ticket(bad, batch.key, study_id, futures)

    def _finish(self, ticket: _Ticket) -> None:
        """Wait for a ticket's instances, then commit it (one transaction)."""
        clips: list[Prepared] = []
        for inst, future in ticket.futures:
            outcome = self._preparer.result(future)
            if isinstance(outcome, str):
                ticket.bad.append((inst, outcome))
            else:
                clips.append(outcome)
        if ticket.skipped:
            self.report.skipped += 1
            self._commit(None, [], ticket.bad, member=ticket.study_id)
        else:
            self._commit(ticket.key, clips, ticket.bad)

    def _new_instances(
        self, study_id: str, batch: StudyBatch, bad: list[tuple[Instance, str]]
    ) -> list[Instance] | None:
        """Instances whose clip is not yet in the catalog; None when there are none."""
        import pydicom
        from sqlalchemy import select

        from echoscreen.store.schema import Clip

        by_clip: dict[str, Instance] = {}
        for inst in batch.instances:
            try:
                ds = pydicom.dcmread(io.BytesIO(inst.data), stop_before_pixels=True)
                sop = str(ds.SOPInstanceUID)
                clip_id = self.deid.pseudonym_uid(sop)
            except Exception as exc:
                bad.append((inst, f"DICOM header unusable ({type(exc).__name__})"))
                continue
            if sop in self.annotations.clips:
                self._matched[1].add(sop)
            if clip_id in by_clip:
                bad.append((inst, "duplicate SOPInstanceUID in the study (first copy kept)"))
                continue
            by_clip[clip_id] = inst
        with self.site.catalog.session() as s:
            have = set(s.scalars(select(Clip.id).where(Clip.study_id == study_id)))
        new = [inst for cid, inst in by_clip.items() if cid not in have]
        return new if new or not by_clip else None

    def _commit(
        self,
        key: str | None,
        clips: list[Prepared],
        bad: list[tuple[Instance, str]],
        *,
        member: str | None = None,
    ) -> None:
        """One transaction: study, clips, dataset membership and quarantine rows."""
        from sqlalchemy import select

        from echoscreen.store.catalog import add_to_dataset
        from echoscreen.store.schema import Clip, Quarantine, Study

        refs = [(quarantine_ref(self.site.pseudonym_secret, self.describe, i.origin), why)
                for i, why in bad]  # fmt: skip
        with self.site.catalog.session() as s:
            for ref, why in refs:  # an input quarantined again for the same reason: one row
                seen = select(Quarantine.id).where(Quarantine.source_ref == ref,
                                                   Quarantine.reason == why)  # fmt: skip
                if s.scalar(seen.limit(1)) is None:
                    s.add(Quarantine(run_id=self.run_id, source_ref=ref, reason=why))
            if key is not None and clips:
                first = clips[0].header
                study_id = str(first.StudyInstanceUID)
                study = s.get(Study, study_id)
                if study is None:
                    given = self.annotations.studies.get(key)
                    study = Study(id=study_id, patient=str(first.PatientID), n_clips=0,
                                  source_kind=self.kind, **study_fields(first, given))  # fmt: skip
                    s.add(study)
                    s.flush()
                for clip in clips:
                    s.add(Clip(study_id=study_id, **clip.row, **self._annotation(clip)))
                study.n_clips = (study.n_clips or 0) + len(clips)
                member = study_id
            if self.dataset and member is not None:
                add_to_dataset(s, self.dataset, member)
        self.report.quarantined.extend(refs)
        if key is not None and clips:
            self.report.ingested += 1
            self.report.clips += len(clips)
        for ref, why in refs:
            log.info("quarantined %s: %s", ref, why)

    def _annotation(self, clip: Prepared) -> dict[str, Any]:
        """The clip's clips.csv columns (joined on its original SOP Instance UID)."""
        given = self.annotations.clips.get(clip.original_sop)
        return {
            "view": given.view if given else None,
            "doppler": given.doppler if given else None,
            "findings": given.findings if given else None,
        }

    def close(self) -> None:
        """Stop the worker processes, if any (queued work is dropped)."""
        self._preparer.close(cancel=True)

    def finish(self) -> IngestReport:
        """Stop the workers, record the run's totals in the catalog and return the report."""
        from echoscreen.store.schema import IngestRun, utcnow

        self._preparer.close()
        self.report.seconds = time.perf_counter() - self._start
        self.report.unmatched = self.annotations.unmatched(*self._matched)
        with self.site.catalog.session() as s:
            run = s.get(IngestRun, self.run_id)
            if run is not None:
                run.finished = utcnow()
                run.ingested = self.report.ingested
                run.skipped = self.report.skipped
                run.quarantined = len(self.report.quarantined)
        return self.report


def ingest(
    source: ClipSource,
    site: Site,
    *,
    labels: Path | None,
    clips: Path | None,
    dataset: str | None,
    spec: PreprocessSpec,
    progress: IngestProgress | None = None,
    workers: int | None = None,
) -> IngestReport:
    """Ingest every study of ``source`` into ``site``.

    Args:
        source: where the studies come from (:func:`open_source`).
        site: the open data site.
        labels: optional labels.csv (study label and demographics by original study UID).
        clips: optional clips.csv (view, Doppler, findings by original SOP instance UID).
        dataset: put every ingested (or skipped) study into this dataset.
        spec: shape of the stored clip tensors.
        progress: called with (batches done, total or None) after each batch.
        workers: processes preparing instances (decode, de-identify, preprocess,
            encrypt); None: one per CPU core; 1: all in this process.

    Returns:
        The :class:`IngestReport`.

    Raises:
        IngestError: the source or the CSV files cannot be read.
        IngestError: a worker process died (the run stops; re-running resumes).
        CatalogError, StoreError: the site cannot be written (the run stops; what was
            committed stays consistent).
    """
    annotations = load_annotations(labels, clips)
    total = source.count_hint()
    runner = Ingestor(site, annotations=annotations, dataset=dataset, spec=spec,
                      kind=source_kind(source), describe=source.describe(),
                      workers=workers or usable_cpus())  # fmt: skip
    if progress is not None:
        progress(0, total)
    batches = 0

    def done() -> None:
        nonlocal batches
        batches += 1
        if progress is not None:
            progress(batches, total)

    try:
        runner.run(source.studies(), done)
    finally:
        runner.close()
    return runner.finish()
