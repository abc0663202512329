"""read_cine against pydicom's own decoding, on the real files pydicom and pydicom-data ship."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_color_lut, pixel_array

from echoscreen.dicom import read_cine
from echoscreen.dicom.color import parse_jpeg_header

GetFile = Callable[[str], Path]


def reference(path: Path, index: int | None = None) -> np.ndarray:
    """pydicom's decoding as (T, H, W, C) uint8: YBR -> RGB by pydicom, palette LUT applied."""
    ds = pydicom.dcmread(path)
    arr = pixel_array(ds, index=index) if index is not None else ds.pixel_array
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds) >> 8  # 16-bit LUT entries
    n = 1 if index is not None else int(ds.get("NumberOfFrames", 1) or 1)
    return arr.astype(np.uint8).reshape(n, ds.Rows, ds.Columns, -1)


LOSSLESS = [
    "examples_palette.dcm",  # PALETTE COLOR, native
    "OBXXXX1A_rle.dcm",  # PALETTE COLOR, RLE
    "examples_jpeg2k.dcm",  # JPEG 2000, YBR_RCT
    "US1_UNCR.dcm",  # native RGB
    "JPGLosslessP14SV1_1s_1f_8b.dcm",  # JPEG lossless, MONOCHROME2
    "SC_rgb_rle.dcm",  # RLE RGB
    "SC_ybr_full_uncompressed.dcm",  # native YBR_FULL
    "SC_rgb_2frame.dcm",  # native RGB, 2 frames
]


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_matches_pydicom_exactly(pydicom_file: GetFile, name: str) -> None:
    path = pydicom_file(name)
    cine = read_cine(path)
    ref = reference(path)
    assert cine.frames.dtype == np.uint8
    assert cine.frames.shape == ref.shape
    np.testing.assert_array_equal(cine.frames, ref)


@pytest.mark.parametrize(
    "name",
    [
        "examples_ybr_color.dcm",  # real apical cine, JFIF, YBR_FULL_422
        "SC_rgb_jpeg_dcmtk.dcm",  # YBR_FULL
        "SC_rgb_dcmtk_+eb+cy+np.dcm",  # YBR_FULL_422
        "SC_rgb_dcmtk_+eb+cr.dcm",  # RGB with "RGB" component ids (no transform)
        "SC_rgb_jpeg_app14_dcmd.dcm",  # RGB with Adobe APP14 transform=0
        "SC_jpeg_no_color_transform.dcm",  # RGB, no marker: libjpeg would tint; pydicom route
    ],
)
def test_jpeg_baseline_close_to_pydicom_with_right_colour(pydicom_file: GetFile, name: str) -> None:
    path = pydicom_file(name)
    cine = read_cine(path)
    ref = reference(path)
    assert cine.frames.shape == ref.shape
    diff = np.abs(cine.frames.astype(np.int16) - ref.astype(np.int16))
    assert diff.mean() < 0.5, "decoders may differ by a grey level, not more"
    ours = cine.frames.reshape(-1, 3).mean(axis=0)
    theirs = ref.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(ours, theirs, atol=0.5)


def test_no_green_tint_on_real_echo(pydicom_file: GetFile) -> None:
    """B-mode echo is grey: R, G, B means agree; the undecoded YCbCr planes would not."""
    path = pydicom_file("examples_ybr_color.dcm")
    means = read_cine(path).frames.reshape(-1, 3).astype(np.float64).mean(axis=0)
    assert abs(means[1] - means[0]) < 1.0 and abs(means[1] - means[2]) < 1.0
    raw = pixel_array(pydicom.dcmread(path), raw=True).reshape(-1, 3).mean(axis=0)
    assert abs(raw[1] - means[1]) > 50, "a missed YBR conversion would be caught by this test"


def test_colour_doppler_colours_survive_jpeg(make_us: Callable[..., pydicom.Dataset]) -> None:
    frames = np.zeros((2, 64, 96, 3), np.uint8)
    frames[:, 10:30, 10:40] = (220, 20, 20)  # red jet towards the probe
    frames[:, 34:54, 50:80] = (20, 40, 220)  # blue flow away
    cine = read_cine(make_us(frames, jpeg=True))
    red = cine.frames[:, 14:26, 14:36].reshape(-1, 3).mean(axis=0)
    blue = cine.frames[:, 38:50, 54:76].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(red, (220, 20, 20), atol=12)
    np.testing.assert_allclose(blue, (20, 40, 220), atol=12)


def test_jpeg_header_decides_the_route(pydicom_file: GetFile) -> None:
    """The marker parser sees why the no-transform file must not go through libjpeg as is."""
    from pydicom.encaps import generate_frames

    def first_frame(name: str) -> bytes:
        ds = pydicom.dcmread(pydicom_file(name))
        return next(generate_frames(ds.PixelData, number_of_frames=1))

    plain = parse_jpeg_header(first_frame("SC_jpeg_no_color_transform.dcm"))
    assert plain is not None and plain.libjpeg_transforms() and not plain.is_ybr("RGB")
    adobe = parse_jpeg_header(first_frame("SC_rgb_jpeg_app14_dcmd.dcm"))
    assert adobe is not None and adobe.adobe_transform == 0 and not adobe.libjpeg_transforms()
    jfif = parse_jpeg_header(first_frame("examples_ybr_color.dcm"))
    assert jfif is not None and jfif.jfif and jfif.is_ybr("YBR_FULL_422")


def test_long_jpeg_cine_frames_and_subset(pydicom_file: GetFile) -> None:
    path = pydicom_file("color3d_jpeg_baseline.dcm")
    cine = read_cine(path)
    assert cine.frames.shape == (120, 480, 640, 3)
    assert cine.fps == pytest.approx(30.0, rel=1e-3)
    assert cine.modality == "US" and cine.photometric == "YBR_FULL_422"
    assert cine.pixel_spacing_mm == pytest.approx((0.5105, 0.5105), rel=1e-3)
    np.testing.assert_array_equal(read_cine(path, threads=2).frames, cine.frames)
    picked = [119, 0, 60]
    part = read_cine(path, frame_indices=picked)
    np.testing.assert_array_equal(part.frames, cine.frames[picked])
    assert part.frame_index.tolist() == picked and part.total_frames == 120
    ds = pydicom.dcmread(path)
    for k, i in enumerate(picked):  # pydicom on a few frames only: its full decode is slow
        ref = np.asarray(pixel_array(ds, index=i))
        assert np.abs(part.frames[k].astype(np.int16) - ref).mean() < 0.5


def test_sixteen_bit_mono_scaled_to_uint8(pydicom_file: GetFile) -> None:
    path = pydicom_file("MR_small.dcm")  # 16-bit signed, window 600/1600
    cine = read_cine(path)
    assert cine.frames.shape == (1, 64, 64, 1) and cine.frames.dtype == np.uint8
    ref = pydicom.dcmread(path).pixel_array.astype(np.float64)
    ours = cine.frames[0, ..., 0].astype(np.float64)
    inside = (ref > 0) & (ref < 1400)  # within the VOI window: linear mapping
    assert np.corrcoef(ours[inside], ref[inside])[0, 1] > 0.999
    assert ours[ref >= 1400].min() == 255


def test_monochrome1_is_inverted(make_us: Callable[..., pydicom.Dataset]) -> None:
    frames = np.tile(np.arange(64, dtype=np.uint8) * 4, (1, 8, 1))
    plain = read_cine(make_us(frames)).frames[..., 0]
    inverted = read_cine(make_us(frames, photometric="MONOCHROME1")).frames[..., 0]
    np.testing.assert_array_equal(inverted, 255 - plain)


def test_sources_and_header(
    pydicom_file: GetFile, tmp_path: Path
) -> None:
    path = pydicom_file("examples_ybr_color.dcm")
    data = path.read_bytes()
    by_path = read_cine(path)
    for source in (str(path), data, io.BytesIO(data), pydicom.dcmread(path)):
        np.testing.assert_array_equal(read_cine(source).frames, by_path.frames)
    assert "PixelData" not in by_path.header
    assert by_path.header.SOPInstanceUID == by_path.sop_instance_uid
    assert by_path.study_instance_uid and by_path.series_instance_uid
    region = by_path.regions[0]
    assert region.spatial_format == 1 and region.delta_x_mm == pytest.approx(0.5105, rel=1e-3)
    # the regions describe a 640 x 480 original, not these 320 x 240 pixels
    assert by_path.pixel_spacing_mm is None


@pytest.mark.parametrize(
    ("elements", "fps"),
    [
        ({"FrameTime": 16.667}, 60.0),
        ({"FrameTimeVector": [0, 20, 20, 20]}, 50.0),
        ({"CineRate": 25}, 25.0),
        ({"RecommendedDisplayFrameRate": 15}, 15.0),
        ({}, None),
    ],
)
def test_frame_rate_sources(
    make_us: Callable[..., pydicom.Dataset], elements: dict[str, object], fps: float | None
) -> None:
    cine = read_cine(make_us(np.zeros((4, 8, 8, 3), np.uint8), **elements))
    assert cine.fps == (pytest.approx(fps, rel=1e-3) if fps else None)


def test_in_memory_dataset_without_file_meta(make_us: Callable[..., pydicom.Dataset]) -> None:
    """A dataset from a network peer may lack file meta: native pixels are read as implicit LE."""
    frames = np.arange(2 * 4 * 6, dtype=np.uint8).reshape(2, 4, 6)
    ds = make_us(frames)
    del ds.file_meta
    np.testing.assert_array_equal(read_cine(ds).frames[..., 0], frames)
    assert not hasattr(ds, "file_meta"), "the caller's dataset is left as it was"
