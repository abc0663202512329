"""A DICOMweb PACS as a source: QIDO-RS to find studies, WADO-RS to fetch them.

Studies are listed with ``GET {base}/studies`` (paged with ``limit``/``offset``)
and fetched one at a time with ``GET {base}/studies/{uid}`` asking for
``multipart/related; type="application/dicom"`` in the stored transfer syntax.
The multipart answer is split here (boundary taken from the response's
content type), tolerating quoted boundaries, preambles, epilogues and bare-LF
header lines. A study that cannot be fetched or parsed comes out as a batch
with one unreadable entry, so the run carries on; a PACS that cannot be
reached at all raises :class:`IngestError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from email.message import Message
from email.utils import collapse_rfc2231_value

import httpx

from echoscreen.errors import IngestError
from echoscreen.ingest.base import Instance, StudyBatch, header_of_bytes

STUDY_UID_TAG = "0020000D"
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
QIDO_ACCEPT = "application/dicom+json"


class MultipartError(ValueError):
    """A multipart/related body is malformed (the message is fixed text, safe to store)."""


def header_param(value: str, key: str) -> str | None:
    """The parameter ``key`` of a header value (``Content-Type``, ``Content-Disposition``).

    Parsed as RFC 9110 says (with the standard library's MIME header parser):
    ``key=token`` or ``key="quoted-string"``, backslash escapes undone, a ``;`` or
    ``key=`` inside quotes part of the value, names in any case; RFC 2231's ``key*=``
    is decoded. Lenient where senders are: a bare ``type=application/dicom`` (``/`` is
    not a token character) is read as it is meant.

    Returns:
        The value, or None when the parameter is absent.
    """
    msg = Message()
    msg["h"] = value
    got = msg.get_param(key, header="h")
    if got is None:
        return None
    return collapse_rfc2231_value(got)


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a ``multipart/related`` content type (:func:`header_param`).

    Raises:
        MultipartError: the content type is not multipart or has no boundary.
    """
    if not content_type.lower().lstrip().startswith("multipart/"):
        raise MultipartError("answer is not multipart")
    boundary = header_param(content_type, "boundary")
    try:
        if boundary:
            return boundary.encode("latin-1")
    except UnicodeEncodeError:
        raise MultipartError("multipart boundary with characters outside Latin-1") from None
    raise MultipartError("multipart answer without a boundary")


def _part_body(part: bytes) -> tuple[dict[str, str], bytes]:
    """Split one part into its headers (lower-case names) and body."""
    for blank in (b"\r\n", b"\n"):
        if part.startswith(blank):  # a part without headers
            return {}, part[len(blank) :]
    found = [(part.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n") if part.find(sep) >= 0]
    if not found:
        raise MultipartError("multipart part without a header/body separator")
    cut, sep = min(found)
    headers: dict[str, str] = {}
    for line in part[:cut].decode("latin-1").splitlines():
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers, part[cut + len(sep) :]


def _is_delimiter(body: bytes, at: int, delim: bytes) -> bool:
    """True when ``delim`` at ``at`` is a real delimiter: followed by ``--``, space or EOL."""
    follow = body[at + len(delim) : at + len(delim) + 2]
    return follow in (b"--", b"\r\n") or follow[:1] in (b"\n", b" ", b"\t")


def _find_delimiter(body: bytes, delim: bytes, start: int) -> int:
    """Index of the LF that starts the next delimiter line at or after ``start``, or -1."""
    needle = b"\n" + delim
    at = body.find(needle, start)
    while at >= 0 and not _is_delimiter(body, at + 1, delim):
        at = body.find(needle, at + 1)
    return at


def split_multipart(body: bytes, boundary: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart body into parts (RFC 2046), each as (headers, body).

    Args:
        body: the whole response body.
        boundary: the boundary, without the leading ``--``.

    Returns:
        The parts in order; bodies are byte-exact (the CRLF before each delimiter
        belongs to the delimiter and is removed).

    Raises:
        MultipartError: no delimiter, or the closing delimiter is missing (a
            truncated transfer).
    """
    delim = b"--" + boundary
    if body.startswith(delim) and _is_delimiter(body, 0, delim):
        pos = 0
    else:
        start = _find_delimiter(body, delim, 0)
        if start < 0:
            raise MultipartError("multipart answer without any delimiter")
        pos = start + 1
    parts: list[tuple[dict[str, str], bytes]] = []
    while True:
        after = pos + len(delim)
        if body[after : after + 2] == b"--":
            return parts
        line_end = body.find(b"\n", after)
        if line_end < 0:
            raise MultipartError("multipart answer ends inside a delimiter line")
        nxt = _find_delimiter(body, delim, line_end)
        if nxt < 0:
            raise MultipartError("multipart answer truncated (no closing delimiter)")
        end = nxt - 1 if nxt > 0 and body[nxt - 1 : nxt] == b"\r" else nxt
        parts.append(_part_body(body[line_end + 1 : end]))
        pos = nxt + 1


class DicomWebSource:
    """Studies of a DICOMweb server, fetched one at a time.

    Args:
        base_url: the DICOMweb root, e.g. ``http://pacs:8042/dicom-web``.
        client: an ``httpx.Client`` carrying auth/TLS settings; a plain one by default.
        study_uids: fetch exactly these studies instead of listing all with QIDO-RS.
        page_size: QIDO-RS page size (``limit``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.Client | None = None,
        study_uids: list[str] | None = None,
        page_size: int = 500,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client
        self._own_client = client is None
        self._uids = list(study_uids) if study_uids is not None else None
        self.page_size = page_size

    def describe(self) -> str:
        return f"DICOMweb {self.base_url}"

    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0))
        return self._client

    def close(self) -> None:
        """Close the HTTP client if this source made it."""
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None

    def _get(self, url: str, accept: str, params: dict[str, int] | None = None) -> httpx.Response:
        try:
            return self.client().get(url, headers={"Accept": accept}, params=params)
        except httpx.HTTPError as exc:
            raise IngestError(
                f"DICOMweb server {self.base_url} cannot be reached ({type(exc).__name__}: "
                f"{exc}); check the URL and that the PACS is running"
            ) from exc

    def study_uids(self) -> list[str]:
        """All StudyInstanceUIDs the server lists (QIDO-RS, paged), cached."""
        if self._uids is None:
            uids: list[str] = []
            offset = 0
            while True:
                page = self._qido_page(offset)
                uids.extend(u for u in page if u not in uids)
                if len(page) < self.page_size:
                    break
                offset += len(page)
            self._uids = uids
        return self._uids

    def _qido_page(self, offset: int) -> list[str]:
        params = {"limit": self.page_size, "offset": offset}
        resp = self._get(f"{self.base_url}/studies", QIDO_ACCEPT, params)
        if resp.status_code == 204:
            return []
        if resp.status_code != 200:
            raise IngestError(
                f"QIDO-RS {self.base_url}/studies answered HTTP {resp.status_code}; check the "
                "DICOMweb base URL (it usually ends in /dicom-web) and the credentials"
            )
        try:
            rows = resp.json()
            return [str(row[STUDY_UID_TAG]["Value"][0]) for row in rows]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise IngestError(
                f"QIDO-RS {self.base_url}/studies did not answer a DICOM JSON study list; "
                "check the DICOMweb base URL"
            ) from exc

    def count_hint(self) -> int | None:
        return len(self.study_uids())

    def fetch(self, uid: str) -> StudyBatch:
        """Fetch one study with WADO-RS; failures become an unreadable entry."""
        url = f"{self.base_url}/studies/{uid}"
        batch = StudyBatch(uid)
        resp = self._get(url, WADO_ACCEPT)
        if resp.status_code != 200:
            reason = f"WADO-RS answered HTTP {resp.status_code} for the study"
            batch.unreadable.append((Instance(b"", url), reason))
            return batch
        try:
            parts = split_multipart(resp.content, boundary_of(resp.headers.get("content-type", "")))
        except MultipartError as exc:
            batch.unreadable.append((Instance(b"", url), f"WADO-RS answer unusable: {exc}"))
            return batch
        for i, (headers, data) in enumerate(parts):
            inst = Instance(data, f"{url} part {i + 1}")
            ctype = headers.get("content-type", "application/dicom").lower()
            if not ctype.startswith("application/dicom"):
                batch.unreadable.append((inst, "WADO-RS part is not application/dicom"))
                continue
            info = header_of_bytes(data)
            if info.study_uid is None:
                if not info.skip:
                    batch.unreadable.append((inst, info.reason))
            else:
                batch.instances.append(inst)
        return batch

    def studies(self) -> Iterator[StudyBatch]:
        for uid in self.study_uids():
            yield self.fetch(uid)
