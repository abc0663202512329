"""DCT-scaled decoding: reduced frames, the scale chosen per spec, clips close to full size."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from echoscreen.dicom import (
    PreprocessSpec,
    decode_scale,
    load_clip,
    load_dataset,
    read_cine,
    read_needed,
)
from echoscreen.errors import DicomDecodeError


def test_reduced_frames_match_an_area_downscale(pydicom_file: Callable[[str], Path]) -> None:
    ds = load_dataset(pydicom_file("color3d_jpeg_baseline.dcm"))  # 640 x 480 JPEG baseline
    full = read_cine(ds, frame_indices=[0, 7])
    for s in (2, 4, 8):
        small = read_cine(ds, frame_indices=[0, 7], scale=s)
        assert small.scale == s and small.frames.shape == (2, 480 // s, 640 // s, 3)
        assert small.file_size == (480, 640)
        assert small.pixel_spacing_mm == full.pixel_spacing_mm
        area = np.stack(
            [cv2.resize(f, (640 // s, 480 // s), interpolation=cv2.INTER_AREA) for f in full.frames]
        )
        diff = np.abs(area.astype(int) - small.frames)
        assert diff.mean() < 1.5, (s, diff.mean())
    with pytest.raises(DicomDecodeError, match="scale"):
        read_cine(ds, frame_indices=[0], scale=3)


def test_other_encodings_ignore_the_scale(pydicom_file: Callable[[str], Path]) -> None:
    for name in ("US1_UNCR.dcm", "OBXXXX1A_rle.dcm"):
        full = read_cine(pydicom_file(name), frame_indices=[0])
        cine = read_cine(pydicom_file(name), frame_indices=[0], scale=4)
        assert cine.scale == 1
        np.testing.assert_array_equal(cine.frames, full.frames)


def test_decode_scale_keeps_the_box_at_least_spec_size(pydicom_file: Callable[[str], Path]) -> None:
    ds = load_dataset(pydicom_file("color3d_jpeg_baseline.dcm"))  # region box 512 x 384
    assert [decode_scale(ds, PreprocessSpec(size=n)) for n in (64, 112, 256, 300)] == [8, 4, 2, 1]
    # regions that do not fit the pixels: the box comes from the pixels, full-size decode
    assert decode_scale(load_dataset(pydicom_file("examples_ybr_color.dcm")), PreprocessSpec()) == 1


@pytest.mark.parametrize("size", [64, 112])
def test_scaled_clip_is_close_to_the_full_decode(
    pydicom_file: Callable[[str], Path], size: int
) -> None:
    path = pydicom_file("color3d_jpeg_baseline.dcm")
    spec = PreprocessSpec(size=size, frames=8, fps=10)
    full, scaled = load_clip(path, spec), load_clip(path, spec, scaled=True)
    assert read_needed(load_dataset(path), spec).scale > 1
    assert scaled.pixels.shape == full.pixels.shape == (3, 8, size, size)
    assert scaled.spacing_mm == pytest.approx(full.spacing_mm)
    diff = np.abs(scaled.pixels.astype(int) - full.pixels)
    # measured: mean 0.73 / 0.46, 99th percentile 9 / 6 grey levels (size 64 / 112)
    assert diff.mean() < 1.5 and np.percentile(diff, 99) < 16
    pad = (full.pixels == 0).all(axis=(0, 1, 3))  # the letterbox rows: same geometry
    assert pad.any() and np.array_equal(pad, (scaled.pixels == 0).all(axis=(0, 1, 3)))
