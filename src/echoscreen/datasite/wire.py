"""Wire formats of the data server's binary answers (pure numpy; the client uses them too).

One clip (``GET /v1/clips/{id}``, ``Content-Type: application/x-npy``): the clip
tensor as an ``.npy`` file (format 1.0), ``uint8``, C order, shape ``(3, T, S, S)``
(channels, frames, height, width). ``numpy.load(io.BytesIO(body))`` reads it.

Many clips (``POST /v1/clips:batch``, ``Content-Type: application/x-echoscreen-clips``):
records back to back, in the order the ids were asked for::

    record := u32 big-endian H | H bytes of UTF-8 JSON {"id": str, "nbytes": N} | N bytes

The N bytes are the clip's ``.npy``, or, when the request's ``accept`` list named
``zstd`` and the clip is stored compressed, its stored zstd frame of that ``.npy``
(:mod:`echoscreen.store.tensors`; the first four bytes tell them apart). There is no
outer header; the body ends after the last record.
"""

from __future__ import annotations

import functools
import io
import json
import math
import re
import struct
import threading
from collections.abc import Callable, Iterable, Iterator

import numpy as np

NPY_TYPE = "application/x-npy"
BATCH_TYPE = "application/x-echoscreen-clips"
_LEN = struct.Struct(">I")
_MAX_HEADER = 4096
#: the header ``np.save`` writes for a C-ordered uint8 array (parsed without ``ast``)
_NPY_U1 = re.compile(
    rb"\x93NUMPY\x01\x00(..)\{'descr': '\|u1', 'fortran_order': False, "
    rb"'shape': \((\d+(?:, \d+)*,?|)\), \} *\n", re.DOTALL)  # fmt: skip
#: numpy's header parser calls ``ast.literal_eval``, which is not thread-safe on
#: CPython 3.11 ("AST constructor recursion depth mismatch"); serialise that fallback
_AST_LOCK = threading.Lock()


class WireError(ValueError):
    """A body does not follow the documented framing or is not a uint8 clip tensor."""


def npy_header(buf: bytes | memoryview) -> tuple[tuple[int, ...], int]:
    """Parse an ``.npy`` header: ``(shape, offset of the data)``.

    Raises:
        WireError: not an ``.npy`` 1.0/2.0 buffer of C-ordered ``uint8``.
    """
    head = bytes(buf[:_MAX_HEADER])
    m = _NPY_U1.match(head)
    if m is not None and int.from_bytes(m[1], "little") + 10 == m.end():
        return tuple(int(d) for d in m[2].split(b",") if d.strip()), m.end()
    with _AST_LOCK:
        return _npy_header_numpy(head)


def _npy_header_numpy(head: bytes) -> tuple[tuple[int, ...], int]:
    f = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise WireError(f"unsupported .npy version {version}")
    except (ValueError, OSError) as exc:
        raise WireError(f"not an .npy buffer ({exc})") from exc
    if fortran or dtype != np.uint8:
        raise WireError(f"expected C-ordered uint8, got {dtype} fortran={fortran}")
    return tuple(int(d) for d in shape), f.tell()


def npy_array(buf: bytes | memoryview, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The uint8 array in an ``.npy`` buffer (a read-only view, no copy).

    Args:
        buf: the ``.npy`` bytes.
        shape: the shape the caller expects; a different one is an error.

    Raises:
        WireError: malformed, wrong dtype, wrong size or unexpected shape.
    """
    got, offset = npy_header(buf)
    if shape is not None and tuple(shape) != got:
        raise WireError(f"clip shape {got} differs from the catalog's {tuple(shape)}")
    n = math.prod(got)
    if len(buf) - offset != n:
        raise WireError(f".npy data is {len(buf) - offset} bytes, its header says {n}")
    return np.frombuffer(buf, dtype=np.uint8, count=n, offset=offset).reshape(got)


@functools.lru_cache(maxsize=256)  # one per clip shape; numpy's header writer is slow
def npy_nbytes(shape: tuple[int, ...]) -> int:
    """Size in bytes of the ``.npy`` 1.0 file ``np.save`` writes for a uint8 array of
    ``shape`` (header included): a batch's ``Content-Length`` before any decryption."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        f, {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)})  # fmt: skip
    return f.tell() + math.prod(shape)


def record_head(cid: str, nbytes: int) -> bytes:
    """The length-prefixed JSON header of one batch record (before its ``.npy`` bytes)."""
    head = json.dumps({"id": cid, "nbytes": nbytes}, separators=(",", ":")).encode()
    return _LEN.pack(len(head)) + head


def batch_parts(items: Iterable[tuple[str, bytes | memoryview]]) -> list[bytes | memoryview]:
    """Frame ``(clip id, .npy bytes)`` pairs as the pieces of a batch body, not joined.

    Each clip gives two pieces: its length-prefixed header, and its ``.npy`` bytes
    (the same object, not copied). ``b"".join`` of them is :func:`encode_batch`.
    """
    parts: list[bytes | memoryview] = []
    for cid, data in items:
        parts += [record_head(cid, len(data)), data]
    return parts


def encode_batch(items: Iterable[tuple[str, bytes | memoryview]]) -> bytes:
    """Frame ``(clip id, .npy bytes)`` pairs as one batch body."""
    return b"".join(batch_parts(items))


def decode_batch(body: bytes | bytearray | memoryview) -> list[tuple[str, memoryview]]:
    """Split a batch body into ``(clip id, .npy bytes)`` pairs (views into ``body``).

    Raises:
        WireError: the framing is broken or truncated.
    """
    view, pos, out = memoryview(body), 0, []
    while pos < len(view):
        if pos + 4 > len(view):
            raise WireError("truncated record length")
        (hlen,) = _LEN.unpack_from(view, pos)
        if hlen > _MAX_HEADER or pos + 4 + hlen > len(view):
            raise WireError("record header too long or truncated")
        try:
            head = json.loads(bytes(view[pos + 4 : pos + 4 + hlen]))
            cid, n = str(head["id"]), int(head["nbytes"])
        except (ValueError, KeyError, TypeError) as exc:
            raise WireError(f"malformed record header ({exc})") from exc
        start = pos + 4 + hlen
        if n < 0 or start + n > len(view):
            raise WireError(f"record of clip {cid} is truncated")
        out.append((cid, view[start : start + n]))
        pos = start + n
    return out


def stream_records(fill: Callable[[memoryview], None],
                   size: int) -> Iterator[tuple[str, memoryview]]:  # fmt: skip
    """Read a batch body of ``size`` bytes record by record, as its bytes arrive.

    Args:
        fill: fills the whole view it is given with the body's next bytes, or raises.
        size: the body's length (``Content-Length``).

    Yields:
        ``(clip id, .npy bytes)``, each in a fresh buffer (``numpy.empty``), as soon
        as that record is complete.

    Raises:
        WireError: the framing is broken, or a record runs past ``size``.
    """
    left, prefix = size, memoryview(bytearray(4))
    while left > 0:
        if left < 4:
            raise WireError("truncated record length")
        fill(prefix)
        (hlen,) = _LEN.unpack_from(prefix)
        if hlen > _MAX_HEADER or 4 + hlen > left:
            raise WireError("record header too long or truncated")
        head = memoryview(bytearray(hlen))
        fill(head)
        try:
            meta = json.loads(bytes(head))
            cid, n = str(meta["id"]), int(meta["nbytes"])
        except (ValueError, KeyError, TypeError) as exc:
            raise WireError(f"malformed record header ({exc})") from exc
        left -= 4 + hlen
        if n < 0 or n > left:
            raise WireError(f"record of clip {cid} is truncated")
        data = np.empty(n, dtype=np.uint8).data
        fill(data)
        left -= n
        yield cid, data
