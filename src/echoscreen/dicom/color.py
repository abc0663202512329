"""Colour handling: what a JPEG decoder will do with a codestream, and conversions to uint8.

The fast JPEG path hands each frame to libjpeg (through OpenCV). libjpeg decides on its
own whether to apply the YCbCr -> RGB transform, from the JFIF and Adobe APP14 markers and
the component identifiers. DICOM decides from the Photometric Interpretation. When the two
disagree (e.g. an ``RGB`` file whose codestream has no marker telling libjpeg not to
transform) the fast path would tint the image, so the reader takes pydicom's route instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_RGB_IDS = ((82, 71, 66), (114, 103, 98))  # "RGB" / "rgb" in ASCII


@dataclass(frozen=True)
class JpegInfo:
    """What the header of a JPEG codestream says about colour.

    Attributes:
        components: number of colour components (1 or 3 for ultrasound).
        precision: sample precision in bits.
        component_ids: identifiers of the components, in order.
        jfif: whether a JFIF APP0 marker is present (implies YCbCr).
        adobe_transform: the Adobe APP14 transform flag (0 = none, 1 = YCbCr), or None.
    """

    components: int
    precision: int
    component_ids: tuple[int, ...]
    jfif: bool
    adobe_transform: int | None

    @property
    def has_rgb_ids(self) -> bool:
        """Component identifiers spell ``RGB``: the samples are RGB whatever DICOM says."""
        return self.component_ids in _RGB_IDS

    def libjpeg_transforms(self) -> bool:
        """Whether libjpeg will convert YCbCr -> RGB (jdapimin.c ``default_decompress_parms``)."""
        if self.components != 3:
            return False
        if self.jfif:
            return True
        if self.adobe_transform is not None:
            return self.adobe_transform != 0
        return not self.has_rgb_ids

    def is_ybr(self, photometric: str) -> bool:
        """Whether the samples are YCbCr, deciding as pydicom does (component ids, JFIF, PI)."""
        if self.components != 3 or self.has_rgb_ids:
            return False
        return self.jfif or photometric.startswith("YBR")


def parse_jpeg_header(data: bytes) -> JpegInfo | None:
    """Read the markers of a JPEG codestream up to its first scan.

    Args:
        data: one encoded frame.

    Returns:
        The colour-relevant header fields, or None when ``data`` is not a JPEG codestream
        with a frame header.
    """
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    pos, jfif, adobe = 2, False, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        body = data[pos + 4 : pos + 2 + length]
        if marker == 0xE0 and body.startswith(b"JFIF"):
            jfif = True
        elif marker == 0xEE and body.startswith(b"Adobe") and len(body) >= 12:
            adobe = body[11]
        elif marker in _SOF_MARKERS and len(body) >= 6:
            n = body[5]
            ids = tuple(body[6 + 3 * i] for i in range(n) if 6 + 3 * i < len(body))
            return JpegInfo(n, body[0], ids, jfif, adobe)
        elif marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def lut_to_uint8(arr: np.ndarray, lut_bits: int) -> np.ndarray:
    """Scale palette-LUT output (8- or 16-bit entries) to uint8 by keeping the high byte.

    16-bit LUTs made from 8-bit palettes store ``v << 8`` or ``v * 257``; both map back to
    ``v``.

    Args:
        arr: RGB values from ``pydicom.pixels.apply_color_lut``, any shape.
        lut_bits: bits per LUT entry (third value of the LUT descriptor: 8 or 16).

    Returns:
        uint8 array of the same shape.
    """
    if lut_bits <= 8:
        return arr.clip(0, 255).astype(np.uint8)
    return (arr.astype(np.uint32) >> (lut_bits - 8)).clip(0, 255).astype(np.uint8)


def mono_to_uint8(arr: np.ndarray, header: object, monochrome1: bool) -> np.ndarray:
    """Map monochrome samples of any depth to uint8, bright meaning bright.

    8-bit unsigned samples pass through. Deeper samples use the dataset's first VOI window
    (WindowCenter/WindowWidth) when it has one, else the clip's own min..max, the same for
    every frame so brightness does not flicker. MONOCHROME1 is inverted.

    Args:
        arr: (T, H, W) integer or float samples.
        header: the ``pydicom.Dataset`` (for the VOI window and rescale).
        monochrome1: whether 0 means white.

    Returns:
        (T, H, W) uint8.
    """
    if arr.dtype == np.uint8:
        out = arr
    else:
        values = arr.astype(np.float32)
        lo, hi = _window(values, header)
        scale = 255.0 / max(hi - lo, 1e-6)
        out = np.clip((values - lo) * scale + 0.5, 0, 255).astype(np.uint8)
    return 255 - out if monochrome1 else out


def _window(values: np.ndarray, header: object) -> tuple[float, float]:
    get = getattr(header, "get", None)
    center = get("WindowCenter") if get else None
    width = get("WindowWidth") if get else None
    if center is not None and width is not None:
        c = float(center[0] if _is_multi(center) else center)
        w = float(width[0] if _is_multi(width) else width)
        slope = float(get("RescaleSlope", 1) or 1) if get else 1.0
        intercept = float(get("RescaleIntercept", 0) or 0) if get else 0.0
        if w > 0 and slope != 0:
            # the window is in rescaled units; map it back to stored values
            lo, hi = (c - w / 2 - intercept) / slope, (c + w / 2 - intercept) / slope
            return (min(lo, hi), max(lo, hi))
    return float(values.min(initial=0)), float(values.max(initial=0))


def _is_multi(value: object) -> bool:
    return isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"
