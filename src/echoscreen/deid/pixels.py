"""Clean Pixel Data for ultrasound: blank everything outside the Sequence of Ultrasound Regions.

Scanners burn the patient's name, ID, date and the institution into the screen around the
image. The Sequence of Ultrasound Regions says where the image areas are (2D sector,
M-mode, Doppler, ECG trace); everything outside their union is set to zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from echoscreen.errors import DeidError

Box = tuple[int, int, int, int]


def regions_of(ds: Dataset) -> list[Box]:
    """The region bounding boxes of a dataset's Sequence of Ultrasound Regions.

    Args:
        ds: an ultrasound dataset (original or de-identified; the sequence is kept).

    Returns:
        ``(x0, y0, x1, y1)`` per item (RegionLocationMinX0, MinY0, MaxX1, MaxY1; inclusive
        pixel bounds); items missing a bound are left out.
    """
    boxes: list[Box] = []
    for item in ds.get("SequenceOfUltrasoundRegions", None) or []:
        keys = (
            "RegionLocationMinX0",
            "RegionLocationMinY0",
            "RegionLocationMaxX1",
            "RegionLocationMaxY1",
        )
        values = [item.get(k) for k in keys]
        if any(v is None or v == "" for v in values):
            continue
        try:
            x0, y0, x1, y1 = (int(v) for v in values)
        except (TypeError, ValueError):
            continue
        boxes.append((x0, y0, x1, y1))
    return boxes


def _box(region: Any) -> Box:
    if hasattr(region, "x0"):
        return (int(region.x0), int(region.y0), int(region.x1), int(region.y1))
    x0, y0, x1, y1 = region
    return (int(x0), int(y0), int(x1), int(y1))


def region_mask(shape: tuple[int, int], regions: Sequence[Any]) -> np.ndarray:
    """Union of the region boxes as a boolean mask.

    Boxes reaching past the frame are clipped to it; empty or inverted boxes count for
    nothing.

    Args:
        shape: ``(H, W)`` of a frame in pixels.
        regions: objects with ``x0, y0, x1, y1`` (e.g. ``echoscreen.dicom.UltrasoundRegion``)
            or ``(x0, y0, x1, y1)`` tuples.

    Returns:
        ``(H, W)`` bool, True inside a region.
    """
    height, width = shape
    mask = np.zeros((height, width), dtype=bool)
    for region in regions:
        x0, y0, x1, y1 = _box(region)
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, width - 1), min(y1, height - 1)
        if x0 <= x1 and y0 <= y1:
            mask[y0 : y1 + 1, x0 : x1 + 1] = True
    return mask


def shrink_boxes(regions: Sequence[Any], scale: int) -> list[Box]:
    """Region boxes in the coordinates of frames decoded at 1/``scale``, rounded inward.

    A decoded pixel ``(i, j)`` covers the file pixels ``[s*i, s*i + s - 1]``; it stays in a
    box only when every file pixel it covers is inside the box. Boxes thinner than one
    decoded pixel come out empty (inverted) and count for nothing in :func:`region_mask`.
    """
    out: list[Box] = []
    for region in regions:
        x0, y0, x1, y1 = _box(region)
        out.append((-(-x0 // scale), -(-y0 // scale), (x1 + 1) // scale - 1, (y1 + 1) // scale - 1))
    return out


def _refuse_unclean(mask: np.ndarray, burned_in: bool) -> None:
    """DeidError when annotation may be burned in and ``mask`` cannot separate it."""
    if burned_in and not mask.any():
        raise DeidError(
            "the clip may have burned-in annotation (BurnedInAnnotation YES or absent) and has "
            "no usable Sequence of Ultrasound Regions, so its pixels cannot be cleaned; it is "
            "quarantined: export it from the scanner with regions, or without annotation"
        )
    if burned_in and mask.all():
        raise DeidError(
            "the clip may have burned-in annotation and its ultrasound regions cover the whole "
            "frame, so the annotation cannot be separated from the image; it is quarantined"
        )


def _check_frames(frames: np.ndarray) -> None:
    if frames.ndim not in (3, 4) or frames.dtype != np.uint8:
        raise DeidError(
            f"frames must be (T, H, W, C) uint8, got shape {frames.shape} dtype {frames.dtype}; "
            "decode the clip with echoscreen.dicom first"
        )


def blank_outside(frames: np.ndarray, mask: np.ndarray, *, inplace: bool) -> np.ndarray:
    """Zero every pixel of ``frames`` where ``mask`` is False (all of them if it is empty).

    Everything outside the mask's bounding box is zeroed with slices; inside it, only when
    the mask is not a single box, a ``(h, w)`` 0/1 array multiplies the box. No whole-frame
    boolean indexing, and with ``inplace`` no copy.

    Args:
        frames: ``(T, H, W, C)`` or ``(T, H, W)`` uint8.
        mask: ``(H, W)`` bool, True where pixels are kept.
        inplace: zero ``frames`` itself; else a new array is returned.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        if inplace:
            frames[...] = 0
            return frames
        return np.zeros_like(frames)
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if inplace:
        out = frames
        out[:, :y0] = 0
        out[:, y1:] = 0
        out[:, y0:y1, :x0] = 0
        out[:, y0:y1, x1:] = 0
    else:
        out = np.zeros_like(frames)
        out[:, y0:y1, x0:x1] = frames[:, y0:y1, x0:x1]
    inside = mask[y0:y1, x0:x1]
    if not inside.all():  # a union of several boxes: zero the gaps inside its bounding box
        keep = inside.reshape(inside.shape + (1,) * (frames.ndim - 3)).astype(np.uint8)
        box = out[:, y0:y1, x0:x1]
        np.multiply(box, keep, out=box)
    return out


def clean_pixels(
    frames: np.ndarray, regions: Sequence[Any], *, burned_in: bool, inplace: bool = False
) -> np.ndarray:
    """Blank (zero) every pixel outside the union of the ultrasound regions.

    Args:
        frames: ``(T, H, W, C)`` uint8 (``(T, H, W)`` is taken as C = 1).
        regions: the regions (see :func:`region_mask`); may be empty.
        burned_in: whether the clip may carry burned-in annotation (BurnedInAnnotation YES
            or absent).
        inplace: blank ``frames`` itself (for callers that own freshly decoded frames)
            instead of returning a new array.

    Returns:
        The cleaned frames, same shape and dtype: ``frames`` itself with ``inplace``, else a
        new array (``frames`` is not modified).

    Raises:
        DeidError: when ``burned_in`` and the regions leave nothing to blank (none usable,
            or they cover the whole frame): the annotation cannot be told apart from the
            image, so the clip must be quarantined. Also for a malformed ``frames`` array.
    """
    _check_frames(frames)
    mask = region_mask((frames.shape[1], frames.shape[2]), regions)
    _refuse_unclean(mask, burned_in)
    if not mask.any():  # no regions and no annotation: nothing to keep apart
        return frames if inplace else frames.copy()
    return blank_outside(frames, mask, inplace=inplace)


def clean_scaled(
    frames: np.ndarray,
    regions: Sequence[Any],
    *,
    burned_in: bool,
    file_size: tuple[int, int],
    scale: int,
    inplace: bool = False,
) -> np.ndarray:
    """:func:`clean_pixels` for frames decoded at 1/``scale`` (libjpeg's DCT scaling).

    Refusals are judged on the file's pixel grid, exactly as :func:`clean_pixels` would
    on the full-size frames; then every decoded pixel not wholly inside a region
    (:func:`shrink_boxes`) is zeroed, so no kept pixel covers a file pixel outside them.

    Args:
        frames: ``(T, ceil(Rows / scale), ceil(Columns / scale)[, C])`` uint8.
        regions: the regions in the file's pixel coordinates.
        burned_in: as :func:`clean_pixels`.
        file_size: ``(Rows, Columns)`` of the file.
        scale: the decode's reduction (1, 2, 4 or 8).
        inplace: as :func:`clean_pixels`.

    Raises:
        DeidError: as :func:`clean_pixels`.
    """
    _check_frames(frames)
    if scale == 1:
        return clean_pixels(frames, regions, burned_in=burned_in, inplace=inplace)
    full = region_mask(file_size, regions)
    _refuse_unclean(full, burned_in)
    if not full.any():
        return frames if inplace else frames.copy()
    mask = region_mask((frames.shape[1], frames.shape[2]), shrink_boxes(regions, scale))
    return blank_outside(frames, mask, inplace=inplace)
