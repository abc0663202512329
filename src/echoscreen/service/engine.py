"""``ScreeningEngine``: the service's in-memory screening pipeline (no HTTP here).

A study is checked at the door (:mod:`~echoscreen.service.door`) in the caller's thread
and queued as a job (:class:`~echoscreen.service.jobs.JobStore`, bounded: a full queue
raises :class:`OverloadedError`). A job thread (``job_threads`` of them) then has every
file decoded, de-identified and preprocessed in a spawn process pool (``cpu_workers``;
:func:`echoscreen.screen.screener.read_file`), classifies views and decides through the
:class:`~echoscreen.screen.Screener` logic, with inference micro-batched across jobs
(:class:`~echoscreen.service.batching.BatchingBackend`), adds saliency key frames
(:mod:`~echoscreen.service.explain`), stores the result document and calls ``on_done``.
Nothing is written but the job row: files, pixels and key-frame PNGs stay in memory.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from echoscreen.dicom.header import silence_value_warnings
from echoscreen.errors import BadStudyError, ConfigError, OverloadedError, ServiceError
from echoscreen.registry.package import ModelPackage, load_package
from echoscreen.screen.backends import make_backend
from echoscreen.screen.screener import ClipResult, Screener, check_reader, read_file
from echoscreen.service.batching import BatchingBackend
from echoscreen.service.budget import ByteBudget, Hold
from echoscreen.service.config import ServiceConfig
from echoscreen.service.document import link_explanations, result_document
from echoscreen.service.door import check_study
from echoscreen.service.jobs import INTERRUPTED, JobStore
from echoscreen.service.metrics import Metrics

log = logging.getLogger(__name__)
OnDone = Callable[[str, dict[str, Any], list[tuple[str, bytes]]], None]
#: the reason a job that failed on a bug gets (details go to the log only)
INTERNAL = "the service failed while screening this study (logged); submit it again"


def init_worker() -> None:
    """Start of a preprocessing process: one thread per library (the pool is the parallelism).

    The Annex E table is parsed here, once per process, not by the first study; header
    values are never checked aloud (:func:`~echoscreen.dicom.header.silence_value_warnings`).
    """
    import cv2
    import torch

    from echoscreen.deid.table import annex_e_table

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    silence_value_warnings()
    annex_e_table()


@dataclass
class _Job:
    """A job while it is queued or running (the files live only here)."""

    id: str
    files: list[tuple[str, bytes]]
    usable: list[int]
    skipped: list[dict[str, Any]]
    on_done: OnDone | None
    hold: Hold | None = None
    done: threading.Event = field(default_factory=threading.Event)
    error: ServiceError | None = None
    future: Future[None] | None = None


class ScreeningEngine:
    """Screens studies for many clients at once.

    Args:
        cfg: the service settings (validated by the caller or in :meth:`start`).
        metrics: where queue depth, batch sizes, decisions and jobs are counted.
    """

    def __init__(self, cfg: ServiceConfig, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics if metrics is not None else Metrics()
        self.store: JobStore | None = None
        self._package: ModelPackage | None = None
        self._batcher: BatchingBackend | None = None
        self._screener: Screener | None = None
        self._explainer: Any = None
        self._procs: ProcessPoolExecutor | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._live: dict[str, _Job] = {}
        self._waiting = 0
        self._closing = False
        self._stopped = False
        self._pngs: dict[str, tuple[float, list[bytes]]] = {}
        #: the bytes of studies held: uploads being read and jobs not finished
        self.budget = ByteBudget(cfg.max_queued_bytes, self.metrics.queued_bytes.set)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Load and verify the package, open the backend, batcher, pools and job store."""
        cfg = self.cfg.validate()
        silence_value_warnings()  # the door and STOW-RS read headers in this process
        self._package = check_reader(load_package(cfg.registry, cfg.model))
        inner = make_backend(self._package, cfg.backend, cfg.inference_threads)
        self._batcher = BatchingBackend(inner, cfg.max_batch, cfg.max_wait_ms, self.metrics)
        self._screener = Screener(self._package, self._batcher)
        if cfg.explain:
            self._explainer = self._package.load_torch("rhd")
            for p in self._explainer.parameters():
                p.requires_grad_(False)  # gradients w.r.t. inputs only: safe across threads
        self.store = JobStore(cfg.state_dir / "jobs.db", cfg.result_ttl_s)
        ctx = multiprocessing.get_context("spawn")
        self._procs = ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=init_worker)
        warm = [self._procs.submit(read_file, b"", self._package.spec, os.urandom(32))
                for _ in range(cfg.workers)]  # fmt: skip
        for f in warm:
            f.result()  # workers started and their imports done before the first study
        self._threads = ThreadPoolExecutor(cfg.job_threads, thread_name_prefix="job")
        self.metrics.set_model(self._package.ref, inner.name)

    @property
    def package(self) -> ModelPackage:
        """The served, verified package."""
        if self._package is None:
            raise ConfigError("the screening engine is not started; call start() first")
        return self._package

    @property
    def model_ref(self) -> str:
        """``NAME:VERSION`` of the served package."""
        return self.package.ref

    def close(self, drain: bool = True, timeout: float = 60.0) -> None:
        """Stop accepting jobs (submit raises OverloadedError) and shut down.

        Results stay readable while the jobs drain; once closed, :meth:`job` raises
        :class:`OverloadedError` too.

        Args:
            drain: finish the jobs queued and running first (up to ``timeout``); without
                it, queued jobs are marked interrupted at once.
            timeout: most seconds to wait for the jobs (those left are interrupted).
        """
        with self._lock:
            self._closing = True
            live = list(self._live.values())
        deadline = time.monotonic() + timeout
        for job in live if drain else []:
            job.done.wait(max(0.0, deadline - time.monotonic()))
        for job in live:
            if not job.done.is_set() and job.future is not None and job.future.cancel():
                self._end_cancelled(job)
        if self._threads is not None:
            self._threads.shutdown(wait=drain, cancel_futures=True)
        if self._batcher is not None:
            self._batcher.close()
        if self._procs is not None:
            self._procs.shutdown(wait=True, cancel_futures=True)
        if self.store is not None:
            self.store.close()
            self._stopped = True

    def _end_cancelled(self, job: _Job) -> None:
        with self._lock:
            self._waiting -= 1
            self._live.pop(job.id, None)
            self.metrics.queue_depth.set(self._waiting)
        assert self.store is not None
        self.store.fail(job.id, INTERRUPTED, "interrupted")
        self.metrics.jobs.labels(status="interrupted").inc()
        job.error = OverloadedError("the service is stopping; submit the study again")
        if job.hold is not None:
            job.hold.release()
        job.done.set()

    # -- the API --------------------------------------------------------------------------

    def submit(self, files: list[tuple[str, bytes]], *, client: str, source: str = "api",
               on_done: OnDone | None = None, hold: Hold | None = None) -> str:  # fmt: skip
        """Check a study at the door and queue it; returns the job id.

        Args:
            files: ``(name, bytes)`` of every file of one study (names are never stored).
            client: the token's name (``dimse:AE`` for the SCP). source: see ``jobs.SOURCES``.
            on_done: called as ``on_done(job_id, result, files)`` after the result is
                stored (exceptions are logged; the result is kept).
            hold: the upload's hold on :attr:`budget` (taken while its body was read, or
                by the SCP as instances arrived); resized to the files' bytes and owned by
                the job (released when it ends). If the study is refused it stays the
                caller's, who releases it (or keeps it to retry: the files are still in
                its memory). None: a hold is taken here, released if refused.

        Raises:
            BadStudyError: too many files or bytes, or no usable file (reasons by index).
            OverloadedError: the queue is full, the files would take the bytes held over
                ``max_queued_bytes``, or the service is stopping.
        """
        return self._submit(files, client, source, on_done, hold).id

    def admit(self, files: list[tuple[str, bytes]], *, client: str, source: str = "api",
              on_done: OnDone | None = None,
              hold: Hold | None = None) -> tuple[str, list[dict[str, Any]]]:  # fmt: skip
        """:meth:`submit`, also returning the files the door check refused.

        Returns:
            ``(job id, [{"file_index", "reason"}])``: the files left out of the job (STOW-RS
            reports them as failed instances).
        """
        job = self._submit(files, client, source, on_done, hold)
        return job.id, [dict(s) for s in job.skipped]

    def screen(self, files: list[tuple[str, bytes]], *, client: str, source: str = "sync",
               timeout: float = 120.0, hold: Hold | None = None,
               on_done: OnDone | None = None) -> dict[str, Any]:  # fmt: skip
        """Submit a study and wait for its result document (``on_done``: as :meth:`submit`).

        Raises:
            BadStudyError: as :meth:`submit`, or no clip could be read (422).
            ServiceError: 504 when not done within ``timeout`` s (the job goes on).
        """
        job = self._submit(files, client, source, on_done, hold)
        if not job.done.wait(timeout):
            raise ServiceError(f"the study was not screened within {timeout:.0f} s; it goes on "
                               f"as job {job.id}: poll /v1/jobs/{job.id}", status=504)  # fmt: skip
        if job.error is not None:
            raise job.error
        record = self.job(job.id)
        if record is None or record["result"] is None:
            raise ServiceError(f"the result of job {job.id} has expired already", status=500)
        result: dict[str, Any] = record["result"]
        return result

    def job(self, job_id: str, client: str | None = None) -> dict[str, Any] | None:
        """``{"id", "status", "created", "finished", "reason", "result"}`` or None.

        None when the job is unknown, expired, or (with ``client``) was submitted by
        another client: a token reads only its own jobs.
        """
        row = self._store().get(job_id)
        if row is None or (client is not None and row["client"] != client):
            return None
        return {k: row[k] for k in ("id", "status", "created", "finished", "reason", "result")}

    def explanation(self, job_id: str, k: int, client: str | None = None) -> bytes | None:
        """PNG of the job's ``k``-th key frame, or None (no such frame, expired, or with
        ``client``: another client's job)."""
        if client is not None and self.job(job_id, client) is None:
            return None
        with self._lock:
            now = time.monotonic()
            for jid in [j for j, (exp, _) in self._pngs.items() if exp <= now]:
                del self._pngs[jid]
            entry = self._pngs.get(job_id)
        if entry is None or not 0 <= k < len(entry[1]):
            return None
        return entry[1][k]

    def queue_depth(self) -> int:
        """Jobs accepted but not started."""
        with self._lock:
            return self._waiting

    # -- inside -------------------------------------------------------------------------

    def _store(self) -> JobStore:
        if self._stopped:
            raise OverloadedError("the service has stopped; retry when it is back", retry_after=10)
        if self.store is None:
            raise ConfigError("the screening engine is not started; call start() first")
        return self.store

    def _submit(self, files: list[tuple[str, bytes]], client: str, source: str,
                on_done: OnDone | None, hold: Hold | None) -> _Job:  # fmt: skip
        own = hold is None  # a caller's hold stays the caller's when the study is refused
        hold = self.budget.hold() if hold is None else hold
        try:
            hold.resize(sum(len(data) for _, data in files))
            job = self._queue(files, client, source, on_done, hold)
        except BaseException:
            if own:
                hold.release()
            raise
        return job

    def _queue(self, files: list[tuple[str, bytes]], client: str, source: str,
               on_done: OnDone | None, hold: Hold) -> _Job:  # fmt: skip
        store = self._store()
        if self._closing:
            raise OverloadedError("the service is stopping; retry shortly", retry_after=10)
        door = check_study(files, self.cfg)
        store.purge()  # expired results go as new work comes in
        with self._lock:
            if self._closing:
                raise OverloadedError("the service is stopping; retry shortly", retry_after=10)
            if self._waiting >= self.cfg.queue_size:
                raise OverloadedError(f"the queue is full ({self._waiting} studies waiting); "
                                      "retry shortly", retry_after=5)  # fmt: skip
            job_id = store.create(client=client, source=source, n_files=len(files),
                                  study=store.pseudonym(door.study_uid))  # fmt: skip
            job = _Job(job_id, files, door.usable, door.skipped, on_done, hold)
            self._live[job_id] = job
            self._waiting += 1
            self.metrics.queue_depth.set(self._waiting)
            assert self._threads is not None
            job.future = self._threads.submit(self._run, job)
            hold.job = job_id  # the job releases it when it ends
        return job

    def _run(self, job: _Job) -> None:
        """A job thread's work on one job: screen, store, explain, call back; its bytes are
        given back to the budget however it ends (also if the store has closed), before
        ``done`` is set, so a waiting :meth:`screen` sees them given back."""
        try:
            self._run_job(job)
        finally:
            if job.hold is not None:
                job.hold.release()
            job.done.set()

    def _run_job(self, job: _Job) -> None:
        store = self._store()
        with self._lock:
            self._waiting -= 1
            self.metrics.queue_depth.set(self._waiting)
        store.start(job.id)
        self.metrics.in_flight.inc()
        try:
            self._screen_job(job, store)
        except BadStudyError as exc:
            job.error = exc
            store.fail(job.id, str(exc))
            self.metrics.jobs.labels(status="failed").inc()
        except Exception:
            log.exception("job %s failed", job.id)
            job.error = ServiceError(INTERNAL, status=500)
            store.fail(job.id, INTERNAL)
            self.metrics.jobs.labels(status="failed").inc()
        finally:
            self.metrics.in_flight.dec()
            with self._lock:
                self._live.pop(job.id, None)

    def _screen_job(self, job: _Job, store: JobStore) -> None:
        assert self._screener is not None
        usable = [(str(i), job.files[i][1]) for i in job.usable]  # names: upload indexes
        result = self._screener.screen(usable, pool=self._procs)
        unread = [{"file_index": int(s["file"]), "reason": s["reason"]} for s in result.skipped]
        skipped = sorted(job.skipped + unread, key=lambda s: int(s["file_index"]))
        if not result.clips:
            listed = "; ".join(f"file {s['file_index']}: {s['reason']}" for s in skipped[:10])
            raise BadStudyError(f"no clip in the study could be read: {listed}")
        doc = result_document(job.id, result, skipped, self._screener, self.package)
        pngs = self._explain(doc, result.clips)
        link_explanations(doc, pngs)
        store.finish(job.id, doc)
        if pngs:
            with self._lock:
                expiry = time.monotonic() + self.cfg.result_ttl_s
                self._pngs[job.id] = (expiry, [e.png for e in pngs])
        self.metrics.decisions.labels(decision=doc["decision"]).inc()
        self.metrics.jobs.labels(status="done").inc()
        if job.on_done is not None:
            try:
                job.on_done(job.id, doc, job.files)
            except Exception:
                log.exception("the on_done callback of job %s failed (its result is kept)",
                              job.id)  # fmt: skip

    def _explain(self, doc: dict[str, Any], clips: list[ClipResult]) -> list[Any]:
        """Key frames of the top evidence clips (none when off or without evidence)."""
        if self._explainer is None or doc["p_screen"] is None:
            return []
        from echoscreen.service.explain import explain

        try:
            return explain(self.package, doc, clips, k=self.cfg.explain_clips,
                           model=self._explainer)  # fmt: skip
        except Exception:
            log.exception("explanations failed (the result is kept without them)")
            return []
