"""What identifies someone in a phantom header, and a scan for those values in bytes.

Shared by the de-identification and ingest leak tests: both collect the identity of the
original files the same way and search what was stored for it.
"""

from __future__ import annotations

import re

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

#: header keywords whose values identify someone (besides every PN, DA, DT and UI)
IDENTIFYING = {
    "PatientID",
    "IssuerOfPatientID",
    "OtherPatientIDs",
    "InstitutionName",
    "InstitutionAddress",
    "AccessionNumber",
    "DeviceSerialNumber",
    "StationName",
    "StudyID",
    "RequestedProcedureID",
    "ScheduledProcedureStepID",
    "RequestedProcedureDescription",
}
NOT_TEXT = {"OB", "OW", "UN", "US", "SS", "UL", "SL", "FL", "FD", "IS", "DS", "CS", "TM"}
#: values shorter than this are searched in headers only, not in pixel bytes (chance hits)
LONG = 8


def _add(found: set[str], text: str) -> None:
    text = text.strip()
    if len(text) >= 4 and text not in UID_dictionary:
        found.add(text)


def header_identity(ds: Dataset, *, derived: bool = True) -> set[str]:
    """Identifying values of one original header, as written and in derived forms.

    Every PN (also its components, and with spaces as burned in), DA (also as the burned-in
    DD/MM/YYYY), DT and UI (original Study/Series/SOP/Frame of Reference UIDs); the
    :data:`IDENTIFYING` keywords; private values; values inside sequences but the regions.
    Without ``derived``, only the values as the header holds them.
    """
    found: set[str] = set()

    def visit(elem: pydicom.DataElement, nested: bool) -> None:
        if elem.VR == "SQ":
            if elem.keyword != "SequenceOfUltrasoundRegions":
                for item in elem.value:
                    for child in item:
                        visit(child, True)
            return
        take = elem.VR in {"PN", "DA", "DT", "UI"} or elem.tag.is_private or nested
        if elem.VR in NOT_TEXT or elem.tag.is_private_creator:
            return
        if not (take or elem.keyword in IDENTIFYING):
            return
        multi = isinstance(elem.value, list | pydicom.multival.MultiValue)
        for value in elem.value if multi else [elem.value]:
            text = str(value)
            _add(found, text)
            if derived and elem.VR == "PN":
                _add(found, " ".join(p for p in text.split("^") if p))
                for part in text.split("^"):
                    _add(found, part)
            if derived and elem.VR == "DA" and len(text) == 8:
                _add(found, f"{text[6:]}/{text[4:6]}/{text[:4]}")

    for elem in ds:
        visit(elem, False)
    return found


def leaks_in(data: bytes, values: set[str], where: str, *, pixels: bool = False) -> list[str]:
    """``"value in where"`` for each value found in ``data`` (case-insensitive).

    With ``pixels``, only values of :data:`LONG` or more characters are searched (image
    bytes hold 4-letter words by chance); headers are searched separately for the rest.
    A value of digits only (an ID, a serial number, a date) counts as found only as a
    whole number, not inside a longer run of digits: the site's pseudonymised UIDs are
    long random digit strings, and one of them held a 6-digit serial number by chance
    (about one run in a few hundred).
    """
    low = data.lower()
    return [
        f"{v!r} in {where}"
        for v in sorted(values)
        if (not pixels or len(v) >= LONG) and _found(v.lower().encode(), low)
    ]


def _found(value: bytes, data: bytes) -> bool:
    if not value.isdigit():
        return value in data
    return re.search(rb"(?<![0-9])" + re.escape(value) + rb"(?![0-9])", data) is not None
