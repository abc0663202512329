"""Splitting an upload's multipart body into parts, copying each part's bytes once.

The same parts as :func:`echoscreen.ingest.dicomweb.split_multipart` (RFC 2046: the CRLF
before each delimiter belongs to the delimiter; part headers end at the first blank line),
for bodies of many large files: a part's header/body separator is looked for in its
first :data:`HEADER_LIMIT` bytes only (not across megabytes of pixel data), and a part's
body is sliced out of the request body once (no intermediate copy of the whole part).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from echoscreen.ingest.dicomweb import MultipartError

#: most bytes of part headers (a part whose blank line comes later is malformed)
HEADER_LIMIT = 16 << 10


class TooManyParts(MultipartError):
    """The body holds more parts than the caller allows (raised before splitting on)."""


def _delimiters(body: bytes, delim: bytes) -> Iterator[int]:
    """Where each delimiter line starts, in order: at 0 or after a LF, and followed by
    ``--`` (the close), CRLF, LF, space or tab (not merely a prefix of other text)."""
    needle = b"\n" + delim
    at = 0 if body.startswith(delim) else (body.find(needle) + 1 or -1)
    while at >= 0:
        follow = body[at + len(delim) : at + len(delim) + 2]
        if follow in (b"--", b"\r\n") or follow[:1] in (b"\n", b" ", b"\t"):
            yield at
        at = body.find(needle, at) + 1 or -1


def _headers(body: bytes, start: int, end: int) -> tuple[dict[str, str], int]:
    """The part headers in ``body[start:end]`` (lower-case names) and where its body starts."""
    for blank in (b"\r\n", b"\n"):
        if body.startswith(blank, start, end):  # a part without headers
            return {}, start + len(blank)
    stop = min(end, start + HEADER_LIMIT)
    found = [(at, len(sep)) for sep in (b"\r\n\r\n", b"\n\n")
             if (at := body.find(sep, start, stop)) >= 0]  # fmt: skip
    if not found:
        raise MultipartError(f"multipart part without a header/body separator in its first "
                             f"{HEADER_LIMIT >> 10} KiB")  # fmt: skip
    cut, size = min(found)
    headers: dict[str, str] = {}
    for line in body[start:cut].decode("latin-1").splitlines():
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers, cut + size


def split_parts(body: bytes, boundary: bytes, max_parts: int | None = None,
                reserve: Callable[[int], None] | None = None,
                ) -> list[tuple[dict[str, str], bytes]]:  # fmt: skip
    """Split a multipart body into ``(headers, body)`` parts, in order.

    Args:
        body: the whole request body.
        boundary: the boundary, without the leading ``--``.
        max_parts: most parts accepted (None: any). A part costs a few hundred bytes of
            Python objects whatever its size, so a body of tiny parts is refused as they
            are counted, not after all of them are made.
        reserve: called with each part's size before its bytes are copied out of
            ``body`` (the caller counts the copies; an exception it raises stops the split).

    Returns:
        The parts; bodies are byte-exact (the CRLF before each delimiter is removed).

    Raises:
        MultipartError: no delimiter, the closing delimiter is missing (a truncated
            upload), or a part's headers do not end within :data:`HEADER_LIMIT` bytes.
        TooManyParts: more than ``max_parts`` parts.
    """
    delim = b"--" + boundary
    marks = _delimiters(body, delim)
    at = next(marks, -1)
    if at < 0:
        raise MultipartError("multipart body without any delimiter")
    parts: list[tuple[dict[str, str], bytes]] = []
    while body[at + len(delim) : at + len(delim) + 2] != b"--":  # not the close yet
        line_end = body.find(b"\n", at + len(delim))
        nxt = next(marks, -1)
        if line_end < 0 or nxt < 0:
            raise MultipartError("multipart body truncated (no closing delimiter)")
        if max_parts is not None and len(parts) == max_parts:
            raise TooManyParts(f"more than {max_parts} parts")
        end = nxt - 2 if body[nxt - 2 : nxt] == b"\r\n" else nxt - 1  # the EOL before it
        headers, start = _headers(body, line_end + 1, end)
        if reserve is not None:
            reserve(end - start)
        parts.append((headers, body[start:end]))
        at = nxt
    return parts
