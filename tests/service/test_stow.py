"""STOW-RS status codes as DICOM PS3.18 gives them, on the real service on loopback.

200: every instance taken; 202: some taken, the others in the Failed SOP Sequence; 409:
none taken (none is DICOM, or none can be screened); 4xx with a reason for a request
that is not a STOW-RS request. A CT instance beside an echo study was listed as stored
(200) although the door left it out; a request of CT instances only answered 422.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from tests.registry.pkgfix import Published
from tests.service.live import Live, live_service, wait

STOW = 'multipart/related; type="application/dicom"; boundary=stow-b'


@pytest.fixture(scope="module")
def live(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_service(published, tmp_path_factory.mktemp("service-state")) as service:
        yield service


def _body(parts: list[bytes], ptype: str = "application/dicom") -> bytes:
    head = f"--stow-b\r\nContent-Type: {ptype}\r\n\r\n".encode()
    return b"".join(head + d + b"\r\n" for d in parts) + b"--stow-b--\r\n"


def _uids(data: bytes) -> tuple[str, str]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.SOPClassUID), str(ds.SOPInstanceUID)


def _items(doc: dict, tag: str) -> list[tuple[str | None, str | None, int | None]]:
    def one(item: dict, key: str) -> str | int | None:
        return item[key]["Value"][0] if key in item else None

    return [(one(i, "00081150"), one(i, "00081155"), one(i, "00081197"))  # type: ignore[misc]
            for i in doc.get(tag, {}).get("Value", [])]  # fmt: skip


def test_parts_the_door_refuses_are_failed_instances_and_the_answer_is_202(
    live: Live, pydicom_file: Callable[[str], Path]
) -> None:
    ct = pydicom_file("CT_small.dcm").read_bytes()
    echo = [d for _, d in live.study]
    with live.client() as c:
        r = c.post("/dicomweb/studies", content=_body([*echo, ct, b"not dicom " * 40]),
                   headers={"Content-Type": STOW})  # fmt: skip
        assert r.status_code == 202, r.text
        doc = r.json()
        assert _items(doc, "00081199") == [(*_uids(d), None) for d in echo]
        assert _items(doc, "00081198") == [(*_uids(ct), 0x0122), (None, None, 0xC000)]
        job = wait(c, r.headers["x-echoscreen-job"])
        assert job["status"] == "done", job
        assert [s["file_index"] for s in job["result"]["skipped"]] == [len(echo), len(echo) + 1]


def test_an_instance_without_its_uids_is_failed_and_not_screened(live: Live) -> None:
    """A part with no SOP Instance UID was listed as failed (0xC000) in the answer while
    the door let it into the job and it was screened: now the door refuses it too."""
    echo = [d for _, d in live.study]
    ds = pydicom.dcmread(io.BytesIO(echo[0]))
    del ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with live.client() as c:
        r = c.post("/dicomweb/studies", content=_body([buf.getvalue(), *echo[1:]]),
                   headers={"Content-Type": STOW})  # fmt: skip
        assert r.status_code == 202, r.text
        assert _items(r.json(), "00081198") == [(None, None, 0xC000)]
        job = wait(c, r.headers["x-echoscreen-job"])
        assert job["status"] == "done", job
        skipped = job["result"]["skipped"]
        assert [s["file_index"] for s in skipped] == [0], skipped
        assert "no SOP Instance UID" in skipped[0]["reason"]
        assert 0 not in {e["file_index"] for e in job["result"]["evidence"]["considered"]
                         if e["clip"] is not None}  # fmt: skip


def test_a_request_with_nothing_to_store_is_409_with_a_reason(
    live: Live, pydicom_file: Callable[[str], Path]
) -> None:
    ct = pydicom_file("CT_small.dcm").read_bytes()
    with live.client() as c:
        for parts in ([ct], [ct, b"not dicom " * 40], [b"not dicom " * 40]):
            r = c.post("/dicomweb/studies", content=_body(parts), headers={"Content-Type": STOW})
            assert r.status_code == 409, r.text
            reason = r.json()["error"]
            assert ("file 0: modality CT" if ct in parts else "no part") in reason, reason
            assert not [v for v in _uids(ct) if v in reason]
            if len(parts) == 2:
                assert "file 0: modality CT" in reason and "file 1: not a DICOM" in reason


@pytest.mark.parametrize(("ctype", "body", "status"), [
    (STOW, _body([b"{}"], "application/json"), 415),      # a part of another type
    ("application/dicom", b"DICM", 415),                  # not multipart/related
    (STOW, b"--stow-b--\r\n", 400),                       # no part
    (STOW, b"--stow-b\r\nContent-Type: application/dicom\r\n\r\nabc", 400),  # cut short
])  # fmt: skip
def test_a_request_that_is_not_stow_rs_is_a_4xx_with_a_reason(
    live: Live, ctype: str, body: bytes, status: int
) -> None:
    with live.client() as c:
        r = c.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
        assert r.status_code == status, r.text
        assert r.json()["error"]
