"""An upload's files, in memory: multipart form files, a zip, STOW-RS, or one DICOM body.

:func:`read_body` streams a request body and stops at the size limit (413) before the
client has sent more; :func:`parse_upload` turns the body into ``[(name, bytes), ...]``
by its content type:

* ``multipart/form-data``: every file part (field ``files``, many); a part that is a zip
  archive is expanded;
* ``multipart/related`` (STOW-RS): every ``application/dicom`` part;
* ``application/zip``: the archive's files;
* ``application/dicom`` or ``application/octet-stream``: one file (a zip if it is one).

Multipart bodies are split only up to ``max_files`` + :data:`FORM_FIELDS` parts (413).
Zip archives are checked before anything is decompressed: a central directory larger than
``max_files`` need (checked before it is parsed), more files than allowed, a declared
uncompressed total over the size limit, or a member whose declared size is more than
``max_ratio`` times its compressed size (and over 1 MiB) is refused with 413; zips inside
zips, encrypted members, members named with an unsafe path (absolute, ``..``, a
backslash: :func:`~echoscreen.dicom.inspect.is_unsafe_member`) and archives that cannot
be read are refused with 422. A body
that stalls for ``idle_s`` is refused with 408. Nothing is written to disk.

Given the upload's :class:`~echoscreen.service.budget.Hold`, both count what they keep in
memory before they keep it: the body as it is read, then every copy parsing makes while
the body is still alive (multipart parts, a zip's files at their declared size).
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio

from echoscreen.dicom.inspect import UNSAFE_MEMBER, is_litter, is_unsafe_member
from echoscreen.errors import BadStudyError, ServiceError
from echoscreen.ingest.dicomweb import MultipartError, boundary_of, header_param
from echoscreen.service.budget import Hold
from echoscreen.service.multipart import TooManyParts, split_parts

ZIP_MAGIC = b"PK\x03\x04"
ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/x-zip")
#: a member this small is never called a bomb, whatever its ratio
RATIO_FLOOR = 1 << 20
#: bytes of multipart framing allowed on top of the size limit
FRAMING = 1 << 20
#: form fields other than files allowed in a multipart upload (beside ``max_files``)
FORM_FIELDS = 32
#: central-directory bytes allowed per file of ``max_files``: room for long names, the
#: folders and macOS ``__MACOSX/._`` twins a study's zip holds besides its files
DIRECTORY_BYTES = 2048


@dataclass(frozen=True)
class UploadLimits:
    """Bounds of one upload.

    Attributes:
        max_bytes: most bytes in the request body and in the (uncompressed) files.
        max_files: most files (after expanding zips).
        max_ratio: most declared-uncompressed / compressed size of a zip member.
        idle_s: longest wait for the next bytes of a body (s): a client that stops
            sending mid-upload is refused, not waited for with what it sent held in memory.
    """

    max_bytes: int = 512 << 20
    max_files: int = 500
    max_ratio: float = 100.0
    idle_s: float = 60.0


def too_large(what: str, hint: str | None = None) -> ServiceError:
    """The 413 error of an upload over a limit (``hint``: what to do instead)."""
    hint = hint or ("send one study at a time, or ask the operator to raise the limit "
                    "(`echoscreen serve --max-upload-mb/--max-files`)")  # fmt: skip
    return ServiceError(f"{what}; {hint}", status=413)


async def read_body(chunks: AsyncIterator[bytes], declared: int | None,
                    limits: UploadLimits, hold: Hold | None = None) -> bytes:  # fmt: skip
    """The whole body, read chunk by chunk, refused as soon as it passes the limit.

    Args:
        chunks: the body's chunks (Starlette's ``request.stream()``).
        declared: the Content-Length header, if any (checked before reading).
        limits: ``max_bytes`` (+1 MiB of multipart framing) bounds the body.
        hold: the upload's hold on the service's byte budget: grown to ``declared``
            before a byte is read, else to the bytes read so far as they arrive.

    Raises:
        ServiceError: 413 over the limit; 400 for an empty body; 408 when no bytes came
            for ``limits.idle_s`` seconds.
        OverloadedError: 503 when the hold would take the budget over its limit.
    """
    cap = limits.max_bytes + FRAMING
    if declared is not None and declared > cap:
        raise too_large(f"the upload is {declared >> 20} MiB, more than {cap >> 20} MiB")
    if hold is not None and declared is not None:
        hold.resize(declared)
    pieces: list[bytes] = []  # joined once at the end: one copy of a large body, not two
    size = 0
    stream = aiter(chunks)
    while True:
        try:
            with anyio.fail_after(limits.idle_s):
                chunk = await anext(stream, None)
        except TimeoutError:
            raise ServiceError(f"the upload stalled: no bytes for {limits.idle_s:g} s after "
                               f"{size} bytes; send it again", status=408) from None  # fmt: skip
        if chunk is None:
            break
        size += len(chunk)
        if size > cap:
            raise too_large(f"the upload is more than {cap >> 20} MiB")
        if hold is not None and size > hold.n:
            hold.resize(size)  # before the chunk is kept
        pieces.append(chunk)
    if not size:
        raise ServiceError("the upload is empty; send DICOM files, a zip of a study, or STOW-RS")
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _media(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _is_zip(name: str, data: bytes, ctype: str = "") -> bool:
    return data.startswith(ZIP_MAGIC) or _media(ctype) in ZIP_TYPES or name.lower().endswith(".zip")


#: counts bytes an upload is about to copy in memory (a part, a zip's files); raises to refuse
Reserve = Callable[[int], None]


def expand_zip(
    data: bytes, limits: UploadLimits, label: str = "the zip", reserve: Reserve | None = None
) -> list[tuple[str, bytes]]:
    """The files of a zip archive, checked against ``limits`` before decompression.

    ``reserve`` is called with the members' declared total before any is decompressed
    (none may expand past its declared size).

    Raises:
        ServiceError: 413 (too many files, too large, bomb-like ratio), 422 (not a zip,
            nested zip, encrypted member).
    """
    directory, most = _directory_size(data), limits.max_files * DIRECTORY_BYTES + 65536
    if directory > most:  # parsed whole by ZipFile(), at ~7 bytes of objects per byte
        raise too_large(f"the central directory of {label} is {directory >> 10} KiB, more "
                        f"than {limits.max_files} files need ({most >> 10} KiB)")  # fmt: skip
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except Exception as exc:  # whatever zipfile raises on an archive it cannot read
        raise BadStudyError(f"{label} is not a readable zip archive ({type(exc).__name__}); "
                            "send the study folder's files or a valid zip") from exc  # fmt: skip
    with zf:
        _check_names(zf.infolist(), label)
        members = [i for i in zf.infolist() if not i.is_dir() and not is_litter(i.filename)]
        _check_members(members, limits, label)
        if reserve is not None:
            reserve(sum(i.file_size for i in members))
        out: list[tuple[str, bytes]] = []
        total = 0
        for info in members:
            try:
                with zf.open(info) as f:
                    body = f.read(info.file_size + 1)
            except Exception as exc:  # a damaged stream: zlib.error, LZMAError, EOFError...
                what = f"member {len(out)} of {label} cannot be extracted"
                raise BadStudyError(f"{what} ({type(exc).__name__}); zip the study again") from exc
            total += len(body)
            if len(body) > info.file_size or total > limits.max_bytes:
                raise too_large(f"{label} holds more than it declares")
            if body.startswith(ZIP_MAGIC):
                raise BadStudyError(f"{label} holds a zip inside the zip (member {len(out)}); "
                                    "nested archives are refused: unzip the inner one")  # fmt: skip
            out.append((info.filename, body))
    return out


def _directory_size(data: bytes) -> int:
    """Bytes of the central directory :class:`zipfile.ZipFile` will read, found as it
    finds them: the end record (at the very end, else the last in the final 64 KiB),
    overridden by a zip64 end record right before its locator; 0 without an end record
    (ZipFile refuses the archive)."""
    at = len(data) - 22
    if at < 0 or not (data.startswith(b"PK\x05\x06", at) and data.endswith(b"\0\0")):
        at = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 0xFFFF))
        if at < 0 or at + 22 > len(data):
            return 0
    (size,) = struct.unpack_from("<I", data, at + 12)
    loc, rec = at - 20, at - 20 - 56
    if rec >= 0 and data.startswith(b"PK\x06\x07", loc) and data.startswith(b"PK\x06\x06", rec):
        (size,) = struct.unpack_from("<Q", data, rec + 40)
    return int(size)


def _check_names(infos: list[zipfile.ZipInfo], label: str) -> None:
    """Refuse a zip with a member named as an unsafe path (``../x.dcm``, ``/x.dcm``, ...),
    as ingest and offline screening do: it is not read by another name, nor dropped."""
    for k, info in enumerate(infos):
        if is_unsafe_member(info.filename):  # the name itself is never quoted back
            raise BadStudyError(f"entry {k} in the directory of {label} is {UNSAFE_MEMBER}")


def _check_members(members: list[zipfile.ZipInfo], limits: UploadLimits, label: str) -> None:
    """Refuse a zip by its central directory alone (nothing decompressed yet)."""
    if len(members) > limits.max_files:
        raise too_large(f"{label} holds {len(members)} files, more than {limits.max_files}")
    declared = sum(i.file_size for i in members)
    if declared > limits.max_bytes:
        raise too_large(f"{label} expands to {declared >> 20} MiB, more than "
                        f"{limits.max_bytes >> 20} MiB")  # fmt: skip
    for k, info in enumerate(members):
        if info.filename.lower().endswith(".zip"):
            raise BadStudyError(f"{label} holds a zip inside the zip (member {k}); nested "
                                "archives are refused: unzip the inner one")  # fmt: skip
        if info.flag_bits & 0x1:
            raise BadStudyError(f"member {k} of {label} is encrypted; zip the study without "
                                "a password")  # fmt: skip
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR and ratio > limits.max_ratio:
            raise too_large(f"member {k} of {label} expands {ratio:.0f} times (more than "
                            f"{limits.max_ratio:.0f}): refused as a zip bomb")  # fmt: skip


def _form_files(body: bytes, content_type: str, limits: UploadLimits,
                reserve: Reserve | None) -> list[tuple[str, bytes, str]]:  # fmt: skip
    """``(filename, data, part content type)`` of every file part of a form."""
    files = []
    for k, (headers, data) in enumerate(_split(body, content_type, limits, reserve)):
        disp = headers.get("content-disposition", "")
        field, filename = header_param(disp, "name"), header_param(disp, "filename")
        if field == "files" or filename is not None:
            files.append((filename or f"part-{k}", data, headers.get("content-type", "")))
    return files


def _stow_files(body: bytes, content_type: str, limits: UploadLimits,
                reserve: Reserve | None) -> list[tuple[str, bytes, str]]:  # fmt: skip
    """Every ``application/dicom`` part of a STOW-RS request (no other kind is accepted)."""
    declared = (header_param(content_type, "type") or "application/dicom").lower()
    if declared != "application/dicom":
        raise ServiceError(f"STOW-RS with type={declared} is not supported; send "
                           'multipart/related; type="application/dicom"', status=415)  # fmt: skip
    files = []
    for k, (headers, data) in enumerate(_split(body, content_type, limits, reserve)):
        ctype = headers.get("content-type", "application/dicom")
        if _media(ctype) != "application/dicom":
            raise ServiceError(f"STOW-RS part {k} is {_media(ctype)}; only application/dicom "
                               "parts are accepted", status=415)  # fmt: skip
        files.append((f"instance-{k}.dcm", data, ctype))
    return files


def _split(body: bytes, content_type: str, limits: UploadLimits,
           reserve: Reserve | None) -> list[tuple[dict[str, str], bytes]]:  # fmt: skip
    most = limits.max_files + FORM_FIELDS
    try:
        return split_parts(body, boundary_of(content_type), max_parts=most, reserve=reserve)
    except TooManyParts as exc:
        raise too_large(f"the multipart body holds {exc} (at most {limits.max_files} files "
                        f"and {FORM_FIELDS} other form fields)") from exc  # fmt: skip
    except MultipartError as exc:
        raise ServiceError(f"the multipart body is malformed ({exc}); was the upload cut "
                           "short?") from exc  # fmt: skip


def parse_upload(body: bytes, content_type: str, limits: UploadLimits,
                 hold: Hold | None = None) -> list[tuple[str, bytes]]:  # fmt: skip
    """The files of an upload, zips expanded, in upload order.

    Args:
        body: the request body (from :func:`read_body`).
        content_type: the request's Content-Type header.
        limits: file count, size and zip ratio bounds.
        hold: the upload's hold (the body's bytes): grown by every copy made while the
            body is still alive, before it is made: multipart parts (sliced out of the
            body) and a zip's files (their declared total, before decompression). The
            caller resizes it to the files' bytes once the body is dropped.

    Raises:
        ServiceError: 400 empty or malformed, 413 over a limit (also when the body and
            its files together are more than the service holds at once), 415 unsupported
            type, 422 (``BadStudyError``) a bad or nested zip.
        OverloadedError: 503 when the hold would take the budget over its limit.
    """
    reserve = None if hold is None else (lambda n: hold.resize(hold.n + n))
    media = _media(content_type)
    if media == "multipart/form-data":
        parts = _form_files(body, content_type, limits, reserve)
    elif media == "multipart/related":
        parts = _stow_files(body, content_type, limits, reserve)
    elif media in (*ZIP_TYPES, "application/dicom", "application/octet-stream", ""):
        parts = [("upload.zip" if media in ZIP_TYPES else "upload.dcm", body, media)]
    else:
        raise ServiceError(f"content type {media!r} is not accepted; send multipart/form-data "
                           "(field `files`), application/zip, application/dicom or STOW-RS "
                           "multipart/related", status=415)  # fmt: skip
    files: list[tuple[str, bytes]] = []
    for k, (name, data, ctype) in enumerate(parts):
        if _is_zip(name, data, ctype) and media != "multipart/related":
            files.extend(expand_zip(data, limits, f"zip (part {k})", reserve))
        else:
            files.append((name, data))
        if len(files) > limits.max_files:
            raise too_large(f"the upload holds more than {limits.max_files} files")
    files = [(n, d) for n, d in files if d]
    if not files:
        raise ServiceError("the upload holds no file; send DICOM files (form field `files`), "
                           "a zip of a study, or STOW-RS")  # fmt: skip
    return files
