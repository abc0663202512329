"""Upload parsing: forms, zips, STOW-RS, and every limit (size while streaming, files, bombs)."""

from __future__ import annotations

import asyncio
import io
import os
import struct
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from echoscreen.errors import BadStudyError, ServiceError
from echoscreen.service.uploads import FRAMING, UploadLimits, parse_upload, read_body

MiB = 1 << 20


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _multipart(parts: list[tuple[dict[str, str], bytes]], boundary: str = "b0und") -> bytes:
    out = b""
    for headers, body in parts:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
        out += b"--" + boundary.encode() + b"\r\n" + head + b"\r\n" + body + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n"


def _file_part(name: str, data: bytes, field: str = "files") -> tuple[dict[str, str], bytes]:
    return ({"Content-Disposition": f'form-data; name="{field}"; filename="{name}"',
             "Content-Type": "application/octet-stream"}, data)  # fmt: skip


@pytest.fixture
def dcm(pydicom_file: Callable[[str], Path]) -> bytes:
    return pydicom_file("US1_UNCR.dcm").read_bytes()


def test_form_files_and_zip_parts(dcm: bytes) -> None:
    body = _multipart([
        ({"Content-Disposition": 'form-data; name="note"'}, b"ignored text field"),
        _file_part("a/1.dcm", dcm),
        _file_part("study.zip", _zip({"x/2.dcm": dcm, "__MACOSX/._2.dcm": b"junk",
                                      "x/.DS_Store": b"junk"})),
    ])  # fmt: skip
    files = parse_upload(body, "multipart/form-data; boundary=b0und", UploadLimits())
    assert [n for n, _ in files] == ["a/1.dcm", "x/2.dcm"]
    assert all(d == dcm for _, d in files)


def test_zip_body_and_single_dicom(dcm: bytes) -> None:
    files = parse_upload(_zip({"s/1.dcm": dcm, "s/2.dcm": dcm}), "application/zip", UploadLimits())
    assert [n for n, _ in files] == ["s/1.dcm", "s/2.dcm"]
    assert parse_upload(dcm, "application/dicom", UploadLimits()) == [("upload.dcm", dcm)]
    # an octet-stream that is a zip is expanded
    assert len(parse_upload(_zip({"1.dcm": dcm}), "application/octet-stream", UploadLimits())) == 1


def test_stow_multipart_related(dcm: bytes) -> None:
    ctype = 'multipart/related; type="application/dicom"; boundary="b0und"'
    body = _multipart([({"Content-Type": "application/dicom"}, dcm)] * 3)
    files = parse_upload(body, ctype, UploadLimits())
    assert [d for _, d in files] == [dcm] * 3
    bad = _multipart([({"Content-Type": "application/dicom+xml"}, b"<x/>")])
    with pytest.raises(ServiceError, match="only application/dicom") as err:
        parse_upload(bad, ctype, UploadLimits())
    assert err.value.status == 415
    with pytest.raises(ServiceError, match="malformed") as err:
        parse_upload(body[: len(body) // 2], ctype, UploadLimits())  # cut short
    assert err.value.status == 400


def test_zip_bomb_by_declared_size() -> None:
    limits = UploadLimits(max_bytes=2 * MiB)
    body = _zip({"a.dcm": os.urandom(MiB), "b.dcm": os.urandom(MiB), "c.dcm": os.urandom(MiB)})
    with pytest.raises(ServiceError, match="expands to 3 MiB") as err:
        parse_upload(body, "application/zip", limits)
    assert err.value.status == 413


def test_zip_bomb_by_ratio() -> None:
    body = _zip({"zeros.dcm": bytes(4 * MiB)})
    assert len(body) < 20_000
    with pytest.raises(ServiceError, match="zip bomb") as err:
        parse_upload(body, "application/zip", UploadLimits())
    assert err.value.status == 413


def test_nested_zip_and_too_many_files(dcm: bytes) -> None:
    inner = _zip({"1.dcm": dcm})
    for name in ("inner.zip", "innocent.dcm"):  # refused by name and by content
        with pytest.raises(BadStudyError, match="nested archives are refused"):
            parse_upload(_zip({name: inner}, zipfile.ZIP_STORED), "application/zip",
                         UploadLimits())  # fmt: skip
    # a directory of tiny entries costs ~7 times its size to parse: refused by its size
    huge = _zip({f"{i:x}": b"" for i in range(20_000)}, zipfile.ZIP_STORED)
    with pytest.raises(ServiceError, match=r"central directory of zip \(part 0\) is") as err:
        parse_upload(huge, "application/zip", UploadLimits(max_files=10))
    assert err.value.status == 413
    many = _zip({f"{i}.dcm": b"x" for i in range(11)})
    with pytest.raises(ServiceError, match="11 files, more than 10") as err:
        parse_upload(many, "application/zip", UploadLimits(max_files=10))
    assert err.value.status == 413
    form = _multipart([_file_part(f"{i}.dcm", b"x") for i in range(11)])
    with pytest.raises(ServiceError, match="more than 10 files"):
        parse_upload(form, "multipart/form-data; boundary=b0und", UploadLimits(max_files=10))


def _damaged(dcm: bytes) -> dict[str, bytes]:
    """Zips whose central directory reads but whose member (or version) does not."""
    out = {}
    for method in (zipfile.ZIP_DEFLATED, zipfile.ZIP_LZMA):
        good = _zip({"1.dcm": dcm}, method)
        cd = good.rfind(b"PK\x01\x02")
        out[f"corrupt stream {method}"] = good[:60] + bytes(cd - 60) + good[cd:]
    good = _zip({"1.dcm": dcm})
    cd = good.rfind(b"PK\x01\x02")
    (size,) = struct.unpack("<I", good[cd + 20 : cd + 24])  # compressed size, as declared
    start = cd - size
    cut = good[: start + size // 2] + good[cd:]  # the stream ends early, the offsets agree
    eocd = bytearray(cut)
    at = eocd.rfind(b"PK\x05\x06")
    eocd[at + 16 : at + 20] = struct.pack("<I", cd - (size - size // 2))
    out["stream cut short"] = bytes(eocd)
    cd_new = bytearray(good)
    cd_new[cd + 6 : cd + 8] = struct.pack("<H", 99)  # "version needed to extract" 9.9
    out["newer zip version"] = bytes(cd_new)
    return out


def test_damaged_zips_are_422_not_a_crash(dcm: bytes) -> None:
    for what, body in _damaged(dcm).items():
        with pytest.raises(BadStudyError, match="zip") as err:
            parse_upload(body, "application/zip", UploadLimits())
        assert err.value.status == 422, what


def test_empty_and_unsupported() -> None:
    with pytest.raises(ServiceError, match="no file"):
        parse_upload(_zip({}), "application/zip", UploadLimits())
    with pytest.raises(ServiceError, match="no file"):
        parse_upload(_multipart([({"Content-Disposition": 'form-data; name="x"'}, b"1")]),
                     "multipart/form-data; boundary=b0und", UploadLimits())  # fmt: skip
    with pytest.raises(ServiceError, match="not accepted") as err:
        parse_upload(b"{}", "application/json", UploadLimits())
    assert err.value.status == 415
    with pytest.raises(BadStudyError, match="not a readable zip"):
        parse_upload(b"PK\x03\x04 garbage", "application/zip", UploadLimits())


def test_read_body_stops_at_the_limit_while_streaming() -> None:
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        while True:
            sent.append(1)
            yield bytes(256 * 1024)

    limits = UploadLimits(max_bytes=MiB)
    with pytest.raises(ServiceError, match="more than 2 MiB") as err:
        asyncio.run(read_body(endless(), None, limits))
    assert err.value.status == 413
    assert len(sent) == (MiB + FRAMING) // (256 * 1024) + 1  # stopped at the first chunk over
    with pytest.raises(ServiceError, match="is 100 MiB") as err:
        asyncio.run(read_body(endless(), 100 * MiB, limits))  # Content-Length alone suffices
    assert len(sent) == 9

    async def nothing() -> AsyncIterator[bytes]:
        for chunk in (b"",):
            yield chunk

    with pytest.raises(ServiceError, match="empty") as err:
        asyncio.run(read_body(nothing(), 0, limits))
    assert err.value.status == 400


def test_read_body_gives_up_on_a_stalled_upload() -> None:
    async def stalls() -> AsyncIterator[bytes]:
        yield b"some bytes"
        await asyncio.sleep(60)  # the client stops sending, the connection stays open
        yield b"never"

    with pytest.raises(ServiceError, match="stalled") as err:
        asyncio.run(read_body(stalls(), None, UploadLimits(idle_s=0.1)))
    assert err.value.status == 408


def test_a_body_of_many_tiny_parts_is_refused_while_splitting() -> None:
    """Each part costs ~20 times its few bytes as Python objects: counted as they come."""
    limits = UploadLimits(max_files=10)
    for part in (b"--b\n\n\n", b'--b\nContent-Disposition: form-data; name="note"\n\nx\n'):
        body = part * 200_000 + b"--b--"
        with pytest.raises(ServiceError, match="more than 42 parts") as err:
            parse_upload(body, "multipart/form-data; boundary=b", limits)
        assert err.value.status == 413
