"""Clean Pixel Data on DCT-scaled frames, and the model clip that ingest and screening share."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, generate_uid

from echoscreen.deid import DeidPolicy, clean_instance_pixels, clean_scaled, model_clip, region_mask
from echoscreen.deid.pixels import shrink_boxes
from echoscreen.dicom import PreprocessSpec, load_clip, read_needed
from echoscreen.errors import DeidError

#: a sector box whose edges fall inside decoded pixels at 1/2, 1/4 and 1/8
BOX = (21, 13, 170, 150)


def _jpeg_study(t: int = 6, rows: int = 192, cols: int = 256) -> Dataset:
    """A JPEG-baseline US cine: speckle inside BOX, white 'burned-in text' outside it."""
    rng = np.random.default_rng(3)
    frames = np.full((t, rows, cols, 3), 255, np.uint8)
    x0, y0, x1, y1 = BOX
    frames[:, y0 : y1 + 1, x0 : x1 + 1] = rng.integers(20, 120, (t, y1 - y0 + 1, x1 - x0 + 1, 3))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.3.1", generate_uid()
    ds.StudyInstanceUID, ds.Modality, ds.BurnedInAnnotation = generate_uid(), "US", "YES"
    ds.NumberOfFrames, ds.Rows, ds.Columns, ds.FrameTime = t, rows, cols, 33.3
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
    (region.RegionLocationMinX0, region.RegionLocationMinY0,
     region.RegionLocationMaxX1, region.RegionLocationMaxY1) = BOX  # fmt: skip
    ds.SequenceOfUltrasoundRegions = [region]
    ds.PixelData = encapsulate([cv2.imencode(".jpg", f[..., ::-1])[1].tobytes() for f in frames])
    ds["PixelData"].VR = "OB"
    return ds


@pytest.mark.parametrize("s", [2, 4, 8])
def test_kept_decoded_pixels_lie_wholly_inside_the_regions(s: int) -> None:
    regions = [BOX, (200, 0, 254, 9)]
    file_mask = region_mask((192, 256), regions)
    frames = np.full((2, 192 // s, 256 // s, 3), 7, np.uint8)
    out = clean_scaled(frames, regions, burned_in=True, file_size=(192, 256), scale=s)
    kept = out[0, ..., 0] > 0
    for i, j in zip(*np.nonzero(kept), strict=True):
        assert file_mask[s * i : s * i + s, s * j : s * j + s].all()
    # and every decoded pixel wholly inside is kept
    assert np.array_equal(kept, region_mask(kept.shape, shrink_boxes(regions, s)))
    assert kept.any() and frames.min() == 7  # not in place: input untouched


def test_refusals_are_judged_on_the_file_grid() -> None:
    frames = np.ones((1, 31, 31, 3), np.uint8)  # a 61 x 61 file at 1/2
    with pytest.raises(DeidError, match="whole"):
        clean_scaled(frames, [(0, 0, 60, 60)], burned_in=True, file_size=(61, 61), scale=2)
    with pytest.raises(DeidError, match="quarantined"):
        clean_scaled(frames, [], burned_in=True, file_size=(61, 61), scale=2)
    same = clean_scaled(frames, [], burned_in=False, file_size=(61, 61), scale=2, inplace=True)
    assert same is frames and frames.all()
    with pytest.raises(DeidError, match="header says"):
        clean_instance_pixels(_jpeg_study(), frames, DeidPolicy(), scale=2)


def test_model_clip_is_cleaned_scaled_and_close_to_the_full_decode() -> None:
    ds = _jpeg_study()
    spec = PreprocessSpec(size=32, frames=6, fps=30)  # box 150 px: decoded at 1/4
    cine = read_needed(ds, spec)
    assert cine.scale == 4
    cleaned = clean_instance_pixels(ds, cine.frames.copy(), DeidPolicy(), scale=4)
    inside = region_mask(cleaned.shape[1:3], shrink_boxes([BOX], 4))
    assert not cleaned[:, ~inside].any() and cleaned[:, inside].all()
    clip = model_clip(ds, spec)
    full = load_clip(ds, spec)  # full-size decode; the box holds only image pixels
    assert clip.pixels.shape == full.pixels.shape == (3, 6, 32, 32)
    diff = np.abs(clip.pixels.astype(int) - full.pixels)
    # measured: mean 2.6, max 25 grey levels on this white-noise speckle (the worst case)
    assert diff.mean() < 4 and clip.pixels.max() < 200  # no white text in what the model sees
