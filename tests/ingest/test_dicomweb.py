"""DicomWebSource against a real Orthanc (QIDO-RS + WADO-RS), and the multipart splitter."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.ingest.usfiles import US_FILES, expected_groups
from tests.pacs import Orthanc, free_port

from echoscreen.errors import IngestError
from echoscreen.ingest import DicomWebSource
from echoscreen.ingest.dicomweb import MultipartError, boundary_of, split_multipart

#: files with distinct SOPInstanceUIDs (a PACS keeps one object per UID)
PACS_FILES = [
    "examples_ybr_color.dcm",
    "examples_palette.dcm",
    "US1_UNCR.dcm",
    "examples_jpeg2k.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
]


@pytest.fixture
def filled_pacs(orthanc: Orthanc, us_files: dict[str, Path]) -> Orthanc:
    orthanc.clear()
    for name in PACS_FILES:
        orthanc.upload(us_files[name])
    return orthanc


@pytest.mark.parametrize("page_size", [500, 1])
def test_dicomweb_source_fetches_every_study_byte_exact(
    filled_pacs: Orthanc, us_files: dict[str, Path], page_size: int
) -> None:
    source = DicomWebSource(filled_pacs.dicomweb_url + "/", page_size=page_size)
    try:
        assert source.count_hint() == len(expected_groups(PACS_FILES))
        batches = list(source.studies())
    finally:
        source.close()
    by_bytes = {us_files[name].read_bytes(): name for name in PACS_FILES}
    got = {b.key: {by_bytes[i.data] for i in b.instances} for b in batches}
    assert got == expected_groups(PACS_FILES)
    assert all(not b.unreadable for b in batches)
    assert all(i.origin.startswith(filled_pacs.dicomweb_url) for b in batches for i in b.instances)


def test_dicomweb_source_with_given_uids_and_a_missing_study(filled_pacs: Orthanc) -> None:
    wanted = US_FILES["US1_UNCR.dcm"]
    source = DicomWebSource(filled_pacs.dicomweb_url, study_uids=[wanted, "1.2.3.4.5.404"])
    batches = list(source.studies())
    source.close()
    assert [b.key for b in batches] == [wanted, "1.2.3.4.5.404"]
    assert len(batches[0].instances) == 2
    assert not batches[1].instances
    ((inst, reason),) = batches[1].unreadable
    assert inst.origin.endswith("/studies/1.2.3.4.5.404")
    assert reason == "WADO-RS answered HTTP 404 for the study"


def test_unreachable_or_wrong_dicomweb_url_is_a_clear_error(orthanc: Orthanc) -> None:
    with pytest.raises(IngestError, match="cannot be reached"):
        DicomWebSource(f"http://127.0.0.1:{free_port()}/dicom-web").count_hint()
    with pytest.raises(IngestError, match="HTTP 404"):
        DicomWebSource(f"{orthanc.url}/not-dicom-web").count_hint()


def test_boundary_is_read_quoted_or_bare() -> None:
    assert boundary_of('multipart/related; type="application/dicom"; boundary="a b:c"') == (
        b"a b:c"
    )
    assert boundary_of("Multipart/Related;boundary=XyZ;type=application/dicom") == b"XyZ"
    # RFC 9110 quoted-strings: backslash escapes undone, a quoted "; boundary=" is text
    assert boundary_of('multipart/related; boundary="a\\"b\\\\c"') == b'a"b\\c'
    quoted = 'multipart/related; type="application/dicom; boundary=no"; boundary=yes'
    assert boundary_of(quoted) == b"yes"
    with pytest.raises(MultipartError):
        boundary_of("application/dicom")
    with pytest.raises(MultipartError):
        boundary_of("multipart/related; type=application/dicom")


def test_split_multipart_is_byte_exact_and_tolerant() -> None:
    tricky = b"\r\n--XyZ-not-a-delimiter\r\n\r\n\x00\xff--XyZ"  # lookalikes inside the data
    body = (
        b"preamble to ignore\r\n"
        b"--XyZ\r\nContent-Type: application/dicom\r\nContent-Length: 3\r\n\r\nabc\r\n"
        b"--XyZ\nContent-Type: application/dicom\n\n" + tricky + b"\r\n"
        b"--XyZ\r\n\r\nno headers\r\n"
        b"--XyZ--\r\nepilogue"
    )
    parts = split_multipart(body, b"XyZ")
    assert [data for _, data in parts] == [b"abc", tricky, b"no headers"]
    assert parts[0][0] == {"content-type": "application/dicom", "content-length": "3"}
    assert parts[2][0] == {}


def test_split_multipart_refuses_truncated_bodies() -> None:
    whole = b"--B\r\nContent-Type: application/dicom\r\n\r\nabc\r\n--B--\r\n"
    assert split_multipart(whole, b"B") == [({"content-type": "application/dicom"}, b"abc")]
    with pytest.raises(MultipartError, match="truncated"):
        split_multipart(whole[:30], b"B")
    with pytest.raises(MultipartError, match="without any delimiter"):
        split_multipart(b"<html>error page</html>", b"B")
