"""The whole de-identification of one ultrasound instance: header profile and clean pixels."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless

from echoscreen.deid.pixels import clean_scaled, regions_of
from echoscreen.deid.policy import DeidPolicy
from echoscreen.deid.profile import Deidentifier
from echoscreen.deid.tags import method_codes, method_text
from echoscreen.errors import DeidError

#: Image Pixel attributes that describe the old encoding and no longer apply
_STALE_PIXEL_KEYWORDS = (
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
    "PaletteColorLookupTableUID",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "PixelDataProviderURL",
    "ICCProfile",
)


def burned_in_flag(ds: Dataset) -> bool:
    """Whether the instance may carry burned-in annotation (YES, or the flag is absent)."""
    return str(ds.get("BurnedInAnnotation", "") or "").strip().upper() != "NO"


def _as_thwc(frames: np.ndarray) -> np.ndarray:
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3) or frames.dtype != np.uint8:
        raise DeidError(
            f"frames must be (T, H, W, C) uint8 with C 1 or 3, got {frames.shape} "
            f"{frames.dtype}; decode the clip to RGB or grey first"
        )
    return frames


def _write_pixels(out: Dataset, frames: np.ndarray, multi_frame: bool) -> None:
    """Store ``frames`` in ``out`` as RLE Lossless, RGB or MONOCHROME2, 8 bits."""
    for keyword in _STALE_PIXEL_KEYWORDS:
        if keyword in out:
            delattr(out, keyword)
    t, h, w, c = frames.shape
    out.Rows, out.Columns = h, w
    out.SamplesPerPixel = c
    out.PhotometricInterpretation = "RGB" if c == 3 else "MONOCHROME2"
    out.BitsAllocated, out.BitsStored, out.HighBit, out.PixelRepresentation = 8, 8, 7, 0
    if c == 3:
        out.PlanarConfiguration = 0
    elif "PlanarConfiguration" in out:
        del out.PlanarConfiguration
    arr: np.ndarray = frames if c == 3 else frames[..., 0]
    if multi_frame or t > 1:
        out.NumberOfFrames = t
    else:
        arr = arr[0]
        if "NumberOfFrames" in out:
            del out.NumberOfFrames
    out.compress(RLELossless, np.ascontiguousarray(arr), generate_instance_uid=False)


def clean_instance_pixels(
    ds: Dataset, frames: np.ndarray, policy: DeidPolicy, *, scale: int = 1, inplace: bool = False
) -> np.ndarray:
    """Clean Pixel Data for one instance's decoded frames (the pixel half of the profile).

    Args:
        ds: the original instance (its regions and BurnedInAnnotation are read).
        frames: its pixels ``(T, H, W, C)`` uint8, decoded at full size or, with ``scale``
            > 1, at 1/scale (``ceil(Rows / scale) x ceil(Columns / scale)``).
        policy: the site's profile options.
        scale: the decode's DCT scaling (``Cine.scale``).
        inplace: clean ``frames`` in place and return them (callers owning fresh frames).

    Returns:
        The cleaned frames ``(T, H, W, C)`` uint8: zero outside the ultrasound regions
        (decoded pixels not wholly inside them, when scaled).

    Raises:
        DeidError: as :func:`deidentify_instance`.
    """
    frames = _as_thwc(frames)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    expected = (-(-rows // scale), -(-cols // scale))
    if frames.shape[1:3] != expected:
        raise DeidError(
            f"frames are {frames.shape[1]}x{frames.shape[2]} but the header says {rows}x{cols} "
            f"(at 1/{scale}: {expected[0]}x{expected[1]}); pass the frames decoded from this "
            "very instance"
        )
    burned_in = burned_in_flag(ds)
    if policy.clean_pixel_data:
        return clean_scaled(
            frames, regions_of(ds), burned_in=burned_in, file_size=(rows, cols), scale=scale,
            inplace=inplace,
        )  # fmt: skip
    if burned_in:
        raise DeidError(
            "Clean Pixel Data is off but the clip may have burned-in annotation; turn "
            "DeidPolicy.clean_pixel_data on or quarantine the clip"
        )
    return frames if inplace else frames.copy()


def deidentify_instance(
    ds: Dataset,
    frames: np.ndarray,
    deid: Deidentifier,
    *,
    encode: bool = True,
    inplace: bool = False,
) -> tuple[Dataset, np.ndarray]:
    """De-identify one ultrasound instance, header and pixels.

    The header gets the Annex E profile (:meth:`Deidentifier.deidentify`); the pixels
    outside the Sequence of Ultrasound Regions are blanked (:func:`clean_pixels`) and stored
    back into the returned dataset as RLE Lossless, so the stored object holds no burned-in
    identity. BurnedInAnnotation becomes ``NO`` only after cleaning.

    Args:
        ds: the original instance (not modified).
        frames: its decoded pixels, ``(T, H, W, C)`` uint8, RGB (C = 3) or grey (C = 1), of
            the dataset's Rows x Columns.
        deid: the site's de-identifier.
        encode: store the cleaned pixels in the returned dataset (RLE Lossless). With
            False the dataset carries no Pixel Data at all: for callers that only use the
            cleaned frames (in-memory screening), which saves the encoding, most of the
            time this function takes.
        inplace: clean ``frames`` in place and return them (for callers that own freshly
            decoded frames): saves a copy of the clip.

    Returns:
        ``(dataset, frames)``: the de-identified dataset (RLE Lossless pixel data, or none
        with ``encode=False``) and the cleaned frames ``(T, H, W, C)`` uint8.

    Raises:
        DeidError: when the pixels cannot be cleaned (burned-in annotation without usable
            regions; frames that do not match the header; Clean Pixel Data turned off for a
            clip that may have burned-in annotation). The caller quarantines the clip.
    """
    cleaned = clean_instance_pixels(ds, frames, deid.policy, inplace=inplace)
    result = deid.deidentify(ds)
    out = result.dataset
    if encode:
        _write_pixels(out, cleaned, multi_frame="NumberOfFrames" in ds)
    else:
        for keyword in ("PixelData", *_STALE_PIXEL_KEYWORDS):
            if keyword in out:
                delattr(out, keyword)
    pixels = deid.policy.clean_pixel_data
    out.BurnedInAnnotation = "NO"
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = method_text(deid.policy, pixels=pixels)
    out.DeidentificationMethodCodeSequence = method_codes(deid.policy, pixels=pixels)
    out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    return out, cleaned
