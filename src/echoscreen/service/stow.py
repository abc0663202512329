"""STOW-RS (DICOM PS3.18, Store Instances) answers: which parts were taken, which failed.

A part is *stored* when the service took it into the screening job: it is DICOM and the
door check (:mod:`~echoscreen.service.door`) let it in. The others are *failed*, with a
Failure Reason (0008,1197): ``0x0122`` (SOP class not supported) for an instance of
another modality, ``0xC000`` (cannot understand) for anything else (not DICOM, cut short,
no pixel data, an image header the reader refuses). The HTTP status follows PS3.18:
200 all stored, 202 some stored and some failed, 409 none stored.
"""

from __future__ import annotations

import io
from typing import Any

from echoscreen.service.door import NOT_ULTRASOUND

#: Failure Reason: Referenced SOP Class not supported
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: Failure Reason: Cannot understand
CANNOT_UNDERSTAND = 0xC000


def part_uids(files: list[tuple[str, bytes]]) -> list[tuple[str, str] | None]:
    """``(SOPClassUID, SOPInstanceUID)`` of each part, None for a part that has none."""
    import pydicom

    out: list[tuple[str, str] | None] = []
    for _, data in files:
        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True,
                                 specific_tags=["SOPClassUID", "SOPInstanceUID"])  # fmt: skip
            out.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
        except Exception:  # any parse failure is this part's failure, reported per part
            out.append(None)
    return out


def failure_reason(reason: str) -> int:
    """The Failure Reason code of a part the door refused, from its reason."""
    return SOP_CLASS_NOT_SUPPORTED if NOT_ULTRASOUND in reason else CANNOT_UNDERSTAND


def store_response(uids: list[tuple[str, str] | None],
                   refused: dict[int, str]) -> tuple[list[Any], list[Any]]:  # fmt: skip
    """Items of the Referenced SOP Sequence (0008,1199) and Failed SOP Sequence (0008,1198).

    Args:
        uids: :func:`part_uids` of the request's parts.
        refused: part index -> the door's reason, for the parts left out of the job.
    """
    refs, failed = [], []
    for i, pair in enumerate(uids):
        item: dict[str, Any] = {}
        if pair is not None:
            item = {"00081150": {"vr": "UI", "Value": [pair[0]]},
                    "00081155": {"vr": "UI", "Value": [pair[1]]}}  # fmt: skip
        if pair is None or i in refused:
            code = failure_reason(refused[i]) if i in refused else CANNOT_UNDERSTAND
            failed.append({**item, "00081197": {"vr": "US", "Value": [code]}})
        else:
            refs.append(item)
    return refs, failed
