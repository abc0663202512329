"""A small Python client of the screening service's API (the demo and ``bench/serve.py``).

``ServiceClient(url, token)`` posts a study's files as a multipart form (one ``files``
part per file, in order, so ``file_index`` in the result is the position in ``files``),
waits for its job, or screens synchronously. A 503 is retried after its
``Retry-After`` (bounded by ``patience_s``); any other 4xx/5xx raises
:class:`~echoscreen.errors.ServiceError` with the service's status and reason.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from echoscreen.errors import ServiceError

#: job states after which a job does not change any more
FINAL = ("done", "failed", "interrupted")


class ServiceClient:
    """Talks to one service with one bearer token (thread-safe like ``httpx.Client``).

    Args:
        url: the service's base URL, e.g. ``http://127.0.0.1:8080``.
        token: a bearer token from ``echoscreen tokens create NAME``.
        timeout_s: per HTTP request.
        patience_s: how long a 503 (queue full) is retried before giving up.
    """

    def __init__(self, url: str, token: str, *, timeout_s: float = 300.0,
                 patience_s: float = 120.0) -> None:  # fmt: skip
        self.url = url.rstrip("/")
        self.patience_s = patience_s
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s,
                                 headers={"Authorization": f"Bearer {token}"})  # fmt: skip

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        deadline = time.monotonic() + self.patience_s
        while True:
            try:
                resp = self.http.request(method, path, **kw)
            except httpx.HTTPError as exc:
                hint = "is `echoscreen serve` running there?"
                raise ServiceError(f"cannot reach the service at {self.url} ({exc}); {hint}",
                                   status=502) from exc  # fmt: skip
            if resp.status_code == 503:
                wait = float(resp.headers.get("retry-after", "1") or 1)
                if time.monotonic() + wait <= deadline:
                    time.sleep(wait)
                    continue
            if resp.status_code >= 400:
                try:
                    reason = str(resp.json().get("error", resp.text))
                except ValueError:
                    reason = resp.text[:300]
                raise ServiceError(f"{method} {path}: HTTP {resp.status_code}: {reason}",
                                   status=resp.status_code)  # fmt: skip
            return resp

    @staticmethod
    def _form(files: list[tuple[str, bytes]]) -> list[tuple[str, tuple[str, bytes, str]]]:
        return [("files", (Path(name).name or "file", data, "application/dicom"))
                for name, data in files]  # fmt: skip

    def submit(self, files: list[tuple[str, bytes]]) -> str:
        """``POST /v1/studies``: the job id of the study made of ``files`` (name, bytes)."""
        return str(self._send("POST", "/v1/studies", files=self._form(files)).json()["job"])

    def job(self, job_id: str) -> dict[str, Any]:
        """``GET /v1/jobs/{id}``: the job document (status, result when done)."""
        doc: dict[str, Any] = self._send("GET", f"/v1/jobs/{job_id}").json()
        return doc

    def wait(self, job_id: str, timeout_s: float = 600.0, poll_s: float = 0.05) -> dict[str, Any]:
        """Poll a job until it is done, failed or interrupted; return its document.

        Raises:
            ServiceError: (504) it did not end within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            doc = self.job(job_id)
            if doc["status"] in FINAL:
                return doc
            if time.monotonic() > deadline:
                raise ServiceError(f"job {job_id} still {doc['status']} after {timeout_s:g} s",
                                   status=504)  # fmt: skip
            time.sleep(poll_s)
            poll_s = min(poll_s * 1.5, 0.5)

    def screen(self, files: list[tuple[str, bytes]]) -> dict[str, Any]:
        """``POST /v1/screen``: the result document, synchronously (small studies)."""
        doc: dict[str, Any] = self._send("POST", "/v1/screen", files=self._form(files)).json()
        return doc

    def explanation(self, url: str) -> bytes:
        """The PNG at an explanation ``url`` of a result."""
        return self._send("GET", url).content
