"""Real ultrasound files from pydicom/pydicom-data and helpers to compare DICOM bytes."""

from __future__ import annotations

import io

#: real ultrasound files, one per transfer syntax, and the study each belongs to
US_FILES = {
    "examples_ybr_color.dcm": "1.2.840.114340.3.8251017118051.1.20160503.120850.2171",
    "examples_palette.dcm": "1.3.46.670589.14.1000.210.4.199999.20110525182825.1.0",
    "OBXXXX1A_rle.dcm": "1.3.46.670589.14.1000.210.4.199999.20110525182825.1.0",
    "US1_UNCR.dcm": "1.3.6.1.4.1.5962.1.2.13.20040826185059.5457",
    "examples_jpeg2k.dcm": "1.3.6.1.4.1.5962.1.2.13.20040826185059.5457",
    "JPGLosslessP14SV1_1s_1f_8b.dcm": (
        "1.2.826.0.1.3680043.2.1143.536994375713558855009808807549617714"
    ),
}


def expected_groups(names: list[str]) -> dict[str, set[str]]:
    """StudyInstanceUID -> names of the files that belong to it."""
    groups: dict[str, set[str]] = {}
    for name in names:
        groups.setdefault(US_FILES[name], set()).add(name)
    return groups


def differences(sent: bytes, received: bytes) -> list[str]:
    """What differs between two Part 10 objects, ignoring how the sender re-encoded them.

    dcmtk's storescu re-encodes the data set it reads (sequence lengths, dropped
    trailing padding), so transfer over DIMSE is checked element by element:
    same transfer syntax, every element equal, pixel data byte for byte.

    Returns:
        Human-readable differences (empty when the objects agree); never raw bytes.
    """
    import pydicom

    a = pydicom.dcmread(io.BytesIO(sent))
    b = pydicom.dcmread(io.BytesIO(received))
    problems = []
    if a.file_meta.TransferSyntaxUID != b.file_meta.TransferSyntaxUID:
        problems.append(f"transfer syntax {a.file_meta.TransferSyntaxUID.name} was changed")
    for elem in a:
        if elem.tag == 0xFFFCFFFC:  # Data Set Trailing Padding: senders may drop it
            continue
        if elem.tag not in b:
            problems.append(f"{elem.tag} {elem.keyword} missing")
        elif elem.tag == 0x7FE00010:
            if a.PixelData != b.PixelData:
                problems.append("pixel data bytes differ")
        elif b[elem.tag] != elem:
            problems.append(f"{elem.tag} {elem.keyword} differs")
    problems.extend(f"{e.tag} {e.keyword} added" for e in b if e.tag not in a)
    return problems
