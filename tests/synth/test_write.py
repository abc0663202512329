"""set_pixel_data: frames written for each transfer syntax decode back (pydicom) as intended."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, generate_uid

from echoscreen.dicom.write import set_pixel_data
from echoscreen.errors import ConfigError


def _frames(colour: bool) -> np.ndarray:
    rng = np.random.default_rng(1)
    t, h, w = 3, 24, 40
    ramp = np.linspace(0, 255, w)[None, None, :]
    base = np.broadcast_to(ramp, (t, h, w)) + rng.normal(0, 10, (t, h, w))
    if colour:
        rgb = np.stack([base, 255 - base, np.full_like(base, 90)], axis=-1)
        return np.clip(rgb, 0, 255).astype(np.uint8)
    return np.clip(base, 0, 255).astype(np.uint8)


def _roundtrip(frames: np.ndarray, ts: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.3.1")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    set_pixel_data(ds, frames, ts)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return dcmread(io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize("colour", [True, False])
@pytest.mark.parametrize("ts", ["explicit-le", "rle"])
def test_lossless_syntaxes_decode_exactly(ts: str, colour: bool) -> None:
    frames = _frames(colour)
    ds = _roundtrip(frames, ts)
    assert ds.NumberOfFrames == 3 and (ds.Rows, ds.Columns) == (24, 40)
    assert ds.PhotometricInterpretation == ("RGB" if colour else "MONOCHROME2")
    assert ds.SamplesPerPixel == (3 if colour else 1)
    np.testing.assert_array_equal(ds.pixel_array, frames)


@pytest.mark.parametrize("colour", [True, False])
def test_jpeg_baseline_is_ybr_422_and_close(colour: bool) -> None:
    frames = _frames(colour)
    ds = _roundtrip(frames, "jpeg-baseline")
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds.PhotometricInterpretation == ("YBR_FULL_422" if colour else "MONOCHROME2")
    assert ds.LossyImageCompression == "01"
    decoded = ds.pixel_array.astype(int)  # pydicom converts YBR to RGB
    assert decoded.shape == frames.shape
    assert np.abs(decoded - frames).mean() < 8.0  # noisy test frames: lossy, but close
    np.testing.assert_allclose(decoded.mean(axis=(0, 1, 2)), frames.mean(axis=(0, 1, 2)), atol=2)


def test_bad_input_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="transfer syntax"):
        set_pixel_data(Dataset(), _frames(True), "jpeg2000")
    with pytest.raises(ConfigError, match="uint8"):
        set_pixel_data(Dataset(), _frames(True).astype(np.uint16), "rle")
    with pytest.raises(ConfigError, match="shape"):
        set_pixel_data(Dataset(), np.zeros((2, 3, 4, 5, 3), np.uint8), "rle")
