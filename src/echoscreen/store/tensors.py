"""The stored form of a clip tensor: its ``.npy`` bytes, zstd-compressed when that pays.

A clip's tensor object (``Clip.tensor_object``) holds one of

* ``npy``: the ``.npy`` 1.0 file ``np.save`` writes for the ``uint8`` tensor
  ``(3, T, S, S)``; it begins with ``b"\\x93NUMPY"``;
* ``zstd``: one Zstandard frame (RFC 8878) of exactly those bytes, with their size in
  the frame header; it begins with ``28 b5 2f fd``.

Ingest stores the ``zstd`` form when it is at most :data:`KEEP_RATIO` of the ``.npy``
(the black surround of the image sector, about half of each phantom frame, makes
phantom clips 2.6x to 2.8x smaller), and the catalog records the form and the stored size
(``Clip.tensor_codec``, ``Clip.tensor_nbytes``). Clips stored by earlier versions are
``npy`` with both columns NULL. Readers tell the forms apart by their first four bytes,
so every reader reads both. The data server sends the ``zstd`` form as it is to clients
that accept it: the bytes are read, decrypted, sent and TLS-protected compressed, and
only the reader decompresses.

The level is :data:`LEVEL`, a fast one: compression happens once at ingest, but every
read of every epoch decompresses. On phantom clips (32 frames, 64 or 112 px) level -5
stores 2.6x to 2.8x smaller and decompresses at about 0.2 ms of CPU per MB of tensor;
levels 2 and 3 store 3.6x smaller but take 0.55 to 0.7 ms/MB, which made both routes of
``bench/remote.py`` slower. Decompression releases the GIL, so loader threads run it
in parallel.
"""

from __future__ import annotations

import io
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import zstandard

if TYPE_CHECKING:
    from echoscreen.store.objects import ObjectStore

NPY = "npy"
ZSTD = "zstd"
NPY_MAGIC = b"\x93NUMPY"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: zstd level of stored tensors (negative: fast modes, for decompression speed)
LEVEL = -5
#: the compressed form is stored only when it is at most this fraction of the ``.npy``
KEEP_RATIO = 0.9

_local = threading.local()  # per-thread (de)compression contexts: they are not thread-safe


class TensorFormatError(ValueError):
    """Stored tensor bytes are in neither form, or their frame is damaged."""


def _compressor() -> zstandard.ZstdCompressor:
    c: zstandard.ZstdCompressor | None = getattr(_local, "c", None)
    if c is None:
        c = _local.c = zstandard.ZstdCompressor(level=LEVEL, write_content_size=True)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def encode(npy: bytes) -> tuple[bytes, str]:
    """The bytes to store for a clip's ``.npy`` bytes, and their form (:data:`NPY` or
    :data:`ZSTD`): the compressed frame if it saves enough, else ``npy`` itself."""
    if not npy.startswith(NPY_MAGIC):
        raise TensorFormatError("a clip tensor is stored from its .npy bytes")
    packed = _compressor().compress(npy)
    if len(packed) <= KEEP_RATIO * len(npy):
        return packed, ZSTD
    return npy, NPY


def put(objects: ObjectStore, pixels: np.ndarray) -> dict[str, Any]:
    """Store a clip tensor (``uint8`` ``(3, T, S, S)``) encrypted, in the form
    :func:`encode` picks: how ingest stores every clip.

    Returns:
        the clip's catalog fields ``tensor_object``, ``tensor_shape``, ``tensor_codec``
        and ``tensor_nbytes``.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 4:
        raise TensorFormatError(f"a clip tensor is uint8 (3, T, S, S), not {pixels.dtype} "
                                f"{pixels.shape}")  # fmt: skip
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(pixels), allow_pickle=False)
    stored, codec = encode(buf.getvalue())
    return {"tensor_object": objects.put(stored),
            "tensor_shape": "x".join(str(d) for d in pixels.shape),
            "tensor_codec": codec, "tensor_nbytes": len(stored)}  # fmt: skip


def form(buf: bytes | memoryview) -> str:
    """The form of stored tensor bytes (:data:`NPY` or :data:`ZSTD`).

    Raises:
        TensorFormatError: they begin like neither.
    """
    head = bytes(buf[:6])
    if head.startswith(ZSTD_MAGIC):
        return ZSTD
    if head == NPY_MAGIC:
        return NPY
    raise TensorFormatError(f"stored tensor begins with {head[:4].hex()}: neither .npy nor zstd")


def unpacked_size(buf: bytes | memoryview) -> int:
    """Size of the ``.npy`` bytes stored tensor bytes stand for, from the frame header
    only (no decompression): the data server checks it against the catalog's shape.

    Raises:
        TensorFormatError: not a zstd frame with its content size, nor ``.npy``.
    """
    if form(buf) == NPY:
        return len(buf)
    try:
        size = zstandard.frame_content_size(bytes(buf[:18]))
    except zstandard.ZstdError as exc:
        raise TensorFormatError(f"damaged zstd frame header ({exc})") from exc
    if size < 0:
        raise TensorFormatError("zstd frame without its content size")
    return int(size)


def npy_bytes(buf: bytes | memoryview, expect: int | None = None) -> bytes | memoryview:
    """The ``.npy`` bytes of stored tensor bytes: ``buf`` itself, or decompressed
    (GIL released) into a fresh buffer.

    Args:
        buf: the stored (or sent) bytes, in either form.
        expect: the ``.npy`` size the caller knows from the catalog's shape; a frame
            that stands for another size is refused before it is decompressed.

    Raises:
        TensorFormatError: neither form, a damaged frame, or not ``expect`` bytes.
    """
    if form(buf) == NPY:
        return buf
    size = unpacked_size(buf)
    if expect is not None and size != expect:
        raise TensorFormatError(f"zstd frame holds {size} bytes, the catalog's shape {expect}")
    try:
        out = _decompressor().decompress(buf, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise TensorFormatError(f"damaged zstd frame ({exc})") from exc
    if len(out) != size:
        raise TensorFormatError(f"zstd frame gave {len(out)} bytes, its header says {size}")
    return out
