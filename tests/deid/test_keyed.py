"""Keyed pseudonyms and date shifts: deterministic under one secret, unrelated under another."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.valuerep import validate_value

from echoscreen.deid import Deidentifier
from echoscreen.deid.keyed import MAX_SHIFT_DAYS, shift_da, shift_dt
from echoscreen.errors import ConfigError

SECRET = b"site-secret-0123456789abcdef0123"
OTHER = b"another-site-secret-9876543210ab"


def test_uid_pseudonym_is_deterministic_valid_and_keyed() -> None:
    deid, other = Deidentifier(SECRET), Deidentifier(OTHER)
    uid = "1.2.840.113619.2.5.1762583153.215519.978957063.78"
    first = deid.pseudonym_uid(uid)
    assert first == deid.pseudonym_uid(uid) == Deidentifier(SECRET).pseudonym_uid(uid)
    assert first.startswith("2.25.") and len(first) <= 64
    validate_value("UI", first, validation_mode=2)  # raises on an invalid UID
    assert first != other.pseudonym_uid(uid)
    assert first != deid.pseudonym_uid(uid + "1")
    assert uid.split(".")[-1] not in first.split(".")[2:]


def test_id_pseudonym_per_kind_and_fits_sh() -> None:
    deid = Deidentifier(SECRET)
    patient = deid.pseudonym_id("MRN-004711")
    assert patient == deid.pseudonym_id("MRN-004711", "patient")
    assert patient.startswith("P") and len(patient) <= 16 + 1
    assert deid.pseudonym_id("MRN-004711", "study") != patient
    assert Deidentifier(OTHER).pseudonym_id("MRN-004711") != patient


def test_date_shift_range_and_consistency() -> None:
    deid = Deidentifier(SECRET)
    shifts = [deid.date_shift_days(f"patient-{i}") for i in range(300)]
    assert all(-MAX_SHIFT_DAYS <= s <= -1 for s in shifts)
    assert len(set(shifts)) > 100  # spread over the range
    assert deid.date_shift_days("patient-7") == shifts[7]
    other = Deidentifier(OTHER)
    assert sum(other.date_shift_days(f"patient-{i}") != s for i, s in enumerate(shifts)) > 290


def test_short_secret_refused() -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        Deidentifier(b"short")


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("20160503", -1, "20160502"),
        ("20160301", -1, "20160229"),
        ("2016.03.01", -366, "20150301"),
        ("notadate", -1, None),
        ("20161340", -1, None),
    ],
)
def test_shift_da(value: str, days: int, expected: str | None) -> None:
    assert shift_da(value, days) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20160503101530.123456+0100", "20160502101530.123456+0100"),
        ("20160503", "20160502"),
        ("201605", "201604"),
        ("2016", "2015"),
        ("20x6", None),
    ],
)
def test_shift_dt_keeps_time_and_precision(value: str, expected: str | None) -> None:
    days = -1 if len(value) >= 6 else -365
    assert shift_dt(value, days) == expected


@pytest.mark.parametrize("name", ["examples_ybr_color.dcm", "US1_UNCR.dcm",
                                  "color3d_jpeg_baseline.dcm"])  # fmt: skip
def test_study_uid_alone_equals_the_full_walk(pydicom_file: Any, name: str) -> None:
    """``Deidentifier.study_uid`` (the service keeps only this) is what ``deidentify`` gives."""
    import pydicom

    ds = pydicom.dcmread(pydicom_file(name))
    deid = Deidentifier(b"study-uid-secret-0123456789abcdef")
    full = deid.deidentify(ds)
    assert deid.study_uid(ds) == full.study_uid == str(full.dataset.StudyInstanceUID)
    assert deid.study_uid(ds) != str(ds.StudyInstanceUID)
    del ds.StudyInstanceUID
    assert deid.study_uid(ds) == deid.deidentify(ds).study_uid == ""


def test_a_kept_sequence_sent_as_un_is_still_walked() -> None:
    """A K-listed sequence that arrives with VR UN is decoded and its items de-identified."""
    import io

    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "1", "99X", "x"
    item.PatientName = "SECRET^NAME"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.StudyInstanceUID, ds.PatientID = generate_uid(), "PID-1"
    ds.EthnicGroupCodeSequence = [item]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    # re-encode the sequence's VR as UN (what a peer that does not know the tag sends)
    tag = b"\x10\x00\x61\x21"  # (0010,2161) Ethnic Group Code Sequence, little endian
    at = raw.index(tag + b"SQ")
    raw = raw[:at + 4] + b"UN" + raw[at + 6:]
    original = pydicom.dcmread(io.BytesIO(raw))
    clean = Deidentifier(b"un-sequence-secret-0123456789abcdef").deidentify(original).dataset
    out = io.BytesIO()
    clean.save_as(out, enforce_file_format=True)
    assert b"SECRET" not in out.getvalue()
