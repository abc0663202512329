"""preprocess: crop to the imaging region, square, resize, resample in time, keep colour."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest

from echoscreen.dicom import (
    PreprocessSpec,
    detect_sector,
    imaging_box,
    load_clip,
    preprocess,
    read_cine,
    sample_indices,
)
from echoscreen.errors import PreprocessError

MakeUS = Callable[..., pydicom.Dataset]
REGION = {"x0": 20, "y0": 10, "x1": 59, "y1": 49, "delta_cm": 0.05}  # 40 x 40 px, 0.5 mm


def numbered_frames(t: int, h: int = 64, w: int = 96) -> np.ndarray:
    """(t, h, w, 3): inside REGION frame k is grey 4k (+ a red patch); outside is white text."""
    frames = np.full((t, h, w, 3), 255, np.uint8)
    for k in range(t):
        frames[k, 10:50, 20:60] = 4 * k
    frames[:, 20:30, 25:35] = (200, 0, 0)
    return frames


def test_real_cine_shape_and_dtype(pydicom_file: Callable[[str], Path]) -> None:
    clip = preprocess(read_cine(pydicom_file("examples_ybr_color.dcm")))
    assert clip.pixels.shape == (3, 32, 112, 112) and clip.pixels.dtype == np.uint8
    assert clip.pixels.flags.c_contiguous and clip.fps == 30.0
    small = preprocess(read_cine(pydicom_file("examples_ybr_color.dcm")), PreprocessSpec(64, 8, 15))
    assert small.pixels.shape == (3, 8, 64, 64)
    assert small.source_frames.tolist() == [0, 2, 4, 6, 8, 10, 12, 14]  # 30 fps -> 15 fps


def test_crop_follows_the_region_and_keeps_colour(make_us: MakeUS) -> None:
    cine = read_cine(make_us(numbered_frames(8), regions=[REGION], FrameTime=33.333))
    assert imaging_box(cine) == (20, 10, 59, 49)
    clip = preprocess(cine, PreprocessSpec(size=40, frames=8, fps=30))
    assert clip.pixels.max() < 255, "the white text outside the region was cut"
    # frame k shows grey 4k, and the red patch (x 25..34, y 20..29 -> 5..14, 10..19) stays red
    for k in range(8):
        assert clip.pixels[1, k, 30:38, 2:38].mean() == pytest.approx(4 * k, abs=0.5)
    np.testing.assert_array_equal(clip.pixels[:, 0, 12, 7], (200, 0, 0))
    assert clip.spacing_mm == pytest.approx(0.5)  # 40 px at 0.5 mm onto 40 px


def test_non_square_region_is_padded_not_stretched(make_us: MakeUS) -> None:
    wide = {"x0": 0, "y0": 16, "x1": 95, "y1": 47, "delta_cm": 0.1}  # 96 x 32
    frames = np.zeros((2, 64, 96, 3), np.uint8)
    frames[:, 16:48] = 120
    clip = preprocess(read_cine(make_us(frames, regions=[wide])), PreprocessSpec(48, 2, 30))
    rows = clip.pixels[0, 0].mean(axis=1)
    assert (rows > 100).sum() == 16 and (rows == 0).sum() == 32  # 96x32 -> 48x16 centred
    assert clip.spacing_mm == pytest.approx(1.0 * 96 / 48)


def test_temporal_resampling_indices() -> None:
    spec = PreprocessSpec(frames=32, fps=30)
    np.testing.assert_array_equal(sample_indices(120, 60.0, spec), np.arange(0, 64, 2))
    np.testing.assert_array_equal(sample_indices(10, 30.0, spec), np.arange(32) % 10)  # loops
    np.testing.assert_array_equal(sample_indices(100, None, spec), np.arange(32))  # 30 assumed
    np.testing.assert_array_equal(sample_indices(100, 15.0, spec), np.arange(32) // 2)
    with pytest.raises(PreprocessError):
        sample_indices(0, 30.0, spec)


def test_looping_short_cine_uses_the_right_frames(make_us: MakeUS) -> None:
    cine = read_cine(make_us(numbered_frames(5), regions=[REGION], FrameTime=33.333))
    clip = preprocess(cine, PreprocessSpec(size=40, frames=12, fps=30))
    assert clip.source_frames.tolist() == [0, 1, 2, 3, 4] * 2 + [0, 1]
    means = clip.pixels[1, :, 30:38, 2:38].mean(axis=(1, 2))
    np.testing.assert_allclose(means, 4 * clip.source_frames, atol=0.5)


def test_sector_detected_without_regions(make_us: MakeUS) -> None:
    rng = np.random.default_rng(0)
    frames = np.zeros((12, 120, 160, 3), np.uint8)
    yy, xx = np.mgrid[:120, :160]
    sector = (yy >= 20) & (yy <= 100) & (np.abs(xx - 80) <= (yy - 20) * 0.9 + 4)
    for k in range(12):
        speckle = rng.integers(20, 200, size=(120, 160), dtype=np.uint8)
        frames[k][sector] = speckle[sector][:, None]
    frames[:, 2:10, 2:60] = 230  # burned-in text, static
    frames[:, 110:112, :] = 200  # a thin ECG baseline
    cine = read_cine(make_us(frames))
    x0, y0, x1, y1 = imaging_box(cine)
    ys, xs = np.nonzero(sector)
    assert abs(x0 - xs.min()) <= 4 and abs(x1 - xs.max()) <= 4
    assert abs(y0 - ys.min()) <= 4 and abs(y1 - ys.max()) <= 4
    still = detect_sector(frames[:1])  # one frame: non-black grey pixels, text opened away
    assert still[1] >= 14 and still[3] <= 104


def test_sector_on_real_echo_without_usable_regions(pydicom_file: Callable[[str], Path]) -> None:
    cine = read_cine(pydicom_file("examples_ybr_color.dcm"))  # regions are for 640 x 480
    x0, y0, x1, y1 = imaging_box(cine)
    assert 60 <= x0 < 120 and 200 < x1 <= 280 and y0 < 60 and y1 > 180
    # the same echo at 640 x 480: detection finds the sector inside the scanner's 2D region
    big = read_cine(pydicom_file("color3d_jpeg_baseline.dcm"), frame_indices=range(0, 120, 8))
    x0, y0, x1, y1 = detect_sector(big.frames)
    assert 84 <= x0 <= 100 and 480 <= x1 <= 595 and 31 <= y0 <= 60 and 390 <= y1 <= 414


def test_mono_becomes_three_equal_channels(pydicom_file: Callable[[str], Path]) -> None:
    clip = preprocess(read_cine(pydicom_file("JPGLosslessP14SV1_1s_1f_8b.dcm")))
    assert clip.pixels.shape == (3, 32, 112, 112)
    np.testing.assert_array_equal(clip.pixels[0], clip.pixels[2])
    assert (clip.source_frames == 0).all()  # one frame, looped


def test_load_clip_decodes_only_what_it_needs(pydicom_file: Callable[[str], Path]) -> None:
    path = pydicom_file("color3d_jpeg_baseline.dcm")
    spec = PreprocessSpec(size=64, frames=8, fps=10)  # every third frame of 30 fps
    clip = load_clip(path, spec)
    assert clip.source_frames.tolist() == [0, 3, 6, 9, 12, 15, 18, 21]
    np.testing.assert_array_equal(clip.pixels, preprocess(read_cine(path), spec).pixels)
    partial = read_cine(path, frame_indices=[0, 1])
    with pytest.raises(PreprocessError, match="not decoded"):
        preprocess(partial, spec)


def test_some_output_frames_only(pydicom_file: Callable[[str], Path]) -> None:
    from echoscreen.dicom import load_dataset, read_needed

    spec = PreprocessSpec(size=64, frames=8, fps=10)
    for name in ("color3d_jpeg_baseline.dcm", "examples_ybr_color.dcm"):  # regions, none
        ds = load_dataset(pydicom_file(name))
        whole = preprocess(read_needed(ds, spec), spec)
        cine = read_needed(ds, spec, outputs=[1, 6])
        some = preprocess(cine, spec, [1, 6])
        np.testing.assert_array_equal(some.pixels, whole.pixels[:, [1, 6]])
        assert some.source_frames.tolist() == whole.source_frames[[1, 6]].tolist()
        # with regions only those frames are decoded; without, the box needs them all
        assert cine.n_frames == (2 if name.startswith("color3d") else 8)
    with pytest.raises(PreprocessError, match="output frames"):
        preprocess(cine, spec, [8])
