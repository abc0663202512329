"""The Sequence of Ultrasound Regions (PS3.3 C.8.5.5): where the image is, and how big a pixel is.

Scanners describe each area of the screen they drew (the 2D sector, an M-mode strip, a
spectral Doppler trace, the ECG) as a region with inclusive pixel bounds and, for spatial
regions, the physical size of one pixel. echoscreen crops to the union of the 2D regions
and reports the pixel spacing of the main tissue region.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

#: RegionSpatialFormat value of a 2D (tissue or flow) image region
SPATIAL_2D = 1
#: RegionDataType value of a tissue (B-mode) region
DATA_TISSUE = 1
#: PhysicalUnits value meaning centimetres
UNITS_CM = 3


@dataclass(frozen=True)
class UltrasoundRegion:
    """One item of the Sequence of Ultrasound Regions.

    Attributes:
        x0, y0, x1, y1: RegionLocationMinX0, MinY0, MaxX1, MaxY1: inclusive pixel bounds.
        spatial_format: RegionSpatialFormat (1 = 2D, 2 = M-mode, 3 = spectral, 4 = waveform,
            5 = graphics).
        data_type: RegionDataType (1 = tissue, 2 = colour flow, ...).
        flags: RegionFlags bit field.
        delta_x_mm, delta_y_mm: physical width and height of one pixel in millimetres, or
            None when the region's units are not centimetres (seconds, hertz, ...) or absent.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    spatial_format: int
    data_type: int
    flags: int
    delta_x_mm: float | None
    delta_y_mm: float | None

    @property
    def is_2d(self) -> bool:
        """Whether this is a 2D image region (tissue or colour flow)."""
        return self.spatial_format == SPATIAL_2D

    @property
    def area(self) -> int:
        """Area in pixels (inclusive bounds)."""
        return max(0, self.x1 - self.x0 + 1) * max(0, self.y1 - self.y0 + 1)

    def fits(self, rows: int, cols: int) -> bool:
        """Whether the bounds lie inside an image of ``rows`` x ``cols`` pixels.

        An overshoot of up to 1% (at least 2 pixels) is tolerated: scanners often write
        ``MaxX1 = Columns``.
        """
        tol_x, tol_y = max(2, cols // 100), max(2, rows // 100)
        return (
            0 <= self.x0 <= self.x1 < cols + tol_x
            and 0 <= self.y0 <= self.y1 < rows + tol_y
            and self.x0 < cols
            and self.y0 < rows
        )

    def clipped(self, rows: int, cols: int) -> UltrasoundRegion:
        """This region with its bounds clipped to an image of ``rows`` x ``cols``."""
        return replace(self, x1=min(self.x1, cols - 1), y1=min(self.y1, rows - 1))


def _delta_mm(item: Any, units_kw: str, delta_kw: str) -> float | None:
    units, delta = item.get(units_kw), item.get(delta_kw)
    if units is None or delta is None:
        return None
    try:
        value = float(delta)
    except (TypeError, ValueError):
        return None
    if int(units) != UNITS_CM or not math.isfinite(value) or value <= 0:
        return None
    return abs(value) * 10.0


def _int(item: Any, keyword: str, default: int = 0) -> int:
    value = item.get(keyword)
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def parse_regions(header: Any) -> tuple[UltrasoundRegion, ...]:
    """Read the Sequence of Ultrasound Regions of a dataset.

    Args:
        header: a ``pydicom.Dataset``.

    Returns:
        The regions in file order; empty when the sequence is absent. Items without
        location bounds are skipped.
    """
    seq = header.get("SequenceOfUltrasoundRegions")
    if not seq:
        return ()
    regions = []
    for item in seq:
        if "RegionLocationMinX0" not in item or "RegionLocationMaxX1" not in item:
            continue
        regions.append(
            UltrasoundRegion(
                x0=_int(item, "RegionLocationMinX0"),
                y0=_int(item, "RegionLocationMinY0"),
                x1=_int(item, "RegionLocationMaxX1"),
                y1=_int(item, "RegionLocationMaxY1"),
                spatial_format=_int(item, "RegionSpatialFormat"),
                data_type=_int(item, "RegionDataType"),
                flags=_int(item, "RegionFlags"),
                delta_x_mm=_delta_mm(item, "PhysicalUnitsXDirection", "PhysicalDeltaX"),
                delta_y_mm=_delta_mm(item, "PhysicalUnitsYDirection", "PhysicalDeltaY"),
            )
        )
    return tuple(regions)


def usable_2d(
    regions: Iterable[UltrasoundRegion], rows: int, cols: int
) -> list[UltrasoundRegion]:
    """The 2D regions that lie inside the image, clipped to it.

    A region reaching outside the pixel matrix means the image was resized or re-captured
    after the scanner wrote the regions (``examples_ybr_color.dcm`` is such a file); its
    bounds and spacing no longer describe these pixels, so it is ignored.
    """
    return [r.clipped(rows, cols) for r in regions if r.is_2d and r.fits(rows, cols)]


def main_region(
    regions: Iterable[UltrasoundRegion], rows: int, cols: int
) -> UltrasoundRegion | None:
    """The main 2D tissue region: the largest usable tissue region, else the largest 2D one."""
    usable = usable_2d(regions, rows, cols)
    tissue = [r for r in usable if r.data_type == DATA_TISSUE] or usable
    return max(tissue, key=lambda r: r.area, default=None)


def union_box(regions: Iterable[UltrasoundRegion]) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)``, inclusive, of the given regions; None if empty."""
    items = list(regions)
    if not items:
        return None
    return (
        min(r.x0 for r in items),
        min(r.y0 for r in items),
        max(r.x1 for r in items),
        max(r.y1 for r in items),
    )
