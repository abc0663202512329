"""Burned-in annotations: identity text above the sector, an ECG trace below it.

Everything drawn here lies *outside* the ultrasound regions (the sector's bounding
box), as on real scanners, so de-identification can blank all pixels outside the
regions without losing anything clinical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from echoscreen.synth.motion import ecg_wave
from echoscreen.synth.render import ScanGeometry

TEXT_RGB = (235, 235, 235)
ECG_RGB = (40, 220, 90)


@dataclass(frozen=True)
class Annotation:
    """What a scanner burns into the image.

    Attributes:
        left: text lines at the top left (patient name, ID).
        right: text lines at the top right (institution, date and time).
        side: short technical labels (probe, MI/TIS, depth) for the margins.
    """

    left: tuple[str, ...]
    right: tuple[str, ...]
    side: tuple[str, ...] = ()


def _put(img: np.ndarray, text: str, x: int, y: int, scale: float) -> None:
    import cv2

    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_RGB, 1, cv2.LINE_AA)


def base_canvas(g: ScanGeometry, ann: Annotation, doppler: bool) -> np.ndarray:
    """The static overlay ``(rows, cols, 3)`` uint8: text band, margins and colour bar."""
    import cv2

    img = np.zeros((g.rows, g.cols, 3), dtype=np.uint8)
    scale = max(0.18, min(0.45, g.top / 2.0 / 22.0))
    line_h = max(2, g.top // 2)
    for i, line in enumerate(ann.left[:2]):
        _put(img, line, 2, min(g.top - 2, line_h * (i + 1) - 1), scale)
    for i, line in enumerate(ann.right[:2]):
        (w, _), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        _put(img, line, max(0, g.cols - w - 2), min(g.top - 2, line_h * (i + 1) - 1), scale)
    margin = g.left - 2
    if margin >= 24:
        for i, line in enumerate(ann.side):
            text = line
            while text and cv2.getTextSize(text, 0, scale * 0.8, 1)[0][0] > margin - 2:
                text = text[:-1]
            y = g.top + 14 + 14 * i
            if text and y < g.bottom:
                _put(img, text, 1, y, scale * 0.8)
    right_margin = g.cols - g.right - 2
    if doppler and right_margin >= 6:
        bar_h = max(8, (g.bottom - g.top) // 4)
        y0 = g.top + 4
        v = np.linspace(1.0, -1.0, bar_h)[:, None]
        bar = np.zeros((bar_h, 1, 3), np.float32)
        bar[..., 0] = np.where(v > 0, 70 + 185 * v, 0)
        bar[..., 2] = np.where(v < 0, 80 - 175 * v, 0)
        x0 = g.right + 2 + (right_margin - min(6, right_margin)) // 2
        img[y0 : y0 + bar_h, x0 : x0 + min(6, right_margin)] = bar.astype(np.uint8)
    return img


def ecg_points(
    g: ScanGeometry, t_now: float, heart_rate: float, phase0: float, sf: float
) -> np.ndarray:
    """Polyline ``(N, 1, 2)`` int32 of the ECG sweep ending at time ``t_now`` (s)."""
    band_top = g.rows - max(8, round(0.13 * g.rows)) + 2
    band_h = g.rows - band_top - 2
    xs = np.arange(2, g.cols - 2)
    window = 2.5  # seconds shown across the band
    t = t_now - (xs[-1] - xs) / max(1, xs[-1] - xs[0]) * window
    amp = ecg_wave(phase0 + t * heart_rate / 60.0, sf)
    ys = band_top + band_h * (0.75 - 0.6 * amp)
    pts = np.stack([xs, np.clip(ys, band_top, g.rows - 1)], axis=-1)
    return pts.round().astype(np.int32)[:, None, :]


def compose(
    g: ScanGeometry,
    base: np.ndarray,
    sector: np.ndarray,
    fps: float,
    heart_rate: float,
    phase0: float,
    sf: float,
) -> np.ndarray:
    """Full frames ``(T, rows, cols, 3)`` uint8: overlay, sector in its region, moving ECG."""
    import cv2

    frames = np.repeat(base[None], sector.shape[0], axis=0)
    frames[:, g.top : g.bottom + 1, g.left : g.right + 1] = sector
    for i in range(sector.shape[0]):
        pts = ecg_points(g, i / fps, heart_rate, phase0, sf)
        cv2.polylines(frames[i], [pts], False, ECG_RGB, 1, cv2.LINE_AA)
    return frames
