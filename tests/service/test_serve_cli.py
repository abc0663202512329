"""`echoscreen tokens ...` and `echoscreen serve` through the console entry, incl. SIGTERM drain."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from tests.cli import fails, ok
from tests.registry.pkgfix import Published

from echoscreen.datasite.server import free_port
from echoscreen.service.jobs import JobStore


def test_tokens_cli(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    secret = ok("tokens", "create", "clinic-a", "--state", state).strip()
    assert secret.startswith("es_") and len(secret) == 46
    fails("tokens", "create", "clinic-a", "--state", state, match="active token already")
    fails("tokens", "create", "a b", "--state", state, match="invalid token name")
    listed = ok("tokens", "list", "--state", state)
    assert "clinic-a" in listed and secret not in listed
    assert "revoked 1 token(s) of clinic-a" in ok("tokens", "revoke", "clinic-a", "--state", state)
    fails("tokens", "revoke", "clinic-a", "--state", state, match="no active token")


def test_tokens_list_and_revoke_create_nothing(tmp_path: Path) -> None:
    for args in (["list"], ["revoke", "clinic-a"]):  # list made the folder and a tokens.db
        fails("tokens", *args, "--state", str(tmp_path / "nope"), match="is not a folder")
    assert not (tmp_path / "nope").exists()
    (tmp_path / "state").mkdir()
    assert "tokens in" in ok("tokens", "list", "--state", str(tmp_path / "state"))
    assert list((tmp_path / "state").iterdir()) == []


def _wait_up(url: str, proc: subprocess.Popen[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(url + "/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the service did not start")


def _while_draining(c: httpx.Client, files: list[Any]) -> tuple[httpx.Response, httpx.Response]:
    """A study posted and the health asked for after SIGTERM, once the drain has begun."""
    for _ in range(200):
        r = c.post("/v1/studies", files=files)
        if r.status_code == 503:
            return r, c.get("/healthz")
        time.sleep(0.02)  # the signal may not be handled yet: the post was accepted
    raise AssertionError("the service kept accepting studies after SIGTERM")


#: header values that are invalid for their VR (a UID component with a leading zero, a DA
#: with dashes: both seen from real scanners), which pydicom's checks would print
ODD_STUDY, ODD_BIRTH = "1.2.840.0113654.55.1", "1985-03-12"


def _with_odd_values(files: list[Any]) -> list[Any]:
    out = []
    for k, (field, (name, data, ctype)) in enumerate(files):
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.StudyInstanceUID, ds.SOPInstanceUID = ODD_STUDY, f"1.2.840.0113654.56.{k + 1}"
        ds.PatientBirthDate = ODD_BIRTH
        buf = io.BytesIO()
        ds.save_as(buf)
        out.append((field, (name, buf.getvalue(), ctype)))
    return out


def test_serve_sigterm_finishes_jobs_in_flight(published: Published, tmp_path: Path) -> None:
    state = tmp_path / "state"
    fails("serve", "--registry", str(published.registry), "--model", "tiny", "--state",
          str(state), match="--model")  # fmt: skip
    secret = ok("tokens", "create", "clinic-a", "--state", str(state)).strip()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "echoscreen", "serve", "--registry", str(published.registry),
         "--model", published.ref, "--state", str(state), "--port", str(port),
         "--backend", "onnx", "--workers", "1", "--job-threads", "1", "--no-explain"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, proc)
        folder = published.train_study_folders()[1]
        files = [("files", (p.name, p.read_bytes(), "application/dicom"))
                 for p in sorted(folder.rglob("*")) if p.is_file()]  # fmt: skip
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"},
                          timeout=60) as c:  # fmt: skip
            jobs = [c.post("/v1/studies", files=files).json()["job"] for _ in range(2)]
            odd = c.post("/v1/studies", files=_with_odd_values(files))  # never printed
            jobs.append(odd.json()["job"])  # 3 in line
            proc.send_signal(signal.SIGTERM)
            refused, health = _while_draining(c, files[:1])
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "every accepted job finished" in err
    assert ODD_STUDY not in err and "0113654.56" not in err and ODD_BIRTH not in err
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
    assert "stopping" in refused.json()["error"]
    assert health.status_code == 503 and health.json()["status"] == "draining"
    store = JobStore(state / "jobs.db")  # reopening marks jobs a crash left as interrupted
    try:
        for job in jobs:
            row = store.get(job)
            assert row is not None and row["status"] == "done", row
    finally:
        store.close()
    assert "client=clinic-a POST /v1/studies 202" in err


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--workers", "-1"], "Invalid value for '--workers'"),  # said cpu_workers
        (["--job-threads", "0"], "Invalid value for '--job-threads'"),  # said job_threads
        (["--max-upload-mb", "0"], "Invalid value for '--max-upload-mb'"),
        (["--max-queued-mb", "0"], "Invalid value for '--max-queued-mb'"),
        (["--max-upload-mb", "64", "--max-queued-mb", "32"], "--max-queued-mb (32) is less"),
        (["--result-ttl", "0"], "--result-ttl is 0.0; it must be > 0"),  # said result_ttl_s
        (["--backend", "tpu"], "--backend 'tpu' is unknown"),
        (["--ae-title", "A" * 17], "--ae-title"),
    ],
)
def test_serve_errors_name_the_flags(tmp_path: Path, args: list[str], match: str) -> None:
    fails("serve", "--registry", str(tmp_path), "--model", "m:1", "--state",
          str(tmp_path / "state"), *args, match=match)  # fmt: skip


def test_serve_port_0_prints_the_port_it_bound(published: Published, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "echoscreen", "serve", "--registry", str(published.registry),
         "--model", published.ref, "--state", str(tmp_path / "state"), "--port", "0",
         "--backend", "onnx", "--workers", "1", "--job-threads", "1", "--no-explain"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    lines: list[str] = []
    stream = proc.stderr
    assert stream is not None

    def read() -> None:  # in a thread: a line that never comes must not hang the test
        for line in iter(stream.readline, ""):
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not (found := re.search(r"serving tiny:1 on (http://127\.0\.0\.1:(\d+))",
                                      "".join(lines))):  # fmt: skip
            assert proc.poll() is None and time.monotonic() < deadline, lines
            time.sleep(0.1)
        assert int(found.group(2)) != 0  # it printed the --port given: 0
        _wait_up(found.group(1), proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in "".join(lines), lines


def test_serve_on_a_port_in_use_is_one_line(published: Published, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        fails("serve", "--registry", str(published.registry), "--model", published.ref,
              "--state", str(tmp_path / "state"), "--port", str(port), "--backend", "onnx",
              match=f"error: cannot listen on 127.0.0.1:{port}: the port is in use")  # fmt: skip
