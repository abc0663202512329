"""Reading ultrasound cine loops: ``read_cine`` and the :class:`Cine` it returns.

Two routes lead to the same uint8 frames:

* **JPEG baseline (fast)**: each encapsulated frame goes straight to libjpeg through
  ``cv2.imdecode``, which is about 15x faster than ``ds.pixel_array`` on real cine. It is
  taken only when libjpeg's own colour decision (JFIF / Adobe APP14 / component ids)
  matches what the DICOM header means, so colour is never tinted; see :mod:`.color`.
* **Everything else** (JPEG lossless, JPEG 2000, RLE, native RGB/YBR/palette/monochrome):
  pydicom's pixel handlers (with the pylibjpeg plugins) and pydicom's colour conversion.

Every failure surfaces as :class:`~echoscreen.errors.NotDicomError` or
:class:`~echoscreen.errors.DicomDecodeError` with a message saying what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID, JPEGBaseline8Bit

from echoscreen.dicom.color import lut_to_uint8, mono_to_uint8, parse_jpeg_header
from echoscreen.dicom.header import (
    MAX_FRAMES,
    MAX_PIXELS,
    Source,
    check_image,
    frame_rate,
    load_dataset,
)
from echoscreen.dicom.regions import UltrasoundRegion, main_region, parse_regions
from echoscreen.errors import DicomDecodeError

_COLOUR_PI = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420"}
_MONO_PI = {"MONOCHROME1", "MONOCHROME2"}


@dataclass
class Cine:
    """A decoded cine loop (or single image) and the header facts echoscreen needs.

    Attributes:
        frames: (T, H, W, C) uint8; C = 3 (RGB, after any YBR or palette conversion) for
            colour, C = 1 for MONOCHROME1/2 (MONOCHROME1 inverted so bright is bright).
        fps: frames per second from FrameTime, FrameTimeVector, CineRate or
            RecommendedDisplayFrameRate (in that order); None when the file gives none.
        regions: the Sequence of Ultrasound Regions, as stored.
        transfer_syntax: transfer syntax UID of the file.
        photometric: Photometric Interpretation as stored in the file.
        modality, sop_instance_uid, series_instance_uid, study_instance_uid: header values
            ("" when absent).
        header: the dataset without its PixelData.
        frame_index: (T,) int, the file's frame number of each row of ``frames``
            (``arange(T)`` unless ``read_cine`` was asked for some frames only).
        total_frames: number of frames in the file (>= T).
        scale: the frames are the file's pixels decoded at 1/scale (libjpeg's DCT scaling,
            ``read_cine(scale=...)``): ``ceil(Rows / scale) x ceil(Columns / scale)``.
            ``regions`` stay in the file's pixel coordinates.
    """

    frames: np.ndarray
    fps: float | None
    regions: tuple[UltrasoundRegion, ...]
    transfer_syntax: str
    photometric: str
    modality: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    header: Dataset
    frame_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    total_frames: int = 0
    scale: int = 1

    def __post_init__(self) -> None:
        if self.frame_index.size == 0 and self.frames.shape[0] > 0:
            self.frame_index = np.arange(self.frames.shape[0], dtype=np.int64)
        self.total_frames = max(self.total_frames, self.frames.shape[0])

    @property
    def n_frames(self) -> int:
        """Number of decoded frames (T)."""
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        """Rows (H) in pixels."""
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        """Columns (W) in pixels."""
        return int(self.frames.shape[2])

    @property
    def file_size(self) -> tuple[int, int]:
        """``(Rows, Columns)`` of the file's frames (larger than the frames when scale > 1)."""
        rows = int(self.header.get("Rows", 0) or 0) or self.height * self.scale
        cols = int(self.header.get("Columns", 0) or 0) or self.width * self.scale
        return rows, cols

    @property
    def pixel_spacing_mm(self) -> tuple[float, float] | None:
        """(dy, dx) in mm of one pixel of the main 2D tissue region, or None if unknown.

        None also when the region's bounds do not fit the image (the image was resized after
        the scanner wrote them, so the stored spacing no longer holds).
        """
        region = main_region(self.regions, *self.file_size)
        if region is None or region.delta_x_mm is None or region.delta_y_mm is None:
            return None
        return (region.delta_y_mm, region.delta_x_mm)


def read_cine(
    source: Source,
    *,
    max_frames: int = MAX_FRAMES,
    max_pixels: int = MAX_PIXELS,
    frame_indices: Sequence[int] | None = None,
    threads: int = 1,
    scale: int = 1,
) -> Cine:
    """Read and decode a DICOM cine loop or image.

    Args:
        source: a path, the file's bytes, a binary file object, or a parsed dataset.
        max_frames: refuse files declaring more frames than this.
        max_pixels: refuse files whose Rows x Columns x frames exceeds this.
        frame_indices: decode only these frames (file frame numbers, in the order given);
            None decodes all. ``Cine.frame_index`` records them.
        threads: JPEG-baseline frames decoded in parallel by this many threads (libjpeg
            releases the GIL). 1 by default: data loaders already run one clip per worker.
        scale: 1, 2, 4 or 8: decode JPEG-baseline frames at 1/scale of their size with
            libjpeg's DCT scaling (much less IDCT, colour conversion and memory). Other
            encodings ignore it and are decoded at full size; ``Cine.scale`` says which.

    Returns:
        The :class:`Cine`, frames (T, H, W, C) uint8.

    Raises:
        NotDicomError: the input is not DICOM.
        DicomDecodeError: it is DICOM but has no usable pixel data (none, zero frames,
            sizes beyond the limits, truncated, undecodable or unsupported encoding).
    """
    ds = load_dataset(source)
    rows, cols, spp, n = check_image(ds, max_frames=max_frames, max_pixels=max_pixels)
    indices = _indices(frame_indices, n)
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")))
    pi = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if scale not in (1, 2, 4, 8):
        raise DicomDecodeError(f"scale must be 1, 2, 4 or 8 (libjpeg's DCT scaling), not {scale}")
    frames = _fast_jpeg(ds, ts, pi, indices, n, (rows, cols, spp), (threads, scale))
    if frames is None:
        frames, scale = _generic(ds, pi, indices, n, (rows, cols, spp)), 1
    return Cine(
        frames=frames,
        fps=frame_rate(ds),
        regions=parse_regions(ds),
        transfer_syntax=str(ts),
        photometric=pi,
        modality=str(ds.get("Modality", "")),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        header=_without_pixels(ds),
        frame_index=np.asarray(indices, dtype=np.int64),
        total_frames=n,
        scale=scale,
    )


def _indices(frame_indices: Sequence[int] | None, n: int) -> list[int]:
    if frame_indices is None:
        return list(range(n))
    out = [int(i) for i in frame_indices]
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise DicomDecodeError(f"frame indices {bad[:5]} are outside 0..{n - 1}")
    return out


def _without_pixels(ds: Dataset) -> Dataset:
    header = Dataset({tag: elem for tag, elem in ds.items() if tag != 0x7FE00010})
    header.file_meta = ds.file_meta
    header.preamble = getattr(ds, "preamble", None)
    return header


def _fast_jpeg(
    ds: Dataset,
    ts: UID,
    pi: str,
    indices: list[int],
    n: int,
    shape: tuple[int, int, int],
    how: tuple[int, int] = (1, 1),
) -> np.ndarray | None:
    """Decode JPEG-baseline frames with libjpeg via OpenCV; None when this route does not apply.

    ``how`` = (threads, scale); the frames come out at 1/scale of their size.
    """
    if ts != JPEGBaseline8Bit or int(ds.get("BitsAllocated", 8)) != 8:
        return None
    import cv2
    from pydicom.encaps import generate_frames

    spp = shape[2]
    try:
        encoded = list(generate_frames(ds.PixelData, number_of_frames=n))
    except Exception as exc:
        raise DicomDecodeError(f"encapsulated pixel data is malformed ({exc})") from None
    if len(encoded) < n:
        raise DicomDecodeError(
            f"the header declares {n} frames but the pixel data holds {len(encoded)}; "
            "the file is truncated or its NumberOfFrames is wrong"
        )
    info = parse_jpeg_header(encoded[0])
    if info is None or info.precision != 8 or info.components != spp:
        return None
    if spp == 3 and info.libjpeg_transforms() != info.is_ybr(pi):
        return None  # libjpeg would (not) transform against the header's meaning
    threads, scale = how
    rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)
    flag = (cv2.IMREAD_GRAYSCALE if spp == 1 else rgb_flag or cv2.IMREAD_COLOR) | getattr(
        cv2, "IMREAD_IGNORE_ORIENTATION", 128
    )
    if scale > 1:  # IMREAD_REDUCED_GRAYSCALE_s is the DCT-scaling bit; colour bits stay
        flag |= {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}[scale]  # fmt: skip
        shape = (-(-shape[0] // scale), -(-shape[1] // scale), spp)
    return _imdecode_frames(encoded, indices, shape, (flag, rgb_flag is None), threads)


def _imdecode_frames(
    encoded: list[bytes],
    indices: list[int],
    shape: tuple[int, int, int],
    how: tuple[int, bool],
    threads: int,
) -> np.ndarray:
    """cv2.imdecode the chosen frames into (T, H, W, C); ``how`` = (flags, output is BGR)."""
    import cv2

    (rows, cols, spp), (flag, bgr) = shape, how
    out = np.empty((len(indices), rows, cols, spp), np.uint8)

    def decode_into(k: int) -> None:
        i = indices[k]
        img = cv2.imdecode(np.frombuffer(encoded[i], np.uint8), flag)
        if img is None or img.shape[:2] != (rows, cols):
            got = "nothing" if img is None else f"{img.shape[1]} x {img.shape[0]}"
            raise DicomDecodeError(
                f"frame {i} is not a decodable {cols} x {rows} JPEG (decoder gave {got}); "
                "the file is corrupt or truncated"
            )
        if spp == 3 and bgr:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        out[k] = img.reshape(rows, cols, spp)

    if threads > 1 and len(indices) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(decode_into, range(len(indices))))
    else:
        for k in range(len(indices)):
            decode_into(k)
    return out


def _generic(
    ds: Dataset, pi: str, indices: list[int], n: int, shape: tuple[int, int, int]
) -> np.ndarray:
    """Decode through pydicom's pixel handlers and convert to (T, H, W, C) uint8."""
    from pydicom.pixels import apply_color_lut, pixel_array

    rows, cols, spp = shape
    if pi not in _COLOUR_PI | _MONO_PI | {"PALETTE COLOR"}:
        raise DicomDecodeError(f"photometric interpretation {pi!r} is not supported")
    try:
        if indices == list(range(n)):
            arr = np.asarray(pixel_array(ds)).reshape(n, rows, cols, spp)
        else:
            arr = np.stack([pixel_array(ds, index=i) for i in indices]).reshape(
                len(indices), rows, cols, spp
            )
        if pi == "PALETTE COLOR":
            rgb = apply_color_lut(arr[..., 0], ds)
            return np.ascontiguousarray(lut_to_uint8(rgb, _lut_bits(ds, rgb)))
    except DicomDecodeError:
        raise
    except Exception as exc:
        raise DicomDecodeError(_decode_hint(ds, exc)) from None
    if spp == 1:
        return mono_to_uint8(arr[..., 0], ds, pi == "MONOCHROME1")[..., None]
    return _colour_to_uint8(arr, ds)


def _lut_bits(ds: Dataset, rgb: np.ndarray) -> int:
    descriptor = ds.get("RedPaletteColorLookupTableDescriptor")
    if descriptor is not None and len(descriptor) == 3:
        return int(descriptor[2])
    return 16 if rgb.dtype.itemsize > 1 else 8


def _colour_to_uint8(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    shift = max(int(ds.get("BitsStored", 8)) - 8, 0)
    return np.ascontiguousarray((arr.astype(np.uint32) >> shift).clip(0, 255).astype(np.uint8))


def _decode_hint(ds: Dataset, exc: Exception) -> str:
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    name = ts.name if ts else "unknown transfer syntax"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = " ".join(lines)[:300] if lines else type(exc).__name__
    return (
        f"pixel data ({name}) cannot be decoded: {detail}; the file may be truncated or "
        "corrupt, or its encoding unsupported (transcode it, e.g. with dcmtk's dcmdjpeg)"
    )
