"""Per-instance ingest work, in this process or in a pool of worker processes.

:func:`prepare` is the expensive part of ingest (decode, de-identify with pixel
cleaning and RLE Lossless re-encoding, preprocess, encrypt and write both objects).
:class:`Preparer` runs it either in-process (``workers=1``) or in a
:class:`~concurrent.futures.ProcessPoolExecutor` whose workers are *spawned* (no
inherited catalog connections or threads) and open the object store and the
de-identifier themselves from the site folder, so no key material travels through
pickles. Workers ignore Ctrl-C (the parent decides) and exit as soon as the parent
process is gone, even after SIGKILL: an object a worker finishes writing then is at
most unreferenced, never half-written (object writes are atomic).

A worker never sends an arbitrary exception back: an instance that cannot be read,
decoded or cleaned comes back as its fixed quarantine reason (a ``str``); only
:class:`~echoscreen.errors.StoreError` / :class:`~echoscreen.errors.CatalogError`
(the site cannot be written) are raised, and stop the run.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from echoscreen.errors import CatalogError, EchoscreenError, IngestError, StoreError
from echoscreen.ingest.base import Instance
from echoscreen.store import tensors

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from echoscreen.deid import Deidentifier
    from echoscreen.dicom import PreprocessSpec
    from echoscreen.store.objects import ObjectStore

#: the header attributes the catalog's study row is made from (see ``labels.study_fields``)
STUDY_KEYWORDS = (
    "StudyInstanceUID",
    "PatientID",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
)


@dataclass
class Prepared:
    """One instance whose two objects are stored, waiting for its catalog row.

    Attributes:
        row: the Clip columns except the clips.csv annotations (view, doppler, findings).
        header: the de-identified study-level attributes (:data:`STUDY_KEYWORDS`) only,
            so that little crosses the process boundary.
        original_study: the ORIGINAL StudyInstanceUID (joins labels.csv).
        original_sop: the ORIGINAL SOPInstanceUID (joins clips.csv).
    """

    row: dict[str, Any]
    header: Dataset
    original_study: str
    original_sop: str


def reason(exc: Exception) -> str:
    """A quarantine reason: echoscreen's own messages (written to be safe), else the type."""
    if isinstance(exc, EchoscreenError):
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"{type(exc).__name__}: {text}"[:400]
    return f"unexpected {type(exc).__name__} while reading the file"


def _study_header(clean: Dataset) -> Dataset:
    from pydicom.dataset import Dataset

    small = Dataset()
    for keyword in STUDY_KEYWORDS:
        if keyword in clean:
            setattr(small, keyword, getattr(clean, keyword))
    return small


def prepare(
    inst: Instance, objects: ObjectStore, deid: Deidentifier, spec: PreprocessSpec
) -> Prepared:
    """Decode, clean, preprocess and store one instance; return its catalog row.

    Args:
        inst: the instance's bytes and origin.
        objects: the site's encrypted object store (both objects are written here).
        deid: the site's de-identifier.
        spec: shape of the stored clip tensor.

    Raises:
        Exception: anything reading, decoding or cleaning raises (the caller quarantines).
        StoreError: an object cannot be written.
    """
    from echoscreen.deid import READER, deidentify_instance, model_clip
    from echoscreen.dicom import load_dataset, read_cine

    ds = load_dataset(inst.data)
    cine = read_cine(ds)  # every frame at full size, for the stored de-identified object
    clean, frames = deidentify_instance(ds, cine.frames, deid, inplace=True)  # ours: no copy
    tensor = model_clip(ds, spec, deid.policy)  # the reader screening uses: no skew
    buf = io.BytesIO()
    clean.save_as(buf, enforce_file_format=True)
    dicom_oid = objects.put(buf.getvalue())
    row = {
        "id": str(clean.SOPInstanceUID),
        "n_frames": int(cine.total_frames),
        "fps": float(cine.fps or tensor.fps),
        "spacing_mm": tensor.spacing_mm,
        "rows": int(frames.shape[1]),
        "cols": int(frames.shape[2]),
        "transfer_syntax": str(cine.transfer_syntax)[:64],
        "dicom_object": dicom_oid,
        **tensors.put(objects, tensor.pixels),
        "reader": READER,
    }
    return Prepared(row, _study_header(clean), cine.study_instance_uid, cine.sop_instance_uid)


def prepare_or_reason(
    inst: Instance, objects: ObjectStore, deid: Deidentifier, spec: PreprocessSpec
) -> Prepared | str:
    """:func:`prepare`, with any failure but the site's own turned into a reason."""
    try:
        return prepare(inst, objects, deid, spec)
    except (CatalogError, StoreError):
        raise
    except Exception as exc:  # one bad file must not stop the run
        return reason(exc)


# ---- worker processes ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    objects: ObjectStore
    deid: Deidentifier
    spec: PreprocessSpec


@functools.lru_cache(maxsize=1)
def _context(site_path: str, spec: PreprocessSpec) -> _Context:
    """The worker's object store and de-identifier, opened once from the site folder."""
    from echoscreen.deid import Deidentifier
    from echoscreen.store.keys import LocalKeyProvider
    from echoscreen.store.objects import ObjectStore
    from echoscreen.store.site import Site

    path = Path(site_path)
    secret = Site._secret(path)
    # as Site.__init__ does (tests check both routes give the same object ids)
    id_key = hmac.new(secret, b"echoscreen/object-id/v1", hashlib.sha256).digest()
    objects = ObjectStore(path / "objects", LocalKeyProvider(path / "keys"), id_key)
    return _Context(objects, Deidentifier(secret), spec)


def _exit_with_parent() -> None:
    """Start a daemon thread that ends this process as soon as its parent is gone."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(site_path: str, spec: PreprocessSpec) -> None:
    from echoscreen.dicom.header import silence_value_warnings

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    silence_value_warnings()  # spawned: the parent's setting is not inherited
    _exit_with_parent()
    _context(site_path, spec)


def _work(site_path: str, spec: PreprocessSpec, inst: Instance) -> Prepared | str:
    ctx = _context(site_path, spec)
    return prepare_or_reason(inst, ctx.objects, ctx.deid, ctx.spec)


class Preparer:
    """Runs :func:`prepare_or_reason` in-process or in a pool of spawned workers.

    Args:
        site_path: the site folder (workers open its keys and objects themselves).
        objects: the parent's object store (used when ``workers`` is 1).
        deid: the parent's de-identifier (used when ``workers`` is 1).
        spec: shape of the stored clip tensors.
        workers: processes; 1 runs everything in this process, synchronously. The
            pool starts on the first :meth:`submit`.
    """

    def __init__(
        self,
        site_path: Path,
        objects: ObjectStore,
        deid: Deidentifier,
        spec: PreprocessSpec,
        workers: int,
    ) -> None:
        if workers < 1:
            raise IngestError(f"workers must be 1 or more, got {workers}")
        self.workers = workers
        self._site_path = str(site_path)
        self._local = _Context(objects, deid, spec)
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, inst: Instance) -> Future[Prepared | str]:
        """Start preparing ``inst``; with one worker it is done when this returns."""
        if self.workers == 1:
            done: Future[Prepared | str] = Future()
            try:
                ctx = self._local
                done.set_result(prepare_or_reason(inst, ctx.objects, ctx.deid, ctx.spec))
            except Exception as exc:
                done.set_exception(exc)
            return done
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self._site_path, self._local.spec),
            )
        return self._pool.submit(_work, self._site_path, self._local.spec, inst)

    @staticmethod
    def result(future: Future[Prepared | str]) -> Prepared | str:
        """The outcome of one :meth:`submit`.

        Raises:
            StoreError, CatalogError: the site cannot be written.
            IngestError: a worker process died (killed, out of memory).
        """
        try:
            return future.result()
        except BrokenProcessPool as exc:
            if "initializer" in str(exc):
                raise IngestError(
                    "the ingest worker processes could not open the site's keys and objects "
                    "(see the messages above); check SITE/keys, or run with --workers 1"
                ) from exc
            raise IngestError(
                "an ingest worker process died (out of memory or killed); run ingest again "
                "(it resumes where it stopped), with fewer --workers if memory is short. "
                "Calling ingest() from a script: guard it with `if __name__ == '__main__':` "
                "(workers are spawned and import the main module), or pass workers=1"
            ) from exc

    def close(self, *, cancel: bool = False) -> None:
        """Stop the worker processes (``cancel``: drop work not yet started)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None
