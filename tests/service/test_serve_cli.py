"""`echoscreen tokens ...` and `echoscreen serve` through the console entry, incl. SIGTERM drain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
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
            jobs = [c.post("/v1/studies", files=files).json()["job"] for _ in range(3)]  # 3 in line
            proc.send_signal(signal.SIGTERM)
            refused, health = _while_draining(c, files[:1])
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "every accepted job finished" in err
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
