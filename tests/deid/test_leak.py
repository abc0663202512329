"""No planted identity survives deidentify_instance on the real pydicom ultrasound files.

Identity is planted everywhere these files can carry it: header attributes the profile
lists, nested sequences, private blocks (top level and inside kept sequences), curve and
overlay groups, unlisted person names, free text and dates, the File Meta, and text burned
into the pixels outside the ultrasound regions. The de-identified object is serialised and
its bytes searched for every planted value and every identifying value the file came with.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut
from pydicom.uid import UID_dictionary

from echoscreen.deid import (
    Deidentifier,
    deidentify_instance,
    effective_action,
    load_table,
    region_mask,
    regions_of,
)
from echoscreen.deid.keyed import shift_da
from echoscreen.errors import DeidError

SECRET = b"leak-test-secret-0123456789abcdef"
FILES = ["examples_ybr_color.dcm", "US1_UNCR.dcm", "OBXXXX1A_rle.dcm", "color3d_jpeg_baseline.dcm"]
STUDY_UID = "1.2.826.0.1.3680043.10.999.1"
MRN = "ZQXMRN0001"
BIRTH, STUDY_DATE = "19770413", "20190704"


def decode(ds: Dataset) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames of a test file."""
    arr = ds.pixel_array
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        if arr.dtype != np.uint8:
            arr = (arr >> 8).astype(np.uint8)
    if int(ds.get("NumberOfFrames", 1) or 1) == 1:
        arr = arr[None]
    return np.ascontiguousarray(arr)


def _unlisted(vr: str) -> int:
    """A standard tag of this VR that Table E.1-1 does not list."""
    table = load_table()
    return next(
        tag
        for tag, entry in sorted(DicomDictionary.items())
        if entry[0] == vr and tag not in table and entry[3] == "" and tag >> 16 not in (0, 2)
    )


class Planter:
    """Plants unique tokens and remembers them."""

    def __init__(self, n: int) -> None:
        self.n, self.tokens = n, []

    def tok(self, label: str) -> str:
        value = f"ZQX{label}{self.n}"
        self.tokens.append(value)
        return value

    def private_block(self, ds: Dataset, group: int) -> None:
        block = ds.private_block(group, self.tok("CREATOR"), create=True)
        block.add_new(0x10, "LO", self.tok("PRIVLO"))
        block.add_new(0x11, "PN", self.tok("PRIVPN"))

    def person_item(self) -> Dataset:
        item = Dataset()
        item.PatientID = self.tok("OTHERID")
        item.IssuerOfPatientID = self.tok("ISSUER")
        item.PatientName = self.tok("ITEMPN")
        self.private_block(item, 0x0029)
        return item


def plant(ds: Dataset, n: int) -> Planter:
    """Put identifying values everywhere the file can carry them."""
    p = Planter(n)
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = f"ZQXDOE^JANE{n}", MRN, BIRTH
    p.tokens += [f"ZQXDOE^JANE{n}", MRN, BIRTH]
    ds.StudyInstanceUID, ds.StudyDate = STUDY_UID, STUDY_DATE
    ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.10.999.2.{n}"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = (
        f"1.2.826.0.1.3680043.10.999.3.{n}"
    )
    ds.FrameOfReferenceUID = f"1.2.826.0.1.3680043.10.999.4.{n}"
    p.tokens += [ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID, STUDY_UID]
    for kw in (
        "OtherPatientNames",
        "PatientAddress",
        "InstitutionName",
        "InstitutionAddress",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "OperatorsName",
        "NameOfPhysiciansReadingStudy",
        "AccessionNumber",
        "StationName",
        "DeviceSerialNumber",
        "StudyID",
        "StudyDescription",
        "SeriesDescription",
        "ImageComments",
        "ProtocolName",
        "PatientComments",
        "AdditionalPatientHistory",
        "MedicalAlerts",
        "Allergies",
        "PatientTelephoneNumbers",
        "InstitutionalDepartmentName",
        "PerformedProcedureStepDescription",
        "RequestingPhysician",
        "DerivationDescription",
    ):
        setattr(ds, kw, p.tok(kw[:6].upper()))
    ds.PatientAge, ds.PatientSex, ds.PatientWeight, ds.PatientSize = "012Y", "F", 31.5, 1.32
    ds.OtherPatientIDsSequence = [p.person_item()]
    request = Dataset()
    request.RequestedProcedureID = p.tok("REQID")
    request.ScheduledProcedureStepID = p.tok("SPSID")
    request.RequestedProcedureDescription = p.tok("REQDESC")
    p.private_block(request, 0x0033)
    ds.RequestAttributesSequence = [request]
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.10.999.5.{n}"
    p.tokens.append(ref.ReferencedSOPInstanceUID)
    ds.ReferencedImageSequence = [ref]
    p.private_block(ds, 0x0041)
    for item in ds.get("SequenceOfUltrasoundRegions", []):
        p.private_block(item, 0x0043)
    ds.add_new(0x60003000, "OW", p.tok("OVERLAY").encode() + b"\x00")
    ds.add_new(0x50003000, "OB", p.tok("CURVE").encode() + b"\x00")
    ds.add_new(_unlisted("PN"), "PN", p.tok("UNLISTEDPN"))
    ds.add_new(_unlisted("UT"), "UT", p.tok("UNLISTEDUT"))
    ds.add_new(_unlisted("DA"), "DA", "19990101")
    p.tokens.append("19990101")
    return p


def original_identity(ds: Dataset) -> set[str]:
    """Identifying values a file came with: listed non-kept attributes, names, UIDs, dates."""
    deid, table, found = Deidentifier(SECRET), load_table(), set()

    def visit(d: Dataset, elem: pydicom.DataElement) -> None:
        rule = table.get(int(elem.tag))
        action = effective_action(rule, deid.policy) if rule else ""
        # times of day are kept by Modified Dates (a whole-day shift leaves them unchanged)
        if elem.VR in {"SQ", "TM"} or elem.tag.is_private or action == "K":
            return
        values = (
            elem.value
            if isinstance(elem.value, list | pydicom.multival.MultiValue)
            else [elem.value]
        )
        for value in values:
            text = str(value).strip()
            if len(text) < 6 or text in UID_dictionary:
                continue
            if rule or elem.VR in {"PN", "UI", "DA", "DT"}:
                found.add(text)

    ds.walk(visit)
    return found


def burn_text(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Write a name into every frame outside the regions; returns the planted-pixels mask."""
    rows, cols = np.nonzero(~mask)
    x, y = int(cols.min()), int(rows.min())
    for frame in frames:
        cv2.putText(
            frame,
            "DOE JANE 1977",
            (x + 2, y + 14),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (255, 255, 255),
            1,
        )
    text = frames.max(axis=(0, 3)) == 255
    return text & ~mask


@pytest.fixture(scope="module")
def study(pydicom_file: Callable[[str], Path]) -> list[dict[str, object]]:
    """The four files planted as one study of one patient, then de-identified."""
    deid, results = Deidentifier(SECRET), []
    for n, name in enumerate(FILES):
        ds = pydicom.dcmread(pydicom_file(name))
        frames = decode(ds)
        if name == "US1_UNCR.dcm":  # no regions in this file: give it a sector region
            region = Dataset()
            region.RegionLocationMinX0, region.RegionLocationMinY0 = 100, 60
            region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 539, 419
            ds.SequenceOfUltrasoundRegions = [region]
        ds.BurnedInAnnotation = "YES"
        identity = original_identity(ds)
        planter = plant(ds, n)
        mask = region_mask(frames.shape[1:3], regions_of(ds))
        text = burn_text(frames, mask)
        before = pydicom.dcmread(pydicom_file(name))
        out, cleaned = deidentify_instance(ds, frames, deid)
        buf = io.BytesIO()
        out.save_as(buf, enforce_file_format=True)
        results.append(
            {
                "name": name,
                "ds": ds,
                "frames": frames,
                "mask": mask,
                "text": text,
                "out": out,
                "cleaned": cleaned,
                "bytes": buf.getvalue(),
                "planted": planter.tokens,
                "identity": identity,
                "before": before,
            }
        )
    return results


def test_no_planted_or_original_identity_in_the_stored_bytes(study: list[dict]) -> None:
    for r in study:
        data: bytes = r["bytes"]
        leaks = [t for t in r["planted"] + sorted(r["identity"]) if t.encode() in data]
        assert not leaks, (r["name"], leaks)
        header = copy.deepcopy(r["out"])  # short markers: searched outside the pixel bytes
        del header.PixelData
        buf = io.BytesIO()
        header.save_as(buf, enforce_file_format=True)
        assert b"ZQX" not in buf.getvalue(), r["name"]
        assert b"DOE" not in buf.getvalue().upper(), r["name"]


def test_pixels_cleaned_outside_regions_and_untouched_inside(study: list[dict]) -> None:
    for r in study:
        frames, cleaned, mask = r["frames"], r["cleaned"], r["mask"]
        assert r["text"].sum() > 50, r["name"]  # the burned-in text really was outside
        assert not cleaned[:, ~mask].any(), r["name"]
        assert np.array_equal(cleaned[:, mask], frames[:, mask]), r["name"]
        stored = pydicom.dcmread(io.BytesIO(r["bytes"]))
        assert stored.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
        assert np.array_equal(stored.pixel_array.reshape(cleaned.shape), cleaned), r["name"]


def test_pseudonyms_consistent_within_study_and_keyed(study: list[dict]) -> None:
    deid, other = Deidentifier(SECRET), Deidentifier(b"another-secret-0123456789abcdefgh")
    outs = [r["out"] for r in study]
    assert {o.StudyInstanceUID for o in outs} == {deid.pseudonym_uid(STUDY_UID)}
    assert {o.PatientID for o in outs} == {deid.pseudonym_id(MRN)}
    assert len({o.SeriesInstanceUID for o in outs}) == len(outs)
    shift = deid.date_shift_days(MRN)
    assert {o.StudyDate for o in outs} == {shift_da(STUDY_DATE, shift)}
    for r in study:
        out, ds = r["out"], r["ds"]
        assert out.SOPInstanceUID == deid.pseudonym_uid(ds.SOPInstanceUID)
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
        assert out.FrameOfReferenceUID == deid.pseudonym_uid(ds.FrameOfReferenceUID)
        ref = out.ReferencedImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == deid.pseudonym_uid(
            ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID
        )
        again = other.deidentify(ds).dataset
        assert again.SOPInstanceUID != out.SOPInstanceUID
        assert again.PatientID != out.PatientID
        assert r["before"].get("PatientName") != ds.PatientName  # the input was the planted one
        assert "ZQX" in str(ds.PatientName)  # and deidentify_instance left it untouched


def test_characteristics_kept_and_deid_attributes_set(study: list[dict]) -> None:
    for r in study:
        out = r["out"]
        assert (out.PatientAge, out.PatientSex) == ("012Y", "F")
        assert (float(out.PatientWeight), float(out.PatientSize)) == (31.5, 1.32)
        assert out.PatientBirthDate == "" and out.PatientName == ""
        assert out.PatientIdentityRemoved == "YES" and out.BurnedInAnnotation == "NO"
        assert out.LongitudinalTemporalInformationModified == "MODIFIED"
        codes = [
            (i.CodeValue, i.CodingSchemeDesignator) for i in out.DeidentificationMethodCodeSequence
        ]
        assert codes == [(c, "DCM") for c in ("113100", "113101", "113105", "113107", "113108")]
        assert out.PhotometricInterpretation == "RGB" and out.SamplesPerPixel == 3
        assert not any(e.tag.is_private for e in out.iterall())
        assert "SequenceOfUltrasoundRegions" in out and "Rows" in out


def test_burned_in_without_regions_is_quarantined(pydicom_file: Callable[[str], Path]) -> None:
    ds = pydicom.dcmread(pydicom_file("US1_UNCR.dcm"))
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(DeidError, match="quarantined"):
        deidentify_instance(ds, decode(ds), Deidentifier(SECRET))
    del ds.BurnedInAnnotation  # unknown counts as YES
    with pytest.raises(DeidError, match="quarantined"):
        deidentify_instance(ds, decode(ds), Deidentifier(SECRET))
