"""The door check: a quick look at an upload's headers before a job is accepted.

Runs in the caller's (request) thread, so it reads headers only (``stop_before_pixels``):
limits on file count and bytes, each file a DICOM dataset whose header is whole (not cut
short), with pixel data, an ultrasound one (Modality US, or an ultrasound or
secondary-capture SOP class), and an image header the reader accepts (1 to
``max_frames`` frames, a non-empty image; the same check as the reader's).
Reasons name the file by its *index* in the upload and never quote a header value that
could identify anyone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from echoscreen.dicom.header import check_image, read_header
from echoscreen.errors import BadStudyError, DicomDecodeError, NotDicomError
from echoscreen.service.budget import mib
from echoscreen.service.config import ServiceConfig

#: SOP classes accepted whatever the Modality says: US, US multi-frame, secondary capture
IMAGE_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.6.2", "1.2.840.10008.5.1.4.1.1.3.1",
    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1", "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4",
})  # fmt: skip
#: what the reason of a file of another modality says (STOW-RS: SOP class not supported)
NOT_ULTRASOUND = "not ultrasound (US)"
#: modalities quoted in reasons (anything else is "another modality")
_KNOWN_MODALITIES = {"CT", "MR", "CR", "DX", "XA", "NM", "PT", "MG", "OT", "SR", "ECG", "RF", "SC"}


@dataclass
class Door:
    """What the door check let in.

    Attributes:
        usable: indexes (in the upload) of the files worth decoding.
        skipped: ``{"file_index", "reason"}`` for the others.
        study_uid: the most common StudyInstanceUID of the usable files ("" if none);
            only ever stored as a keyed pseudonym.
    """

    usable: list[int] = field(default_factory=list)
    skipped: list[dict[str, object]] = field(default_factory=list)
    study_uid: str = ""


def check_file(data: bytes, max_frames: int) -> tuple[str, str | None]:
    """``(StudyInstanceUID, None)`` for a usable file, else ``("", reason)``.

    The header is read and checked as the reader will check it once the job runs
    (:func:`~echoscreen.dicom.header.read_header`, then
    :func:`~echoscreen.dicom.header.check_image`: a file cut short, without pixel data,
    with no frames or an empty image is refused here, not failed later), with the
    service's own ``max_frames``.
    """
    try:
        header = read_header(data)
    except NotDicomError:
        return "", "not a DICOM file (no DICOM header could be parsed)"
    except DicomDecodeError as exc:  # truncated: names neither the file nor a value
        return "", str(exc)
    ds = header.dataset
    try:
        modality = str(ds.get("Modality", "") or "").strip().upper()
        sop = str(ds.get("SOPClassUID", "") or "")
        study = str(ds.get("StudyInstanceUID", "") or "")
    except Exception:
        return "", "the DICOM header is malformed (Modality or SOP class unreadable)"
    if header.has_pixels and modality != "US" and sop not in IMAGE_CLASSES:
        shown = (
            modality
            if modality in _KNOWN_MODALITIES
            else ("missing" if not modality else "another modality")
        )
        return "", f"modality {shown}, {NOT_ULTRASOUND}; send echocardiogram clips only"
    if not sop or not str(ds.get("SOPInstanceUID", "") or ""):  # both Type 1 in every IOD
        return "", ("the DICOM header has no SOP Class UID or no SOP Instance UID, which "
                    "every DICOM instance has; send the files as the scanner wrote them")
    try:
        check_image(ds, max_frames=max_frames, pixels=header.has_pixels)
    except DicomDecodeError as exc:  # names the SOP class only, never an instance's UID
        return "", str(exc)
    return study, None


def check_study(files: list[tuple[str, bytes]], cfg: ServiceConfig) -> Door:
    """Check an upload's limits and headers.

    Args:
        files: ``(name, bytes)`` per file (names are not looked at).
        cfg: the limits (``max_files``, ``max_upload_bytes``, ``max_frames``).

    Returns:
        The :class:`Door` with the usable files.

    Raises:
        BadStudyError: no files (400), too many files or bytes (413), or no usable file
            (422, each file's reason listed by index).
    """
    if not files:
        raise BadStudyError("the upload holds no files; send the DICOM files of one study",
                            status=400)  # fmt: skip
    if len(files) > cfg.max_files:
        raise BadStudyError(f"too many files: {len(files)}, more than the limit of "
                            f"{cfg.max_files} per study; send one study", status=413)  # fmt: skip
    total = sum(len(data) for _, data in files)
    if total > cfg.max_upload_bytes:
        raise BadStudyError(f"the study is {mib(total)}, more than the limit of "
                            f"{mib(cfg.max_upload_bytes)}", status=413)  # fmt: skip
    door = Door()
    studies: Counter[str] = Counter()
    for i, (_, data) in enumerate(files):
        study, reason = check_file(data, cfg.max_frames)
        if reason is None:
            door.usable.append(i)
            studies[study] += 1
        else:
            door.skipped.append({"file_index": i, "reason": reason})
    if not door.usable:
        listed = "; ".join(f"file {s['file_index']}: {s['reason']}" for s in door.skipped[:10])
        more = f" (and {len(door.skipped) - 10} more)" if len(door.skipped) > 10 else ""
        raise BadStudyError(f"no usable file in the study: {listed}{more}")
    door.study_uid = studies.most_common(1)[0][0]
    return door
