"""Drawing a scene's primitives and sampling them onto the polar grid of the scanner.

The anatomy is drawn on a Cartesian canvas in scene centimetres with OpenCV's
anti-aliased primitives (painter's order), then sampled onto the polar grid with one
``cv2.remap``: ~10x faster than evaluating every primitive on the grid in numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from echoscreen.synth.anatomy import Ellipse, Prim

#: echogenicity of tissue outside the heart
BACKGROUND = 0.1

CANVAS_CM_PER_PX = 0.04
_SHIFT = 4  # cv2 drawing sub-pixel bits


@dataclass(frozen=True)
class Canvas:
    """A Cartesian scene canvas the anatomy is drawn on, and its map onto the polar grid.

    Drawing with OpenCV's anti-aliased primitives and sampling the canvas onto the
    polar grid with one ``cv2.remap`` is ~10x faster than evaluating each primitive
    on the grid in numpy.

    Attributes:
        x0, z0: scene cm of canvas pixel (0, 0); size: ``(height, width)`` pixels.
        map_x, map_y: canvas pixel coordinates of each polar sample.
    """

    x0: float
    z0: float
    size: tuple[int, int]
    map_x: np.ndarray
    map_y: np.ndarray

    @classmethod
    def for_grid(cls, xs: np.ndarray, zs: np.ndarray) -> Canvas:
        """The canvas covering scene points ``(xs, zs)`` (the polar grid in scene cm)."""
        x0, z0 = float(xs.min()) - 0.2, float(zs.min()) - 0.2
        w = math.ceil((float(xs.max()) + 0.2 - x0) / CANVAS_CM_PER_PX) + 1
        h = math.ceil((float(zs.max()) + 0.2 - z0) / CANVAS_CM_PER_PX) + 1
        mx = ((xs - x0) / CANVAS_CM_PER_PX).astype(np.float32)
        my = ((zs - z0) / CANVAS_CM_PER_PX).astype(np.float32)
        return cls(x0, z0, (h, w), mx, my)

    def pt(self, x: float, z: float) -> tuple[int, int]:
        """Shifted integer canvas coordinates of scene point ``(x, z)``."""
        k = (1 << _SHIFT) / CANVAS_CM_PER_PX
        return round((x - self.x0) * k), round((z - self.z0) * k)

    def length(self, cm: float) -> int:
        """Shifted integer canvas length of ``cm``."""
        return max(1, round(cm * (1 << _SHIFT) / CANVAS_CM_PER_PX))


def _draw(img: np.ndarray, c: Canvas, p: Prim, colour: int) -> None:
    import cv2

    if isinstance(p, Ellipse):
        cv2.ellipse(
            img,
            c.pt(p.cx, p.cz),
            (c.length(p.rx), c.length(p.rz)),
            p.angle,
            0,
            360,
            colour,
            -1,
            cv2.LINE_AA,
            _SHIFT,
        )
    else:
        thick = max(1, round(2 * p.radius / CANVAS_CM_PER_PX))
        cv2.line(img, c.pt(p.x0, p.z0), c.pt(p.x1, p.z1), colour, thick, cv2.LINE_AA, _SHIFT)


def paint(
    prims: list[Prim], canvas: Canvas, want_leaflets: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Echogenicity ``(n_samples, n_beams)`` float32 of ``prims`` on the polar grid.

    Returns:
        ``(echogenicity, leaflet_mask)``; the mask (bool) only when ``want_leaflets``.
    """
    import cv2

    img = np.full(canvas.size, int(BACKGROUND * 255), dtype=np.uint8)
    leaf = np.zeros(canvas.size, dtype=np.uint8) if want_leaflets else None
    for p in prims:
        _draw(img, canvas, p, round(p.value * 255))
        if leaf is not None:
            _draw(leaf, canvas, p, 255 if p.tag == "leaflet" else 0)
    e = cv2.remap(img, canvas.map_x, canvas.map_y, cv2.INTER_LINEAR, borderValue=0)
    mask = None
    if leaf is not None:
        mask = cv2.remap(leaf, canvas.map_x, canvas.map_y, cv2.INTER_LINEAR, borderValue=0) > 127
    return e.astype(np.float32) * np.float32(1 / 255), mask
