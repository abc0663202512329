"""Clean Pixel Data: zero outside the union of the ultrasound regions, quarantine if impossible."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from pydicom.dataset import Dataset

from echoscreen.deid import clean_pixels, region_mask, regions_of
from echoscreen.errors import DeidError


@dataclass(frozen=True)
class Region:
    x0: int
    y0: int
    x1: int
    y1: int


def _frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(1, 256, size=(4, 64, 64, 3), dtype=np.uint8)


def test_blanks_outside_union_and_keeps_inside() -> None:
    frames = _frames()
    regions = [Region(10, 12, 40, 50), (45, 0, 63, 8)]
    out = clean_pixels(frames, regions, burned_in=True)
    mask = region_mask((64, 64), regions)
    assert mask[12, 10] and mask[50, 40] and not mask[11, 10] and not mask[50, 41]
    assert mask[0, 63] and mask[8, 45] and not mask[9, 45]
    assert np.array_equal(out[:, mask], frames[:, mask])
    assert not out[:, ~mask].any()
    assert frames.min() >= 1  # input untouched


def test_regions_past_the_frame_are_clipped() -> None:
    out = clean_pixels(_frames(), [Region(32, 32, 500, 500)], burned_in=True)
    assert not out[:, :32].any() and not out[:, :, :32].any()
    assert out[:, 32:, 32:].all()


def test_burned_in_without_regions_is_refused() -> None:
    with pytest.raises(DeidError, match="quarantined"):
        clean_pixels(_frames(), [], burned_in=True)
    with pytest.raises(DeidError, match="quarantined"):
        clean_pixels(_frames(), [Region(90, 90, 99, 99)], burned_in=True)  # wholly outside
    with pytest.raises(DeidError, match="whole"):
        clean_pixels(_frames(), [Region(0, 0, 63, 63)], burned_in=True)


def test_no_annotation_and_no_regions_passes_unchanged() -> None:
    frames = _frames()
    assert np.array_equal(clean_pixels(frames, [], burned_in=False), frames)


def test_grey_frames_and_bad_input() -> None:
    grey = _frames()[..., 0]
    out = clean_pixels(grey, [Region(0, 0, 31, 63)], burned_in=True)
    assert out.shape == grey.shape and not out[:, :, 32:].any()
    with pytest.raises(DeidError, match="uint8"):
        clean_pixels(grey.astype(np.float32), [Region(0, 0, 31, 63)], burned_in=True)


def test_regions_of_reads_the_sequence() -> None:
    ds = Dataset()
    good, partial = Dataset(), Dataset()
    good.RegionLocationMinX0, good.RegionLocationMinY0 = 84, 31
    good.RegionLocationMaxX1, good.RegionLocationMaxY1 = 595, 414
    partial.RegionLocationMinX0 = 3
    ds.SequenceOfUltrasoundRegions = [good, partial]
    assert regions_of(ds) == [(84, 31, 595, 414)]
    assert regions_of(Dataset()) == []


def test_inplace_matches_the_mask_reference_for_random_unions() -> None:
    rng, checked = np.random.default_rng(1), 0
    for _ in range(50):
        regions = [tuple(int(v) for v in rng.integers(-8, 72, size=4)) for _ in range(3)]
        mask = region_mask((64, 64), regions)
        if not mask.any() or mask.all():
            continue
        frames = _frames()
        expected = np.where(mask[None, :, :, None], frames, 0)
        assert np.array_equal(clean_pixels(frames, regions, burned_in=True), expected)
        grey = np.ascontiguousarray(frames[..., 0])
        same = clean_pixels(grey, regions, burned_in=True, inplace=True)
        assert same is grey and np.array_equal(grey, expected[..., 0])
        checked += 1
    assert checked >= 10
