"""The Annex E table: complete against a maintained library's lists, and every row applied.

The planting test builds one dataset holding every attribute of Table E.1-1 (VR from
pydicom's dictionary) with an identifying value, de-identifies it, and checks each attribute
got the action its row and the options ask for.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from echoscreen.deid import Deidentifier, DeidPolicy, effective_action, load_table
from echoscreen.deid.keyed import shift_da, shift_dt
from echoscreen.deid.table import BASIC_ACTIONS, EDITION

SECRET = b"table-test-secret-0123456789abcd"
PLANTED_UID = "1.2.826.0.1.3680043.10.999.{}"
_NUMERIC = {"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"}
_BYTES = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
_LIB_ACTIONS = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}


def test_table_matches_dicom_anonymizer_lists() -> None:
    """Same tags, same Basic Profile actions as dicom-anonymizer's copy of the same edition."""
    lib = importlib.import_module(
        f"dicomanonymizer.dicom_anonymization_databases.dicomfields_{EDITION}"
    )
    theirs, patterns = {}, set()
    for name, action in _LIB_ACTIONS.items():
        for entry in getattr(lib, name):
            if len(entry) == 4:  # (group, element, group mask, element mask): repeating groups
                patterns.add((action, entry[0] & entry[2], entry[2]))
                continue
            theirs[(entry[0] << 16) | entry[1]] = action
    ours = {tag: rule.basic for tag, rule in load_table().items()}
    assert ours == theirs
    assert len(ours) > 600
    # the patterns are the curve (50xx) and overlay (60xx) groups, removed by the profile code
    assert patterns == {("X", 0x5000, 0xFF00), ("X", 0x6000, 0xFF00)}


def test_table_spot_checks() -> None:
    table = {rule.keyword: rule for rule in load_table().values() if rule.keyword}
    expected = {
        "PatientName": "Z",
        "PatientID": "Z/D",
        "PatientBirthDate": "Z",
        "OtherPatientIDsSequence": "X",
        "InstitutionName": "X/Z/D",
        "InstitutionAddress": "X",
        "ReferringPhysicianName": "Z",
        "PerformingPhysicianName": "X",
        "OperatorsName": "X/Z/D",
        "AccessionNumber": "Z",
        "StationName": "X/Z/D",
        "DeviceSerialNumber": "X/Z/D",
        "StudyID": "Z",
        "RequestAttributesSequence": "X",
        "StudyInstanceUID": "U",
        "SeriesInstanceUID": "U",
        "SOPInstanceUID": "U",
        "FrameOfReferenceUID": "U",
        "ReferencedSOPInstanceUID": "U",
        "MediaStorageSOPInstanceUID": "U",
        "ReferencedImageSequence": "X/Z/U*",
        "IconImageSequence": "X",
        "StudyDate": "Z",
        "PatientAge": "X",
    }
    for keyword, action in expected.items():
        assert table[keyword].basic == action, keyword
    assert all(rule.basic in BASIC_ACTIONS for rule in table.values())
    for keyword in ("PatientAge", "PatientSex", "PatientSize", "PatientWeight"):
        assert table[keyword].pat_chars == "K", keyword
    for keyword in ("StudyDate", "SeriesTime", "AcquisitionDateTime", "ContentDate"):
        assert table[keyword].mod_dates == "C", keyword
    assert table["PatientBirthDate"].mod_dates == ""  # removed even when dates are kept
    for keyword in ("StudyDescription", "SeriesDescription", "ImageComments", "ProtocolName"):
        assert table[keyword].clean_desc == "C", keyword


def _vr(tag: int) -> str:
    return dictionary_VR(tag).split(" or ")[0] if dictionary_has_tag(tag) else "LO"


def _planted(tag: int, vr: str, n: int) -> Any:
    if vr == "SQ":
        item = Dataset()
        item.PatientName = f"ZQXLEAKSQ{n:03d}"
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
        item.ReferencedSOPInstanceUID = PLANTED_UID.format(100000 + n)
        return Sequence([item])
    text = f"ZQXLEAK{n:03d}"
    values: dict[str, Any] = {
        "DA": "19770413",
        "DT": "19770413101010",
        "TM": "101010",
        "DS": "123.5",
        "IS": "4242",
        "AS": "042Y",
        "CS": text,
        "UI": PLANTED_UID.format(n),
        "AE": text,
        "UR": f"http://zqxleak{n}.invalid",
        "AT": 0x00100010,
    }
    if vr in _NUMERIC:
        return 7
    if vr in _BYTES:
        return text.encode() + b"\x00"
    return values.get(vr, text)


def _plant_all() -> tuple[Dataset, dict[int, Any]]:
    ds, planted = Dataset(), {}
    for n, tag in enumerate(sorted(load_table())):
        if tag >> 16 == 0x0002:  # File Meta lives outside the dataset (tested in test_leak)
            continue
        vr = _vr(tag)
        planted[tag] = _planted(tag, vr, n)
        ds.add(DataElement(tag, vr, planted[tag]))
    return ds, planted


def _is_empty(value: Any) -> bool:
    return value in (None, "", b"") or (isinstance(value, Sequence) and len(value) == 0)


POLICIES = [DeidPolicy(), DeidPolicy(False, False, False, False)]


@pytest.mark.parametrize("policy", POLICIES, ids=["all-options", "basic-only"])
def test_every_table_attribute_gets_its_action(policy: DeidPolicy) -> None:
    deid = Deidentifier(SECRET, policy)
    ds, planted = _plant_all()
    out = deid.deidentify(ds).dataset
    shift = deid.date_shift_days(str(planted[0x00100020]))
    seen: set[str] = set()
    for tag, rule in load_table().items():
        if tag not in planted:
            continue
        action, vr, value = effective_action(rule, policy), _vr(tag), planted[tag]
        if tag == 0x00100020:
            assert out.PatientID == deid.pseudonym_id(value)
            continue
        if action == "X" or vr == "UN":  # removed
            assert tag not in out, rule.name
            continue
        seen.add(action)
        got = out[tag].value
        if vr == "SQ":
            _check_sequence(deid, action, got, rule.name)
        elif action == "K" or (action == "C" and rule.mod_dates and vr in {"TM", "SH"}):
            assert got == value, rule.name
        elif action == "U":
            assert got == deid.pseudonym_uid(value), rule.name
        elif action == "Z" or (action == "C" and not rule.mod_dates):
            assert _is_empty(got), rule.name
        elif action == "C" and vr == "DA":
            assert got == shift_da(value, shift) != value, rule.name
        elif action == "C" and vr == "DT":
            assert got == shift_dt(value, shift) != value, rule.name
        else:  # D (and the unshiftable OB timestamp): a dummy, never the original
            assert not _is_empty(got) and got != value, rule.name
    assert seen >= ({"Z", "U", "D"} | ({"K", "C"} if policy.modified_dates else set()))


def _check_sequence(deid: Deidentifier, action: str, got: Sequence, name: str) -> None:
    if action in {"Z", "D"}:
        assert len(got) == 0, name
        return
    item = got[0]  # K, C, X/Z/U*: kept, the profile applied inside
    assert item.ReferencedSOPInstanceUID.startswith("2.25."), name
    assert item.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.6.1", name
    assert item.PatientName == "", name


def test_default_policy_reference_image_uids_are_pseudonymised() -> None:
    deid = Deidentifier(SECRET)
    ds = Dataset()
    ds.ReferencedImageSequence = _planted(0x00081140, "SQ", 1)
    out = deid.deidentify(ds).dataset
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == deid.pseudonym_uid(
        PLANTED_UID.format(100001)
    )
