"""Builders of small real DICOM files for the reader tests (native and JPEG-baseline)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"


def make_dataset(
    frames: np.ndarray,
    *,
    photometric: str | None = None,
    regions: list[dict[str, Any]] | None = None,
    jpeg: bool = False,
    **elements: Any,
) -> Dataset:
    """A US multi-frame dataset holding ``frames`` ((T, H, W, 3) RGB or (T, H, W) mono uint8).

    Native Explicit VR Little Endian by default; ``jpeg=True`` encodes each frame as a
    JFIF baseline JPEG with OpenCV (YCbCr, labelled YBR_FULL_422). Extra keyword
    arguments are set as elements (e.g. ``FrameTime=16.667``).
    """
    colour = frames.ndim == 4
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = US_MULTIFRAME
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = US_MULTIFRAME, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "US"
    ds.NumberOfFrames = frames.shape[0]
    ds.Rows, ds.Columns = frames.shape[1], frames.shape[2]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if colour:
        ds.PlanarConfiguration = 0
    if jpeg:
        import cv2

        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PhotometricInterpretation = photometric or ("YBR_FULL_422" if colour else "MONOCHROME2")
        encoded = [
            cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR) if colour else f)[1].tobytes()
            for f in frames
        ]
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PhotometricInterpretation = photometric or ("RGB" if colour else "MONOCHROME2")
        ds.PixelData = np.ascontiguousarray(frames).tobytes()
    if regions is not None:
        ds.SequenceOfUltrasoundRegions = [_region(r) for r in regions]
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def _region(spec: dict[str, Any]) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat = spec.get("format", 1)
    item.RegionDataType = spec.get("type", 1)
    item.RegionFlags = 0
    item.RegionLocationMinX0, item.RegionLocationMinY0 = spec["x0"], spec["y0"]
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = spec["x1"], spec["y1"]
    if "delta_cm" in spec:
        item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3
        item.PhysicalDeltaX = item.PhysicalDeltaY = spec["delta_cm"]
    return item


def to_bytes(ds: Dataset) -> bytes:
    """The dataset as a DICOM Part 10 file."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture
def make_us() -> Callable[..., Dataset]:
    """The :func:`make_dataset` builder."""
    return make_dataset


@pytest.fixture
def dicom_bytes() -> Callable[[Dataset], bytes]:
    """The :func:`to_bytes` serialiser."""
    return to_bytes
