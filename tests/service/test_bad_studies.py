"""Bad studies and odd requests against the real service on loopback (tests/service/live.py).

Each test is a defect a bad-input sweep found: what the service answered, and what it
must answer instead.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator

import pydicom
import pytest
from tests.registry.pkgfix import Published
from tests.service.live import Live, form, live_service, wait, zipped


@pytest.fixture(scope="module")
def live(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_service(published, tmp_path_factory.mktemp("service-state")) as service:
        yield service


def _identifying(data: bytes) -> list[str]:
    """The header values of a file that identify the patient, the study or the image."""
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    keywords = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID",
                "PatientName")  # fmt: skip
    return [str(ds.get(k)) for k in keywords if str(ds.get(k) or "")]


def _with_frames(data: bytes, value: str) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.NumberOfFrames = value
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize("frames", ["0", "-3"])
def test_a_file_declaring_no_frames_is_refused_at_the_door(live: Live, frames: str) -> None:
    """NumberOfFrames 0 or negative passed the door ('0 or 1' read it as 1): 202, and the
    job failed later."""
    data = _with_frames(live.study[0][1], frames)
    with live.client() as c:
        for route in ("/v1/studies", "/v1/screen"):
            r = c.post(route, files=form([("a.dcm", data)]))
            assert r.status_code == 422, (route, r.text)
            reason = r.json()["error"]
            assert f"file 0: DICOM 1.2.840.10008.5.1.4.1.1.3.1 declares {frames} frames" in reason
            assert not [v for v in _identifying(data) if v in reason], reason
        # beside readable files it is skipped by index, and the others are screened
        r = c.post("/v1/screen", files=form([*live.study[:2], ("a.dcm", data)]))
        assert r.status_code == 200, r.text
        assert [s["file_index"] for s in r.json()["skipped"]] == [2]
        assert "declares" in r.json()["skipped"][0]["reason"]


@pytest.mark.parametrize("size", [200, 300, 600, 1500])
def test_a_file_cut_inside_its_header_is_refused_as_truncated(live: Live, size: int) -> None:
    """It was 'modality missing, not ultrasound' (cut before the Modality), or passed the
    door (cut after it) and failed later: pydicom reads a cut header as if it ended."""
    with live.client() as c:
        r = c.post("/v1/studies", files=form([("cut.dcm", live.study[0][1][:size])]))
    assert r.status_code == 422, r.text
    assert "file 0: the file is truncated: it ends inside its DICOM header" in r.json()["error"]


@pytest.mark.parametrize("name", ["../x.dcm", "/abs/x.dcm", "C:\\x.dcm"])
def test_a_zip_with_a_member_named_as_an_unsafe_path_is_refused(live: Live, name: str) -> None:
    """``../x.dcm`` was dropped without a word (read as a dot folder), ``/abs/x.dcm``
    screened: the zip is refused whole, as ingest and offline screen refuse it, and the
    member's name (a file name may name the patient) is not quoted back."""
    archive = zipped([*live.study[1:3], (name, live.study[0][1])])
    as_body = {"content": archive, "headers": {"Content-Type": "application/zip"}}
    as_part = {"files": [("files", ("study.zip", archive, "application/zip"))]}
    with live.client() as c:
        for kwargs in (as_body, as_part):
            r = c.post("/v1/studies", **kwargs)
            assert r.status_code == 422, r.text
            reason = r.json()["error"]
            assert "entry 2 in the directory of zip (part 0) is named with an unsafe path" in reason
            assert "x.dcm" not in reason


def _multipart(boundary: str, parts: list[tuple[str, bytes]]) -> bytes:
    """A multipart body: ``(part headers, body)`` per part, delimited by ``boundary``."""
    delim = f"--{boundary}".encode("latin-1")
    body = b"".join(delim + b"\r\n" + head.encode() + b"\r\n\r\n" + data + b"\r\n"
                    for head, data in parts)  # fmt: skip
    return body + delim + b"--\r\n"


@pytest.mark.parametrize(("ctype", "boundary"), [
    ('multipart/related; type="application/dicom"; boundary="stow \\"b0\\" 1"', 'stow "b0" 1'),
    ('multipart/related; boundary="a; type=application/json"; type="application/dicom"',
     "a; type=application/json"),
    ('multipart/related; type="application/dicom"; boundary="a \\\\ b"', "a \\ b"),
])  # fmt: skip
def test_stow_with_a_quoted_boundary_is_read_as_rfc_9110_says(
    live: Live, ctype: str, boundary: str
) -> None:
    """Parameters were split at every ';' and their quotes stripped, not unescaped: a
    boundary with an escaped quote or backslash was not found (400 'malformed'), and a
    ';' inside a quoted boundary made its text look like a 'type' parameter (415)."""
    body = _multipart(boundary, [("Content-Type: application/dicom", d) for _, d in live.study])
    with live.client() as c:
        r = c.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
        assert r.status_code == 200, r.text
        assert len(r.json()["00081199"]["Value"]) == len(live.study)
        assert wait(c, r.headers["x-echoscreen-job"])["status"] == "done"


def test_a_form_upload_with_a_quoted_boundary_and_file_names(live: Live) -> None:
    """The same parsing for multipart/form-data and its parts' Content-Disposition: a
    quoted ';' in a file name no longer cuts the name short (a zip named 'a;b.zip'
    was not recognised by its name)."""
    boundary = 'form "b" 2'
    head = 'Content-Disposition: form-data; name="files"; filename="study;{k}.zip"'
    parts = [(head.format(k=k), zipped([(n, d)])) for k, (n, d) in enumerate(live.study)]
    ctype = 'multipart/form-data; boundary="form \\"b\\" 2"'
    with live.client() as c:
        r = c.post("/v1/screen", content=_multipart(boundary, parts),
                   headers={"Content-Type": ctype})  # fmt: skip
    assert r.status_code == 200, r.text
    assert len(r.json()["clips"]) + len(r.json()["skipped"]) == len(live.study)


@pytest.mark.parametrize("job", ["x" * 60_000, "é" * 50, "%FF%FE", "%00", "%E2%80%AE",
                                 "0" * 32 + "%0A", "0" * 31 + "G"])  # fmt: skip
def test_a_404_for_an_odd_job_id_does_not_echo_it(live: Live, job: str) -> None:
    """The whole id was echoed however long (a 100 KB id came back in full), and whatever
    it held (a NUL, a right-to-left override, a newline)."""
    with live.client() as c:
        for path in (f"/v1/jobs/{job}", f"/v1/jobs/{job}/explanations/0.png"):
            r = c.get(path)
            assert r.status_code == 404, r.text
            assert len(r.text) < 300 and "not one: a job id is the 32 hexadecimal" in r.text
        real = "0123456789abcdef" * 2  # an id of the right form is named
        assert real in c.get(f"/v1/jobs/{real}").json()["error"]


def test_a_100_kb_job_id_gets_a_short_404(live: Live) -> None:
    """Past httpx's own URL limit: a raw request line, as any client may send it."""
    host, port = live.url.removeprefix("http://").split(":")
    head = (f"GET /v1/jobs/{'y' * 100_000} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Authorization: Bearer {live.token}\r\n\r\n")  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = b"".join(iter(lambda: sock.recv(1 << 16), b""))
    assert answer.startswith(b"HTTP/1.1 404 ") and len(answer) < 1000, answer[:200]
