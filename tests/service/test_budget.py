"""One bound on the study bytes held in memory (``max_queued_bytes``), on the live service.

Every accepted job held its upload until it finished, with no bound but ``queue_size`` x
``max_upload_bytes`` (64 x 512 MiB). Here the bound is 3 MiB: an upload that would pass it
gets 503 with Retry-After before its body is read, and the bytes come back when an upload
fails or a job ends.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from tests.registry.pkgfix import Published
from tests.service.live import Live, MiB, form, live_service, until, wait

from echoscreen.errors import ConfigError
from echoscreen.service.config import ServiceConfig


@pytest.fixture(scope="module")
def live(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_service(published, tmp_path_factory.mktemp("service-state"),
                      max_upload_bytes=2 * MiB, max_queued_bytes=3 * MiB) as service:  # fmt: skip
        yield service


def _metric(c: httpx.Client, name: str) -> float:
    for line in c.get("/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def _held(c: httpx.Client) -> float:
    return _metric(c, "echoscreen_queued_bytes")


def _until(c: httpx.Client, ok: Callable[[float], bool], timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while True:
        held = _held(c)
        if ok(held) or time.monotonic() > deadline:
            return held
        time.sleep(0.05)


def _head(live: Live, length: int) -> bytes:
    host = live.url.removeprefix("http://")
    return (f"POST /v1/studies HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {live.token}"
            f"\r\nContent-Type: application/zip\r\nContent-Length: {length}\r\n\r\n").encode()


def _connect(live: Live) -> socket.socket:
    host, port = live.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def test_an_upload_over_the_bound_is_503_before_its_body_is_read(live: Live) -> None:
    with live.client() as c, _connect(live) as slow:
        assert _held(c) == 0
        slow.sendall(_head(live, 2 * MiB) + b"PK\x03\x04")  # declared 2 MiB, then stalls
        assert _until(c, lambda h: h >= 2 * MiB) == 2 * MiB  # held from the head on
        with _connect(live) as other:  # 2 MiB more would pass 3 MiB: refused at its head
            start = time.monotonic()
            other.sendall(_head(live, 2 * MiB))
            answer = other.recv(65536)
            assert time.monotonic() - start < 0.9  # not the 408 of a body never sent (1 s)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        assert b"retry-after: 5" in answer.lower()
        assert b"3 MiB" in answer and live.token.encode() not in answer
        # without a Content-Length: refused as the bytes arrive past the bound
        r = c.post("/v1/studies", content=iter([b"PK\x03\x04" + bytes(64 << 10)] * 32),
                   headers={"Content-Type": "application/zip"})  # fmt: skip
        assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
        assert _held(c) == 2 * MiB  # the refused upload held nothing afterwards
        assert b"stalled" in slow.recv(65536)  # the stalled one: 408 after upload_idle_s
        assert _until(c, lambda h: h == 0) == 0  # its bytes given back


def test_accepted_jobs_hold_their_bytes_until_they_end(live: Live) -> None:
    with live.client() as c:
        r = c.post("/v1/studies", files=form(live.study))
        assert r.status_code == 202, r.text
        assert wait(c, r.json()["job"])["status"] == "done"
        assert _until(c, lambda h: h == 0) == 0
        bad = c.post("/v1/studies", files=form([("a.txt", b"not dicom " * 100)]))
        assert bad.status_code == 422 and _held(c) == 0  # refused at the door: given back
        sync = c.post("/v1/screen", files=form(live.study))
        assert sync.status_code == 200 and _held(c) == 0
        jobs = [c.post("/v1/studies", files=form(live.study)) for _ in range(2)]
        assert all(j.status_code == 202 for j in jobs)
        for j in jobs:
            assert wait(c, j.json()["job"])["status"] == "done"
        assert _until(c, lambda h: h == 0) == 0


def test_a_bound_below_the_upload_limit_is_refused_at_start(published: Published,
                                                           tmp_path: Path) -> None:  # fmt: skip
    cfg = ServiceConfig(registry=published.registry, model=published.ref, state_dir=tmp_path,
                        max_upload_bytes=8 * MiB, max_queued_bytes=4 * MiB)  # fmt: skip
    with pytest.raises(ConfigError, match="--max-queued-mb"):
        cfg.validate()


def _refused(c: httpx.Client) -> float:
    return _metric(c, "echoscreen_scp_out_of_resources_total")


def _scu(port: int, datasets: list[Any]) -> Any:
    """An association from a scanner's AE title, open for ``datasets`` (pynetdicom as SCU)."""
    from pynetdicom import AE

    ae = AE(ae_title="ECHOCART3")
    for sop, ts in {(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets}:
        ae.add_requested_context(sop, ts)
    assoc = ae.associate("127.0.0.1", port, ae_title="ECHOSCREEN")
    assert assoc.is_established
    return assoc


def test_the_scp_holds_what_associations_received_and_answers_a700_past_the_bound(
    published: Published, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A study the SCP is still receiving holds its bytes; past the bound C-STORE answers
    0xA700 (out of resources), counted and logged without UIDs; nothing accepted is lost."""
    paths = sorted((sorted(f.rglob("*.dcm")) for f in published.train_study_folders()[:2]),
                   key=lambda study: -sum(p.stat().st_size for p in study))  # larger first
    first, second = ([pydicom.dcmread(p) for p in study] for study in paths)
    size = sum(p.stat().st_size for p in paths[0])
    bound = size + (16 << 10)  # room for either study, not for both at once
    assert paths[1][0].stat().st_size > 16 << 10
    caplog.set_level(logging.INFO)
    with live_service(published, tmp_path, dicom_port=0, max_upload_bytes=bound,
                      max_queued_bytes=bound) as live, live.client() as c:  # fmt: skip
        scp = live.service.scp
        a = _scu(scp.port, first)
        assert [a.send_c_store(ds).Status for ds in first] == [0] * len(first)
        assert size * 0.95 < _held(c) <= bound  # held while the association is open
        b = _scu(scp.port, second)
        assert b.send_c_store(second[0]).Status == 0xA700  # the scanner retries later
        assert _refused(c) == 1
        a.release()  # the first study is submitted with every instance it sent
        (job,) = until("the first study submitted", lambda: scp.submitted)
        doc = until("its job finished", lambda: _finished(live, job))
        assert doc["status"] == "done", doc["reason"]
        assert len(doc["result"]["clips"]) + len(doc["result"]["skipped"]) == len(first)
        assert _until(c, lambda h: h == 0) == 0  # the job gave its bytes back
        assert [b.send_c_store(ds).Status for ds in second] == [0] * len(second)  # retried
        b.release()
        jobs = until("the second study submitted", lambda: scp.submitted[1:] and scp.submitted)
        assert until("its job finished", lambda: _finished(live, jobs[1]))["status"] == "done"
        assert _until(c, lambda h: h == 0) == 0 and _refused(c) == 1
    said = [r.getMessage() for r in caplog.records
            if r.name.startswith("echoscreen") and "0xA700" in r.getMessage()]  # fmt: skip
    assert len(said) == 1 and "ECHOCART3" in said[0], said
    uids = {str(ds.get(k)) for ds in first + second
            for k in ("SOPInstanceUID", "StudyInstanceUID", "PatientID", "PatientName")}
    assert not [u for u in uids if u and u in said[0]]


def _finished(live: Live, job: str) -> dict[str, Any] | None:
    doc = live.service.engine.job(job)
    return doc if doc is not None and doc["status"] not in ("queued", "running") else None


def _stored(files: list[tuple[str, bytes]], pad: int) -> bytes:
    """A zip of ``files`` and ``pad`` random bytes, stored (its body as large as its files)."""
    import io
    import os
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in [*files, ("notes.bin", os.urandom(pad))]:
            zf.writestr(name, data)
    return buf.getvalue()


def test_an_upload_holds_its_body_and_its_files_while_both_are_alive(
    published: Published, tmp_path: Path,
) -> None:  # fmt: skip
    """Parsing keeps the body and the files it yields in memory at once: the bound counts
    both until the body is dropped (a 1.3 MiB zip peaks at 2.6 MiB), then the files."""
    with live_service(published, tmp_path, max_upload_bytes=2 * MiB, max_queued_bytes=3 * MiB,
                      upload_idle_s=30.0) as live, live.client() as c:  # fmt: skip
        study = live.study
        pad = (13 * MiB) // 10 - sum(len(d) for _, d in study)
        fits = _stored(study, pad)  # 1.3 MiB of body, 1.3 MiB of files
        r = c.post("/v1/studies", content=fits, headers={"Content-Type": "application/zip"})
        assert r.status_code == 202, r.text  # a peak of 2.6 MiB fits in 3 MiB
        assert wait(c, r.json()["job"])["status"] == "done"
        assert _until(c, lambda h: h == 0) == 0
        with _connect(live) as slow:
            slow.sendall(_head(live, MiB) + b"PK\x03\x04")  # holds 1 MiB, stalled
            assert _until(c, lambda h: h >= MiB) == MiB
            zipped = c.post("/v1/studies", content=fits,
                            headers={"Content-Type": "application/zip"})  # fmt: skip
            assert zipped.status_code == 503, zipped.text  # 1 + 1.3 + 1.3 MiB: over 3
            # amounts to 0.1 MiB, not rounded down to whole MiB ("0 MiB more would pass")
            assert "holds 2.3 MiB of studies not yet screened; 1.3 MiB more would pass its " \
                   "limit of 3 MiB" in zipped.text, zipped.text  # 1 held + the body
            assert zipped.headers["retry-after"] == "5"
            padded = [*study, ("notes.bin", bytes(pad))]
            formed = c.post("/v1/studies", files=form(padded))  # parts are copies too
            assert formed.status_code == 503, formed.text
            assert _held(c) == MiB  # the refused uploads gave their bytes back
        assert _until(c, lambda h: h == 0) == 0
        big = _stored(study, (17 * MiB) // 10 - sum(len(d) for _, d in study))
        r = c.post("/v1/studies", content=big, headers={"Content-Type": "application/zip"})
        assert r.status_code == 413 and "the study is 3.4 MiB, more than the 3 MiB" in r.text, \
            r.text  # 3.4 MiB never fits
        assert _held(c) == 0
