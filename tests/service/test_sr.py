"""build_sr on a real screening result of a phantom study: what the SR says, checked back."""

from __future__ import annotations

import copy
import io

import highdicom
import pydicom
import pytest
from tests.service.screened import Screened, screened

from echoscreen.errors import ServiceError
from echoscreen.service.pacs import originals_of
from echoscreen.service.sr import build_sr, read_sr

__all__ = ["screened"]

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def _reparsed(sr: pydicom.Dataset) -> pydicom.Dataset:
    """The SR written as a Part 10 file and read back, as a PACS would hold it."""
    buf = io.BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def test_sr_says_what_the_result_says_and_references_the_screened_instances(
    screened: Screened,
) -> None:
    originals = screened.originals()
    sr = _reparsed(build_sr(screened.result, originals))
    doc = highdicom.sr.ComprehensiveSR.from_dataset(sr)  # highdicom accepts it as a document
    assert doc.SOPClassUID == COMPREHENSIVE_SR and doc.Modality == "SR"
    # filed with the screened study of the same patient
    first = originals[0]
    for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "AccessionNumber"):
        assert sr.get(keyword) == first.get(keyword), keyword
    got, want = read_sr(sr), screened.result
    assert got["decision"] == want["decision"]
    assert got["p_screen"] == pytest.approx(want["p_screen"])
    assert got["threshold"] == pytest.approx(want["threshold"])
    assert got["algorithm"] == {"name": "tiny", "version": "1"}
    assert len(got["clips"]) == len(want["clips"]) > 0
    for mine, theirs in zip(got["clips"], want["clips"], strict=True):
        assert mine["sop_instance_uid"] == originals[theirs["file_index"]].SOPInstanceUID
        assert mine["view"] == theirs["view"]
        assert mine["confidence"] == pytest.approx(theirs["confidence"])
        assert mine["evidence"] == theirs["evidence"]
        assert mine["p_clip_screen"] == pytest.approx(theirs["p_clip_screen"])
    # the evidence list names every screened instance with its SOP class
    listed = {(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
              for s in sr.CurrentRequestedProcedureEvidenceSequence
              for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}  # fmt: skip
    screened_files = {originals[c["file_index"]].SOPInstanceUID for c in want["clips"]}
    assert {u for _, u in listed} == screened_files
    assert {c for c, _ in listed} == {str(o.SOPClassUID) for o in originals}
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99ECHOSCREEN"


def test_one_job_gives_one_sr_identity_and_another_job_another(screened: Screened) -> None:
    originals = screened.originals()
    a = build_sr(screened.result, originals)
    again = build_sr(screened.result, originals)
    other = build_sr({**screened.result, "job": "f" * 32}, originals)
    assert (
        a.SOPInstanceUID == again.SOPInstanceUID and a.SeriesInstanceUID == again.SeriesInstanceUID
    )
    assert other.SOPInstanceUID != a.SOPInstanceUID
    assert a.SOPInstanceUID not in {o.SOPInstanceUID for o in originals}


def test_inconclusive_result_carries_its_reason_and_model_version(screened: Screened) -> None:
    result = copy.deepcopy(screened.result)
    result.update(decision="inconclusive", p_screen=None, model_version="1+sha256:ab12",
                  reason="no clip of the aortic valve was recognised")  # fmt: skip
    got = read_sr(_reparsed(build_sr(result, screened.originals())))
    assert got["decision"] == "inconclusive"
    assert got["p_screen"] is None
    assert got["reason"] == "no clip of the aortic valve was recognised"
    assert got["algorithm"]["version"] == "1+sha256:ab12"


def test_originals_without_type2_patient_attributes_still_give_an_sr(screened: Screened) -> None:
    originals = screened.originals()
    for ds in originals:
        for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID"):
            if keyword in ds:
                delattr(ds, keyword)
    sr = _reparsed(build_sr(screened.result, originals))
    assert sr.PatientBirthDate == "" and sr.StudyInstanceUID == originals[0].StudyInstanceUID


def test_unusable_inputs_raise_service_errors_that_say_what_is_wrong(screened: Screened) -> None:
    with pytest.raises(ServiceError, match="unknown decision"):
        build_sr({**screened.result, "decision": "maybe"}, screened.originals())
    junk = originals_of([("a.txt", b"not dicom at all"), ("b.bin", b"\x00" * 300)])
    with pytest.raises(ServiceError, match="none of the original files"):
        build_sr(screened.result, junk)
