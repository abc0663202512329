"""Results to the PACS: STOW-RS of the screening SR (``echoscreen serve --pacs URL``).

:func:`stow` POSTs datasets to ``{url}/studies`` as ``multipart/related;
type="application/dicom"`` and checks the STOW-RS answer (HTTP status and the Failed
SOP Sequence). :func:`sr_sender` makes the engine's ``on_done`` callback: it reads the
originals' headers, builds the SR (:func:`echoscreen.service.sr.build_sr`) and stores
it, retrying a PACS that cannot be reached; an SR still not stored after the tries is
kept in an in-memory :class:`~echoscreen.service.outbox.SrOutbox` and sent again when
the PACS is back. Otherwise a failure raises :class:`ServiceError` (status 502); the
engine logs it and the job's result stays available through the API: a PACS that is
down never loses a result. Messages name the PACS URL and the HTTP
status, never patient data.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from pydicom.dataset import Dataset

from echoscreen.errors import ServiceError
from echoscreen.service.outbox import SrOutbox, retryable

log = logging.getLogger(__name__)

#: (job id, result document, uploaded files) -> None, the engine's ``on_done``
OnDone = Callable[[str, dict[str, Any], list[tuple[str, bytes]]], None]
#: STOW-RS Failed SOP Sequence and Failure Reason
_FAILED_SOP = "00081198"
_FAILURE_REASON = "00081197"


def _part10(ds: Dataset) -> bytes:
    """One dataset as a DICOM Part 10 file."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _multipart(datasets: list[Dataset]) -> tuple[bytes, str]:
    """The STOW-RS request body and its content type."""
    boundary = f"echoscreen-{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for ds in datasets:
        chunks += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
                   _part10(ds), b"\r\n"]  # fmt: skip
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


def _failures(resp: httpx.Response) -> list[str]:
    """Failure reasons (hex codes) listed in a STOW-RS answer's Failed SOP Sequence."""
    try:
        body = resp.json()
    except ValueError:
        return []
    failed = body.get(_FAILED_SOP, {}).get("Value", []) if isinstance(body, dict) else []
    reasons = []
    for item in failed:
        value = (
            item.get(_FAILURE_REASON, {}).get("Value", [None])[0]
            if isinstance(item, dict)
            else None
        )
        reasons.append(f"0x{value:04X}" if isinstance(value, int) else "unknown reason")
    return reasons


def stow(url: str, datasets: list[Dataset], timeout: float = 30.0) -> None:
    """Store datasets on a DICOMweb server with STOW-RS.

    Args:
        url: the DICOMweb root (``http://pacs:8042/dicom-web``); POSTs to ``{url}/studies``.
        datasets: the instances to store (each needs file meta or SOP class/instance UIDs).
        timeout: seconds for connecting and for the whole answer.

    Raises:
        ServiceError: (502) the PACS cannot be reached, answers an HTTP error, or lists
            instances it refused (Failed SOP Sequence).
    """
    if not datasets:
        return
    body, content_type = _multipart(datasets)
    target = f"{url.rstrip('/')}/studies"
    headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
    try:
        resp = httpx.post(target, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ServiceError(
            f"cannot reach the PACS at {target} ({type(exc).__name__}); check --pacs and "
            "that the PACS is running; the screening result is kept and can be fetched "
            "from the API", status=502,
        ) from exc  # fmt: skip
    reasons = _failures(resp)
    if resp.status_code >= 400 or reasons:
        detail = f"; refused instances: {', '.join(reasons)}" if reasons else ""
        # a 5xx is the PACS's own trouble (worth retrying): chain it so callers can tell
        cause = (httpx.HTTPStatusError("PACS error", request=resp.request, response=resp)
                 if resp.status_code >= 500 else None)  # fmt: skip
        raise ServiceError(
            f"the PACS at {target} rejected the STOW-RS request (HTTP {resp.status_code}"
            f"{detail}); check that --pacs is the DICOMweb root and that the PACS accepts "
            "Comprehensive SR; the screening result is kept and can be fetched from the API",
            status=502,
        ) from cause  # fmt: skip


def originals_of(files: list[tuple[str, bytes]]) -> list[Dataset]:
    """Headers of uploaded files in upload order; an unreadable file gives an empty Dataset."""
    import pydicom

    out: list[Dataset] = []
    for _name, data in files:
        try:
            out.append(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True))
        except Exception:  # not DICOM: keep the position so file_index still lines up
            out.append(Dataset())
    return out


def sr_sender(url: str, *, timeout: float = 30.0, attempts: int = 3, backoff_s: float = 2.0,
              outbox: SrOutbox | None = None) -> OnDone:  # fmt: skip
    """The engine's ``on_done`` callback that files each result as an SR on a PACS.

    Args:
        url: the PACS's DICOMweb root (``ServiceConfig.pacs``).
        timeout: seconds per STOW-RS request.
        attempts: tries when the PACS cannot be reached or answers 5xx (a refusal of
            the SR itself is not retried).
        backoff_s: seconds before the second try, doubled after each.
        outbox: where an SR the PACS could not take after its tries is kept to be sent
            again (:class:`~echoscreen.service.outbox.SrOutbox`); it is flushed after
            each SR the PACS stores. None: such an SR is dropped (the callback raises).

    Returns:
        ``on_done(job_id, result, files)``; raises :class:`ServiceError` when the SR
        could not be stored and is not kept in ``outbox`` (the engine logs it; the
        result stays in the job store).
    """
    from echoscreen.service.sr import build_sr

    def send(job_id: str, result: dict[str, Any], files: list[tuple[str, bytes]]) -> None:
        sr = build_sr({**result, "job": result.get("job") or job_id}, originals_of(files))
        wait = backoff_s
        for attempt in range(1, max(1, attempts) + 1):
            try:
                stow(url, [sr], timeout=timeout)
            except ServiceError as exc:
                retry = attempt < attempts and retryable(exc)
                log.warning("job %s: SR not stored (try %d of %d)%s", job_id, attempt,
                            attempts, "; retrying" if retry else "")  # fmt: skip
                if retry:
                    time.sleep(wait)
                    wait *= 2
                    continue
                if outbox is None or not retryable(exc):
                    raise
                outbox.put(job_id, sr)
                log.warning("job %s: SR kept in memory to be sent again (%d waiting): %s",
                            job_id, len(outbox), exc)  # fmt: skip
                return
            log.info("job %s: SR stored on the PACS", job_id)
            if outbox is not None and len(outbox):
                outbox.flush()  # the PACS is back: send what waits
            return

    return send
