"""The upload's multipart splitter: the same parts as the DICOMweb one, on real DICOM bytes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from echoscreen.ingest.dicomweb import MultipartError, split_multipart
from echoscreen.service.multipart import HEADER_LIMIT, TooManyParts, split_parts

B = b"xYz123"


def _bodies(dcm: bytes) -> list[bytes]:
    tricky = dcm + b"\n\n--xYz12 not a delimiter\r\n\r\n" + bytes(range(256))
    return [
        b"--xYz123\r\nContent-Type: application/dicom\r\n\r\n" + dcm + b"\r\n--xYz123--\r\n",
        b"preamble\r\n--xYz123\r\nA: 1\r\nB:2\r\n\r\n" + tricky + b"\r\n--xYz123\r\n\r\n"
        + dcm + b"\r\n--xYz123--",
        b"--xYz123\nA: 1\n\n" + tricky + b"\n--xYz123\n\n" + b"\n--xYz123--\n",
        b"--xYz123\r\n\r\n\r\n--xYz123--",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def dcm(pydicom_file: Callable[[str], Path]) -> bytes:
    return pydicom_file("examples_ybr_color.dcm").read_bytes()


def test_same_parts_as_the_reference_splitter(dcm: bytes) -> None:
    for body in _bodies(dcm):
        assert split_parts(body, B) == split_multipart(body, B)


def test_a_real_form_upload(dcm: bytes) -> None:
    files = [("files", (f"{k}.dcm", dcm[k:], "application/dicom")) for k in range(3)]
    req = httpx.Request("POST", "http://x/", files=files)
    body, ctype = req.read(), req.headers["content-type"]
    boundary = ctype.split("boundary=")[1].encode()
    parts = split_parts(body, boundary)
    assert [p[1] for p in parts] == [dcm, dcm[1:], dcm[2:]]
    assert parts[1][0]["content-type"] == "application/dicom"
    assert 'filename="1.dcm"' in parts[1][0]["content-disposition"]


def test_malformed_bodies_raise(dcm: bytes) -> None:
    with pytest.raises(MultipartError, match="without any delimiter"):
        split_parts(dcm, B)
    with pytest.raises(MultipartError, match="truncated"):
        split_parts(b"--xYz123\r\nA: 1\r\n\r\n" + dcm, B)
    long_headers = b"--xYz123\r\nA: " + b"a" * HEADER_LIMIT + b"\r\n\r\nbody\r\n--xYz123--"
    with pytest.raises(MultipartError, match="header/body separator"):
        split_parts(long_headers, B)
    many = b"--xYz123\r\n\r\nx\r\n" * 4 + b"--xYz123--"
    assert len(split_parts(many, B, max_parts=4)) == 4
    with pytest.raises(TooManyParts, match="more than 3 parts"):
        split_parts(many, B, max_parts=3)


def test_inference_threads_are_checked(tmp_path: Path) -> None:
    from echoscreen.errors import ConfigError
    from echoscreen.service.config import ServiceConfig

    cfg = ServiceConfig(registry=tmp_path, model="m:1", state_dir=tmp_path, inference_threads=-1)
    with pytest.raises(ConfigError, match="inference_threads"):
        cfg.validate()
    assert ServiceConfig(registry=tmp_path, model="m:1", state_dir=tmp_path).inference_threads == 1
