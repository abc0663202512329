"""What every ingest source yields: DICOM instances grouped into studies.

A source (a folder, a zip, a DICOMweb PACS, a C-STORE association) hands the
pipeline one :class:`StudyBatch` at a time, so a study is ingested, and committed
in one transaction, as a unit. Files that are not DICOM travel in the batch's
``unreadable`` list with a reason, so the pipeline can quarantine them and go on.

Reasons are fixed phrases written here or by the shared header check
(:func:`echoscreen.dicom.header.read_header`), never text copied out of a file, so a
reason cannot carry identifying values into the catalog or the logs.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, runtime_checkable

#: key of the batches that carry only unreadable files (there is no study to name)
UNREADABLE_KEY = "<unreadable>"

#: unreadable files are handed over in chunks of this many, to bound memory
UNREADABLE_CHUNK = 64

#: Media Storage Directory Storage: a DICOMDIR, an index of a medium, not an image
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

#: names that file systems and archivers leave behind; skipped without a word
HOUSEKEEPING_NAMES = frozenset({"DICOMDIR", ".DS_Store", "Thumbs.db", "desktop.ini"})


@dataclass(frozen=True)
class Instance:
    """One DICOM Part 10 object as received.

    Attributes:
        data: the file's bytes, exactly as the source delivered them.
        origin: where it came from (a path inside a folder or zip, a URL, a peer
            address), for messages only. It may itself be identifying (folder
            names often are), so it is never stored in the clear.
    """

    data: bytes
    origin: str


class Reservation(Protocol):
    """Bytes counted on a memory budget of the receiver's (the screening service's
    :class:`~echoscreen.service.budget.Hold`), for what a source holds in memory."""

    def resize(self, n: int) -> None:
        """Hold ``n`` bytes; raises an :class:`~echoscreen.errors.EchoscreenError` when
        the budget cannot grow that far (the reservation keeps its old size)."""
        ...

    def split(self, n: int) -> Reservation:
        """Move ``n`` of these bytes to a new reservation (the total is unchanged)."""
        ...

    def release(self) -> None:
        """Give every byte back (idempotent)."""
        ...


@dataclass
class StudyBatch:
    """The instances of one study, as one source delivered them.

    Attributes:
        key: the original StudyInstanceUID, or :data:`UNREADABLE_KEY` for a
            batch that carries only files that are not DICOM.
        instances: readable DICOM instances of this study.
        unreadable: files that could not be read as DICOM, each with a fixed,
            non-identifying reason.
        sender: who delivered it, where the source knows (the calling AE title of a
            DIMSE association), else ``""``.
        hold: the batch's bytes on the receiver's memory budget, where the source counts
            them (the C-STORE SCP given ``reserve``), else None; whoever takes the batch
            owns it: it hands it on or releases it.
    """

    key: str
    instances: list[Instance] = field(default_factory=list)
    unreadable: list[tuple[Instance, str]] = field(default_factory=list)
    sender: str = ""
    hold: Reservation | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of every file the batch carries, readable or not."""
        return sum(len(i.data) for i in self.instances) + sum(len(i.data)
                                                              for i, _ in self.unreadable)


@runtime_checkable
class ClipSource(Protocol):
    """Anything that yields DICOM studies: the seam between transports and the pipeline."""

    def studies(self) -> Iterator[StudyBatch]:
        """Yield one batch per study (and batches of unreadable files), each once."""
        ...

    def describe(self) -> str:
        """A short human description (``folder /data/echo``), for progress and summaries."""
        ...

    def count_hint(self) -> int | None:
        """How many batches :meth:`studies` will yield, if known cheaply; else None."""
        ...


@dataclass(frozen=True)
class HeaderInfo:
    """What a source needs to know about a file before grouping it.

    Attributes:
        study_uid: the StudyInstanceUID, or None when the file is not usable.
        skip: True for files that are not instances at all (a DICOMDIR).
        reason: why the file is unusable (a fixed phrase), when ``study_uid`` is None.
    """

    study_uid: str | None
    skip: bool = False
    reason: str = ""


def read_header(fp: BinaryIO) -> HeaderInfo:
    """Read just enough of a DICOM file to group it by study.

    Only the file meta and the StudyInstanceUID are parsed (pixel data is never
    touched), so this is cheap even for large cine loops.

    Args:
        fp: a binary stream positioned at the start of the file.

    Returns:
        The study UID, or the reason the file is unusable.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    head = fp.read(132)
    if not head:
        return HeaderInfo(None, reason="empty file")
    if len(head) < 132 or head[128:132] != b"DICM":
        return HeaderInfo(None, reason="not a DICOM file (no 'DICM' marker after the preamble)")
    fp.seek(0)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=[(0x0020, 0x000D)])
        sop_class = str(ds.file_meta.get("MediaStorageSOPClassUID", ""))
        study_uid = ds.get("StudyInstanceUID")
    except InvalidDicomError:
        return HeaderInfo(None, reason=_unusable(fp, "not a DICOM file (invalid file meta "
                                                     "information)"))  # fmt: skip
    except Exception as exc:  # pydicom raises many kinds on truncated/corrupt input
        why = f"DICOM header cannot be parsed ({type(exc).__name__})"
        return HeaderInfo(None, reason=_unusable(fp, why))
    if sop_class == DICOMDIR_SOP_CLASS:
        return HeaderInfo(None, skip=True)
    if not study_uid:
        return HeaderInfo(None, reason=_unusable(fp, "DICOM object without a StudyInstanceUID"))
    return HeaderInfo(str(study_uid).strip())


def _unusable(fp: BinaryIO, otherwise: str) -> str:
    """Why a file the grouping read could not use is unusable: the shared header check's
    reason when it finds the file cut short or unparsable (pydicom reads a truncated
    header as if it ended there, so its StudyInstanceUID seemed merely absent), else
    ``otherwise``."""
    from echoscreen.dicom.header import read_header
    from echoscreen.errors import DicomError

    fp.seek(0)
    try:
        read_header(fp.read())
    except DicomError as exc:  # fixed phrases naming "the file", never a header value
        return str(exc)
    return otherwise


def header_of_bytes(data: bytes) -> HeaderInfo:
    """:func:`read_header` for an object already in memory."""
    return read_header(io.BytesIO(data))


def chunked_unreadable(items: list[tuple[Instance, str]]) -> Iterator[StudyBatch]:
    """Wrap unreadable files into batches of :data:`UNREADABLE_CHUNK`."""
    for start in range(0, len(items), UNREADABLE_CHUNK):
        yield StudyBatch(UNREADABLE_KEY, unreadable=items[start : start + UNREADABLE_CHUNK])


def group_by_study(instances: list[Instance]) -> Iterator[StudyBatch]:
    """Group in-memory instances by StudyInstanceUID, unreadable ones batched apart.

    Studies come out in the order their first instance appears.
    """
    studies: dict[str, StudyBatch] = {}
    bad: list[tuple[Instance, str]] = []
    for inst in instances:
        info = header_of_bytes(inst.data)
        if info.skip:
            continue
        if info.study_uid is None:
            bad.append((inst, info.reason))
            continue
        studies.setdefault(info.study_uid, StudyBatch(info.study_uid)).instances.append(inst)
    yield from studies.values()
    yield from chunked_unreadable(bad)
