"""The HTTP API against the real engine and the tiny package, served by uvicorn on loopback.

One service for the module (queue of 2, one job thread, small limits) driven by real httpx
clients: auth, async jobs, sync screening, STOW-RS, health and metrics, every kind of bad
input (a 4xx with a reason, never a 500), overload (503 + Retry-After) and the access log.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import socket
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from tests.registry.pkgfix import Published
from tests.service.live import Live, MiB, live_service
from tests.service.live import form as _form
from tests.service.live import wait as _wait
from tests.service.live import zipped as _zip

from echoscreen.service.app import ACCESS_LOG


@pytest.fixture(scope="module")
def live(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_service(published, tmp_path_factory.mktemp("service-state")) as service:
        yield service


def test_tokens_required_and_revocation(live: Live) -> None:
    with live.client(None) as c:
        r = c.post("/v1/studies", files=_form(live.study[:1]))
        assert r.status_code == 401 and "bearer token" in r.json()["error"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/v1/jobs/" + "0" * 32).status_code == 401
        assert c.get("/healthz").json()["model"] == "tiny:1"  # public
    with live.client("es_" + "x" * 43) as c:
        assert c.post("/v1/screen", files=_form(live.study[:1])).status_code == 401
    secret = live.tokens.create("leaver")
    with live.client(secret) as c:
        assert c.get("/v1/jobs/" + "0" * 32).status_code == 404  # authorised, no such job
        live.tokens.revoke("leaver")
        r = c.get("/v1/jobs/" + "0" * 32)
        assert r.status_code == 401 and "revoked" in r.json()["error"]


def test_async_job_sync_screen_and_explanations(live: Live) -> None:
    with live.client() as c:
        r = c.post("/v1/studies", files=_form(live.study))
        assert r.status_code == 202, r.text
        job = r.json()["job"]
        assert r.json()["status_url"] == r.headers["location"] == f"/v1/jobs/{job}"
        doc = _wait(c, job)
        assert doc["status"] == "done", doc
        result = doc["result"]
        assert result["decision"] in ("screen-positive", "normal", "inconclusive")
        assert result["model_version"] and result["job"] == job
        indexes = sorted(clip["file_index"] for clip in result["clips"])
        assert indexes == list(range(len(live.study)))
        assert all("file" not in clip for clip in result["clips"])
        for ex in result["explanations"]:
            png = c.get(ex["url"])
            assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        assert c.get(f"/v1/jobs/{job}/explanations/99.png").status_code == 404
    with live.client(live.tokens.create("clinic-b")) as other:  # not its job: as if unknown
        assert other.get(f"/v1/jobs/{job}").status_code == 404
        if result["explanations"]:
            assert other.get(result["explanations"][0]["url"]).status_code == 404
    with live.client() as c:
        sync = c.post("/v1/screen", content=_zip(live.study),
                      headers={"Content-Type": "application/zip"})  # fmt: skip
        assert sync.status_code == 200, sync.text
        same = ("decision", "p_screen", "model_version")
        assert {k: sync.json()[k] for k in same} == {k: result[k] for k in same}


def test_stow_rs(live: Live) -> None:
    boundary = "stow-b0undary"
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    body = b"".join(head + data + b"\r\n" for _, data in live.study)
    body += f"--{boundary}--\r\n".encode()
    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    with live.client() as c:
        r = c.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype,
                   "Accept": "application/dicom+json"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/dicom+json")
        refs = r.json()["00081199"]["Value"]
        uids = {str(pydicom.dcmread(io.BytesIO(d), stop_before_pixels=True).SOPInstanceUID)
                for _, d in live.study}  # fmt: skip
        assert {ref["00081155"]["Value"][0] for ref in refs} == uids
        assert _wait(c, r.headers["x-echoscreen-job"])["status"] == "done"
        bad = c.post("/dicomweb/studies", content=_zip(live.study),
                     headers={"Content-Type": "application/zip"})  # fmt: skip
        assert bad.status_code == 415


def _bad_inputs(live: Live, pydicom_file: Callable[[str], Path]) -> dict[str, Any]:
    """name -> (request kwargs, expected status) of bad uploads."""
    dcm = live.study[0][1]
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.dcm", bytes(3 * MiB))
    zip_ct = {"Content-Type": "application/zip"}
    one = _zip(live.study[:1])  # the member's deflate stream zeroed, its directory intact
    cd = one.rfind(b"PK\x01\x02")
    damaged = one[:60] + bytes(cd - 60) + one[cd:]
    return {
        "not dicom": ({"files": _form([("notes.txt", b"just some text " * 100)])}, 422),
        "truncated": ({"files": _form([("cut.dcm", dcm[:300])])}, 422),
        "wrong modality": ({"files": _form([("ct.dcm",
                                             pydicom_file("CT_small.dcm").read_bytes())])}, 422),
        "too large": ({"content": os.urandom(6 * MiB), "headers": zip_ct}, 413),
        "too large, streamed": ({"content": [os.urandom(MiB)] * 7, "headers": zip_ct}, 413),
        "zip bomb": ({"content": bomb.getvalue(), "headers": zip_ct}, 413),
        "too many files": ({"content": _zip([(f"{i}.dcm", dcm[:10]) for i in range(31)]),
                            "headers": zip_ct}, 413),
        "nested zip": ({"content": _zip([("inner.zip", _zip(live.study[:1]))]),
                        "headers": zip_ct}, 422),
        "damaged zip": ({"content": damaged, "headers": zip_ct}, 422),
        "empty": ({"content": b"", "headers": zip_ct}, 400),
        "unsupported type": ({"content": b"{}", "headers": {"Content-Type": "text/json"}}, 415),
        "gzip-encoded": ({"content": gzip.compress(dcm), "headers": {
            "Content-Type": "application/dicom", "Content-Encoding": "gzip"}}, 415),
    }  # fmt: skip


def test_bad_inputs_are_4xx_with_a_reason(live: Live,
                                          pydicom_file: Callable[[str], Path]) -> None:  # fmt: skip
    with live.client() as c:
        for what, (kwargs, status) in _bad_inputs(live, pydicom_file).items():
            for route in ("/v1/studies", "/v1/screen"):
                r = c.post(route, **kwargs)
                assert r.status_code == status, (what, route, r.text)
                assert len(r.json()["error"]) > 10, (what, r.text)
        many = c.post("/v1/screen", files=_form(live.study + live.study[:1]))  # > max_sync_files
        assert many.status_code == 413 and "/v1/studies" in many.json()["error"]
        # a US file whose header reads but whose pixels do not: no usable clip
        head = pydicom.dcmread(io.BytesIO(live.study[0][1]))
        head.PixelData = head.PixelData[:100]
        buf = io.BytesIO()
        head.save_as(buf, enforce_file_format=True)
        r = c.post("/v1/screen", files=_form([("broken.dcm", buf.getvalue())]))
        assert r.status_code == 422 and "error" in r.json(), r.text
        assert c.get("/v1/jobs/not-a-job").status_code == 404
        assert c.get("/v1/jobs/" + "0" * 32 + "/explanations/x.png").status_code == 422
        assert c.get("/nowhere").status_code == 404


def _half_upload(live: Live) -> socket.socket:
    """A connection that sent the headers and 1000 of the 100000 bytes it declares."""
    host, port = live.url.removeprefix("http://").split(":")
    head = (f"POST /v1/studies HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {live.token}"
            "\r\nContent-Type: application/dicom\r\nContent-Length: 100000\r\n\r\n")  # fmt: skip
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(head.encode() + live.study[0][1][:1000])
    return sock


def test_an_upload_that_stalls_is_a_408_and_the_connection_closes(live: Live) -> None:
    """A client that stops sending mid-body is not waited for forever (upload_idle_s=1)."""
    start = time.monotonic()
    with _half_upload(live) as sock:
        answer = b""
        while chunk := sock.recv(1 << 16):  # until the server closes the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"stalled" in answer and time.monotonic() - start < 5


def _connect(live: Live) -> socket.socket:
    host, port = live.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _until_closed(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(1 << 16):
        answer += chunk
    return answer


def test_a_connection_that_sends_nothing_is_closed_with_408(live: Live) -> None:
    """head_timeout_s=1: an idle new connection no longer holds a socket forever."""
    start = time.monotonic()
    with _connect(live) as sock:
        answer = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"request head" in answer, answer
    assert time.monotonic() - start < 5


def test_a_head_trickled_byte_by_byte_is_cut_at_its_deadline(live: Live) -> None:
    """Slowloris: each byte used to cancel uvicorn's only timer, so the head never ended."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40
    start = time.monotonic()
    with _connect(live) as sock:
        sock.settimeout(0.25)
        answer = b""
        for byte in head:  # 10 s of trickle if the server waited for all of it
            try:
                sock.sendall(bytes([byte]))
                answer += sock.recv(1 << 16)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if answer.endswith(b"\n") and b"408" in answer:
                break
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - start < 5


def test_an_idle_keep_alive_connection_outlives_the_head_deadline(live: Live) -> None:
    """The head deadline runs from a request's first byte, not from the last response:
    a connection kept alive (uvicorn's 30 s) still serves its next request after 1.5 s,
    and a pipelined request whose head stays incomplete is then cut with 408."""
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with _connect(live) as sock:
        sock.sendall(get)
        first = sock.recv(1 << 16)
        time.sleep(1.5)
        sock.sendall(get + b"GET /healthz HTTP/1.1\r\nHo")
        answer = _until_closed(sock)
    assert first.startswith(b"HTTP/1.1 200 "), first
    assert answer.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 408 " in answer, answer


def test_an_upload_cut_short_by_the_client_is_a_400_not_a_bug(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    """The client sends half the body it declared and hangs up: logged as its 400."""
    caplog.set_level(logging.INFO, logger=ACCESS_LOG)
    with _half_upload(live) as sock:
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1 << 16)  # the answer (if the server still sends one) or the close
    deadline = time.monotonic() + 10
    lines: list[str] = []
    while time.monotonic() < deadline and not lines:
        lines = [r.getMessage() for r in caplog.records
                 if r.name == ACCESS_LOG and "POST /v1/studies" in r.getMessage()]  # fmt: skip
        time.sleep(0.05)
    assert lines and " 400 " in lines[0], lines
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_overload_answers_503_with_retry_after(live: Live) -> None:
    def post(_: int) -> httpx.Response:
        with live.client() as c:
            return c.post("/v1/studies", files=_form(live.study))

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(post, range(12)))
    codes = sorted(r.status_code for r in answers)
    assert set(codes) == {202, 503}, codes
    for r in answers:
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1 and "retry" in r.json()["error"]
    with live.client() as c:  # every accepted job still finishes
        for r in answers:
            if r.status_code == 202:
                assert _wait(c, r.json()["job"])["status"] == "done"


def test_health_metrics_and_access_log(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOG)
    with live.client() as c:
        r = c.post("/v1/screen", files=_form(live.study))
        assert r.status_code == 200
        assert c.get("/healthz").json() == {"status": "ok", "model": "tiny:1", "queue_depth": 0,
                                            "dicom": False}  # fmt: skip
        text = c.get("/metrics").text
    for needle in ('echoscreen_request_seconds_bucket{le="0.005",method="POST",route="/v1/screen"',
                   "echoscreen_queue_depth 0.0", "echoscreen_batch_size_count{model=\"view\"}",
                   'echoscreen_decisions_total{decision="', 'echoscreen_model_info{backend="onnx",'
                   'model="tiny:1"} 1.0', 'route="/v1/jobs/{job_id}"'):  # fmt: skip
        assert needle in text, needle
    lines = [rec.getMessage() for rec in caplog.records if rec.name == ACCESS_LOG]
    assert any(line.startswith("client=clinic-a POST /v1/screen 200 ") for line in lines), lines
    ds = pydicom.dcmread(io.BytesIO(live.study[0][1]), stop_before_pixels=True)
    private = [str(ds.PatientName), str(ds.PatientID), str(ds.StudyInstanceUID), live.study[0][0]]
    for line in lines:
        assert not any(p and p in line for p in private), line


def test_a_bug_is_a_500_without_details(caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected exception in a route: logged with its traceback, answered without it."""
    import asyncio

    from fastapi import FastAPI

    from echoscreen.service.app import AccessLog
    from echoscreen.service.metrics import Metrics

    app = FastAPI()

    @app.get("/v1/bug/{x}")
    def bug(x: str) -> None:
        raise RuntimeError(f"secret detail {x}")

    metrics = Metrics()
    app.add_middleware(AccessLog, metrics=metrics)
    caplog.set_level(logging.INFO)

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test") as c:  # fmt: skip
            return await c.get("/v1/bug/1.2.840.99")

    r = asyncio.run(get())
    assert r.status_code == 500 and "internal error" in r.json()["error"]
    assert "secret" not in r.text and "Traceback" not in r.text
    assert any(rec.exc_info and "secret detail" in str(rec.exc_info[1]) for rec in caplog.records)
    access = [rec.getMessage() for rec in caplog.records if rec.name == ACCESS_LOG]
    assert access == [access[0]] and "GET /v1/bug/{x} 500" in access[0]
    assert "1.2.840.99" not in access[0]
    labels = {"route": "/v1/bug/{x}", "method": "GET", "status": "500"}
    assert metrics.sample("echoscreen_request_seconds_count", labels) == 1.0
