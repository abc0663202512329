"""The screening service on loopback for the API tests: real engine, tiny package, uvicorn.

``live_service`` runs one service (queue of 2, one job thread, small limits) and yields a
:class:`Live` holding its URL, a valid token and one phantom study's files; the helpers
build form and zip uploads and poll a job.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
from tests.registry.pkgfix import Published

from echoscreen.service.config import ServiceConfig
from echoscreen.service.server import Service, running
from echoscreen.service.tokens import TokenStore

MiB = 1 << 20


@dataclass
class Live:
    """The running service, a valid token and one phantom study's files."""

    url: str
    service: Service
    tokens: TokenStore
    token: str
    study: list[tuple[str, bytes]]

    def client(self, token: str | None = "") -> httpx.Client:
        secret = self.token if token == "" else token
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120.0)


@contextmanager
def live_service(published: Published, state: Path, **settings: Any) -> Iterator[Live]:
    """The service of the shared package, its state in ``state``, token ``clinic-a``
    (``settings``: ``ServiceConfig`` fields to change)."""
    folder = published.train_study_folders()[0]
    study = [(str(p.relative_to(folder)), p.read_bytes())
             for p in sorted(folder.rglob("*")) if p.is_file()]  # fmt: skip
    cfg = ServiceConfig(registry=published.registry, model=published.ref, state_dir=state,
                        port=0, backend="onnx", cpu_workers=1, job_threads=1, queue_size=2,
                        max_upload_bytes=4 * MiB, max_files=30, max_sync_files=len(study),
                        explain_clips=1, upload_idle_s=1.0, head_timeout_s=1.0)  # fmt: skip
    with running(replace(cfg, **settings)) as (url, service):
        tokens = TokenStore(state / "tokens.db")
        yield Live(url, service, tokens, tokens.create("clinic-a"), study)


def form(files: list[tuple[str, bytes]]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """httpx ``files=`` of a form upload: one ``files`` part per file."""
    return [("files", (name, data, "application/dicom")) for name, data in files]


def zipped(files: list[tuple[str, bytes]]) -> bytes:
    """A deflated zip of ``(member name, bytes)``, names as given."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            zf.writestr(name, data)
    return buf.getvalue()


def wait(c: httpx.Client, job: str, timeout: float = 120.0) -> dict[str, Any]:
    """The job's document once it is no longer queued or running (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        doc: dict[str, Any] = c.get(f"/v1/jobs/{job}").json()
        if doc["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return doc
        time.sleep(0.1)


def until(what: str, check: Callable[[], Any], timeout: float = 120.0) -> Any:
    """``check()``'s first truthy value, polled every 0.2 s; fails the test at the timeout."""
    import pytest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen within {timeout:.0f} s")
