"""Encode cine frames into a DICOM dataset's Pixel Data, the way ultrasound scanners send them.

Three transfer syntaxes are supported:

- ``"jpeg-baseline"``: encapsulated JPEG baseline (1.2.840.10008.1.2.4.50), one JPEG per
  frame. Colour frames are written with 4:2:2 chroma subsampling and
  PhotometricInterpretation ``YBR_FULL_422`` (the common case from scanners);
  monochrome frames as ``MONOCHROME2``.
- ``"explicit-le"``: native Explicit VR Little Endian, ``RGB`` (PlanarConfiguration 0)
  or ``MONOCHROME2``.
- ``"rle"``: RLE Lossless (1.2.840.10008.1.2.5), encoded by pydicom with the
  pylibjpeg-rle plugin; ``RGB`` or ``MONOCHROME2``.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from echoscreen.errors import ConfigError

TRANSFER_SYNTAXES: dict[str, UID] = {
    "jpeg-baseline": JPEGBaseline8Bit,
    "explicit-le": ExplicitVRLittleEndian,
    "rle": RLELossless,
}

#: JPEG quality used for the baseline encoding (typical scanner setting)
JPEG_QUALITY = 90


def _check_frames(frames: np.ndarray) -> np.ndarray:
    if frames.dtype != np.uint8:
        raise ConfigError(f"frames must be uint8, got {frames.dtype}; convert with np.uint8 first")
    if frames.ndim == 4 and frames.shape[-1] == 3:
        pass
    elif frames.ndim != 3:
        raise ConfigError(
            f"frames must have shape (T, H, W, 3) RGB or (T, H, W) mono, got {frames.shape}"
        )
    if frames.shape[0] < 1 or frames.shape[1] < 1 or frames.shape[2] < 1:
        raise ConfigError(f"frames must not be empty, got shape {frames.shape}")
    return np.ascontiguousarray(frames)


def _jpeg_frames(frames: np.ndarray) -> list[bytes]:
    """Encode each frame as a baseline JPEG; colour frames with 4:2:2 subsampling."""
    import cv2

    params = [
        int(cv2.IMWRITE_JPEG_QUALITY),
        JPEG_QUALITY,
        int(cv2.IMWRITE_JPEG_SAMPLING_FACTOR),
        int(cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422),
    ]
    out: list[bytes] = []
    for frame in frames:
        image = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if frame.ndim == 3 else frame
        ok, buf = cv2.imencode(".jpg", image, params)
        if not ok:  # pragma: no cover - OpenCV only fails on invalid input we already rejected
            raise ConfigError("OpenCV could not JPEG-encode a frame")
        out.append(buf.tobytes())
    return out


def _set_image_module(ds: Dataset, frames: np.ndarray) -> None:
    colour = frames.ndim == 4
    ds.NumberOfFrames = int(frames.shape[0])
    ds.Rows = int(frames.shape[1])
    ds.Columns = int(frames.shape[2])
    ds.SamplesPerPixel = 3 if colour else 1
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if colour:
        ds.PlanarConfiguration = 0
    elif "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.LossyImageCompression = "00"


def set_pixel_data(ds: Dataset, frames: np.ndarray, transfer_syntax: str) -> None:
    """Write ``frames`` into ``ds`` as Pixel Data with the image-pixel attributes that go with it.

    Args:
        ds: the dataset to fill; its ``file_meta`` is created if missing and its
            TransferSyntaxUID set.
        frames: ``(T, H, W, 3)`` uint8 RGB or ``(T, H, W)`` uint8 monochrome cine.
        transfer_syntax: ``"jpeg-baseline"``, ``"explicit-le"`` or ``"rle"``.

    Raises:
        ConfigError: unknown transfer syntax or frames of the wrong shape or dtype.
    """
    if transfer_syntax not in TRANSFER_SYNTAXES:
        choices = ", ".join(TRANSFER_SYNTAXES)
        raise ConfigError(f"unknown transfer syntax {transfer_syntax!r}; choose one of {choices}")
    frames = _check_frames(frames)
    colour = frames.ndim == 4
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = FileMetaDataset()
    _set_image_module(ds, frames)
    tsuid = TRANSFER_SYNTAXES[transfer_syntax]
    if transfer_syntax == "jpeg-baseline":
        ds.PhotometricInterpretation = "YBR_FULL_422" if colour else "MONOCHROME2"
        ds.PixelData = encapsulate(_jpeg_frames(frames))
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = f"{frames.nbytes / max(1, len(ds.PixelData)):.2f}"[:16]
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.file_meta.TransferSyntaxUID = tsuid
    elif transfer_syntax == "explicit-le":
        ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
        ds.PixelData = frames.tobytes()
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = tsuid
    else:
        ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(RLELossless, frames, encoding_plugin="pylibjpeg", generate_instance_uid=False)
