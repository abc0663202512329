"""The stored form of clip tensors: zstd when it pays, ``.npy`` otherwise; both read back."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest

from echoscreen.store import tensors
from echoscreen.store.site import Site


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _echo_like(rng: np.random.Generator) -> np.ndarray:
    """Random speckle inside the upper-left quarter of each frame, black elsewhere."""
    arr = np.zeros((3, 8, 32, 32), np.uint8)
    arr[:, :, :16, :16] = rng.integers(0, 256, (3, 8, 16, 16), dtype=np.uint8)
    return arr


def test_compressible_clips_are_stored_zstd_and_read_back_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arr = _echo_like(rng)
    with Site.init(tmp_path / "site") as site:
        fields = tensors.put(site.objects, arr)
        stored = site.objects.get(fields["tensor_object"])
    assert fields["tensor_codec"] == tensors.ZSTD == tensors.form(stored)
    assert fields["tensor_nbytes"] == len(stored) < len(_npy(arr)) / 2
    assert fields["tensor_shape"] == "3x8x32x32"
    assert tensors.unpacked_size(stored) == len(_npy(arr))
    back = np.load(io.BytesIO(tensors.npy_bytes(stored, len(_npy(arr)))))
    np.testing.assert_array_equal(back, arr)


def test_incompressible_clips_stay_npy(tmp_path: Path) -> None:
    arr = np.random.default_rng(1).integers(0, 256, (3, 8, 32, 32), dtype=np.uint8)
    with Site.init(tmp_path / "site") as site:
        fields = tensors.put(site.objects, arr)
        stored = site.objects.get(fields["tensor_object"])
    assert fields["tensor_codec"] == tensors.NPY == tensors.form(stored)
    assert stored == _npy(arr) and fields["tensor_nbytes"] == len(stored)
    assert tensors.npy_bytes(stored) is stored  # no copy for the plain form


def test_damaged_or_foreign_bytes_are_refused_never_misread() -> None:
    npy = _npy(_echo_like(np.random.default_rng(2)))
    packed, codec = tensors.encode(npy)
    assert codec == tensors.ZSTD
    with pytest.raises(tensors.TensorFormatError, match="damaged zstd frame"):
        tensors.npy_bytes(packed[: len(packed) // 2])
    with pytest.raises(tensors.TensorFormatError, match="the catalog's shape"):
        tensors.npy_bytes(packed, expect=len(npy) + 1)
    with pytest.raises(tensors.TensorFormatError, match=r"neither \.npy nor zstd"):
        tensors.form(b"PK\x03\x04 a zip")
    with pytest.raises(tensors.TensorFormatError, match=r"from its \.npy bytes"):
        tensors.encode(b"raw pixels")
    with pytest.raises(tensors.TensorFormatError, match="uint8"):
        tensors.put(None, np.zeros((3, 2, 4, 4), np.float32))  # type: ignore[arg-type]


def test_decompression_in_threads_gives_the_same_bytes() -> None:
    """Loader threads decompress at once, each with its own zstd context."""
    rng = np.random.default_rng(3)
    npys = [_npy(_echo_like(rng)) for _ in range(8)]
    packed = [tensors.encode(n)[0] for n in npys]
    bad: list[int] = []

    def work(k: int) -> None:
        for _ in range(20):
            for i, p in enumerate(packed):
                if bytes(tensors.npy_bytes(p)) != npys[i]:
                    bad.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []
