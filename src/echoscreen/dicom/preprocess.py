"""From a decoded cine to a model-ready clip tensor: crop, square, resize, resample in time.

The output of :func:`preprocess` is a :class:`ClipTensor` whose ``pixels`` are
``(3, T, S, S)`` uint8 RGB, channels first, ``T = spec.frames`` and ``S = spec.size``.
Colour is kept: a regurgitant jet is only visible in the colour-Doppler overlay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import JPEGBaseline8Bit

from echoscreen.dicom.header import Source, check_image, frame_rate, load_dataset
from echoscreen.dicom.read import Cine, read_cine
from echoscreen.dicom.regions import parse_regions, union_box, usable_2d
from echoscreen.errors import PreprocessError

#: frame rate assumed when a file states none (typical of paediatric echo cine)
DEFAULT_FPS = 30.0


@dataclass(frozen=True)
class PreprocessSpec:
    """Shape of the clip tensor a model expects.

    Attributes:
        size: output side S in pixels (square frames).
        frames: output frame count T.
        fps: output frame rate; output frame k shows the cine at time k / fps seconds.
    """

    size: int = 112
    frames: int = 32
    fps: float = 30.0


@dataclass
class ClipTensor:
    """A preprocessed clip.

    Attributes:
        pixels: (3, T, S, S) uint8 RGB, channels first (monochrome is repeated into 3).
        spacing_mm: physical size of one output pixel in mm (square pixels), or None when
            the file gives no usable spacing.
        fps: frame rate of ``pixels`` (= spec.fps).
        source_frames: (T,) int64, the file frame number shown in each output frame.
    """

    pixels: np.ndarray
    spacing_mm: float | None
    fps: float
    source_frames: np.ndarray


def sample_indices(total_frames: int, source_fps: float | None, spec: PreprocessSpec) -> np.ndarray:
    """Source frame for each output frame: nearest in time from t = 0, looping the cine.

    Cine loops are cyclic (one or more heart beats), so a cine shorter than the output
    duration is played again from its start. When ``source_fps`` is None it is assumed to
    be :data:`DEFAULT_FPS` (30).

    Args:
        total_frames: frames in the cine (> 0).
        source_fps: the cine's frame rate, or None if unknown.
        spec: output frame count and rate.

    Returns:
        (spec.frames,) int64 indices into the cine.
    """
    if total_frames <= 0:
        raise PreprocessError("the cine has no frames; nothing to preprocess")
    if spec.frames <= 0 or spec.fps <= 0 or spec.size <= 0:
        raise PreprocessError(f"invalid spec {spec}; frames, fps and size must be positive")
    fps = source_fps if source_fps and source_fps > 0 else DEFAULT_FPS
    times = np.arange(spec.frames, dtype=np.float64) / spec.fps
    # nearest source frame; an exact tie goes to the earlier frame (the one on screen)
    return np.ceil(times * fps - 0.5 - 1e-9).astype(np.int64) % total_frames


def imaging_box(cine: Cine) -> tuple[int, int, int, int]:
    """Where the ultrasound image is: ``(x0, y0, x1, y1)`` in pixels, bounds inclusive.

    The union of the 2D regions of the Sequence of Ultrasound Regions when the file has
    usable ones (inside the image), else the sector detected from the pixels. The box is
    in the file's pixel coordinates, also for frames decoded at 1/``cine.scale``.
    """
    box = union_box(usable_2d(cine.regions, *cine.file_size))
    if box is not None:
        return box
    x0, y0, x1, y1 = detect_sector(cine.frames)
    s, (rows, cols) = cine.scale, cine.file_size
    return (x0 * s, y0 * s, min(x1 * s + s - 1, cols - 1), min(y1 * s + s - 1, rows - 1))


def detect_sector(frames: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box of the live image area, for files without ultrasound regions.

    Pixels that change over time (the beating heart, its speckle and colour) are live;
    burned-in text is static. With a single frame, or too little motion, non-black grey
    pixels stand in (B-mode is grey; banners and icons are usually coloured). The mask is
    closed (joins speckle) and opened (drops thin text and ECG lines); the largest
    connected component's bounding box is the sector.

    Args:
        frames: (T, H, W, C) uint8.

    Returns:
        (x0, y0, x1, y1), inclusive; the whole image when nothing is found.
    """
    t, h, w = frames.shape[:3]
    step = max(1, min(h, w) // 120)
    picks = np.unique(np.linspace(0, t - 1, num=min(t, 16)).round().astype(np.int64))
    small = np.ascontiguousarray(frames[picks, ::step, ::step])
    if small.shape[-1] == 3:
        gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in small])
    else:
        gray = small[..., 0]
    live = np.zeros(gray.shape[1:], bool)
    if len(picks) > 1:  # changes over time (even faint speckle in the dark flanks)
        live = gray.astype(np.float32).std(axis=0) > 2.0
    if live.mean() < 0.02:  # still image: grey (B-mode), non-black pixels; UI is coloured
        chroma = (small.max(axis=-1) - small.min(axis=-1)).max(axis=0)
        live = (gray.max(axis=0) > 10) & (chroma < 24)
    k = max(3, (min(gray.shape[1:]) // 40) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    mask = cv2.morphologyEx(live.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return (0, 0, w - 1, h - 1)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh = (int(v) for v in stats[best, :4])
    return (x * step, y * step, min(w - 1, (x + bw) * step - 1), min(h - 1, (y + bh) * step - 1))


def preprocess(
    cine: Cine, spec: PreprocessSpec = PreprocessSpec(), outputs: Sequence[int] | None = None
) -> ClipTensor:
    """Crop to the imaging box, pad to square, resize and resample in time.

    Only the source frames the output uses are cropped and resized (with
    ``cv2.INTER_AREA``), each once. The crop is padded with black to a square centred on
    it, so the geometry (angles, jet lengths) is kept. When the cine has no frame rate,
    30 frames/s is assumed.

    Args:
        cine: a decoded cine; it may hold only some frames (``read_cine(frame_indices=...)``)
            as long as those include every frame :func:`sample_indices` asks for.
        spec: output size, frame count and rate.
        outputs: make only these output frames (indices into ``range(spec.frames)``, in
            the order given); None makes all. Each is the same as in the whole clip.

    Returns:
        :class:`ClipTensor` with pixels (3, spec.frames, spec.size, spec.size) uint8
        (``len(outputs)`` frames instead of ``spec.frames`` when ``outputs`` is given).

    Raises:
        PreprocessError: the spec is invalid or a needed frame was not decoded.
    """
    wanted = _outputs(sample_indices(cine.total_frames, cine.fps, spec), outputs)
    uniq, inverse = np.unique(wanted, return_inverse=True)
    row_of = {int(f): k for k, f in enumerate(cine.frame_index)}
    missing = [int(f) for f in uniq if int(f) not in row_of]
    if missing:
        raise PreprocessError(
            f"frames {missing[:5]} are needed but were not decoded; read the cine with "
            "frame_indices=None or use load_clip()"
        )
    x0, y0, x1, y1 = imaging_box(cine)
    h, w, side, size = y1 - y0 + 1, x1 - x0 + 1, max(y1 - y0, x1 - x0) + 1, spec.size
    nw, nh = max(1, round(w * size / side)), max(1, round(h * size / side))
    ox, oy = (size - nw) // 2, (size - nh) // 2
    channels = cine.frames.shape[3]
    canvas = np.zeros((len(uniq), size, size, channels), np.uint8)
    resample = _resampler(cine.scale, (x0, y0, x1, y1), (nw, nh))
    for k, f in enumerate(uniq):
        small = resample(cine.frames[row_of[int(f)]])
        canvas[k, oy : oy + nh, ox : ox + nw] = small.reshape(nh, nw, channels)
    if channels == 1:
        canvas = np.repeat(canvas, 3, axis=3)
    pixels = np.ascontiguousarray(canvas[inverse.reshape(-1)].transpose(3, 0, 1, 2))
    return ClipTensor(
        pixels=pixels,
        spacing_mm=_output_spacing(cine, side, size),
        fps=float(spec.fps),
        source_frames=wanted,
    )


def _outputs(wanted: np.ndarray, outputs: Sequence[int] | None) -> np.ndarray:
    """``wanted`` restricted to the output frames ``outputs`` (all when None)."""
    if outputs is None:
        return wanted
    picked = np.asarray(outputs, dtype=np.int64).reshape(-1)
    if picked.size == 0 or picked.min() < 0 or picked.max() >= wanted.size:
        raise PreprocessError(f"output frames must be in 0..{wanted.size - 1} (spec.frames) "
                              "and at least one")  # fmt: skip
    return wanted[picked]


def _resampler(
    scale: int, box: tuple[int, int, int, int], out: tuple[int, int]
) -> Callable[[np.ndarray], np.ndarray]:
    """Frame ``(H', W', C)`` -> the box resized to ``out`` = (nw, nh); box in file pixels.

    At scale 1: crop and ``cv2.INTER_AREA``. At 1/s (DCT-scaled decode): the same output
    grid mapped exactly into the decoded frame (``warpAffine``, bilinear; what remains to
    shrink is less than 2x), read from the decoded pixels wholly inside the box, with the
    edge replicated, so the cleaning's zeroed border pixels do not darken the edge.
    """
    (x0, y0, x1, y1), (nw, nh), s = box, out, scale
    if s == 1:
        return lambda frame: cv2.resize(
            frame[y0 : y1 + 1, x0 : x1 + 1], (nw, nh), interpolation=cv2.INTER_AREA
        )
    ix0, iy0 = -(-x0 // s), -(-y0 // s)
    ix1, iy1 = max(ix0, (x1 + 1) // s - 1), max(iy0, (y1 + 1) // s - 1)
    w, h = x1 - x0 + 1, y1 - y0 + 1
    # output pixel centre u -> file x0 + (u + 0.5) w / nw -> decoded (that / s) - 0.5
    m = np.array([[w / (nw * s), 0.0, (x0 + 0.5 * w / nw) / s - 0.5 - ix0],
                  [0.0, h / (nh * s), (y0 + 0.5 * h / nh) / s - 0.5 - iy0]])  # fmt: skip
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return lambda frame: cv2.warpAffine(
        frame[iy0 : iy1 + 1, ix0 : ix1 + 1], m, (nw, nh), flags=flags,
        borderMode=cv2.BORDER_REPLICATE,
    )  # fmt: skip


def _output_spacing(cine: Cine, side: int, size: int) -> float | None:
    """mm per output pixel; ``side`` in the file's pixels."""
    spacing = cine.pixel_spacing_mm
    if spacing is None:
        return None
    dy, dx = spacing
    if abs(dy - dx) > 0.02 * max(dy, dx):
        return None  # anisotropic pixels: a square output pixel has no single size
    return dx * side / size


def load_clip(
    source: Source, spec: PreprocessSpec = PreprocessSpec(), *, scaled: bool = False
) -> ClipTensor:
    """Read a file and preprocess it, decoding only the frames the output uses.

    Equivalent to ``preprocess(read_cine(source), spec)`` but faster on long cines; with
    ``scaled``, decoded at reduced size as :func:`read_needed` does for model clips.
    (No pixel cleaning: model clips come from :func:`echoscreen.deid.model_clip`.)

    Raises:
        NotDicomError, DicomDecodeError: as :func:`read_cine`.
        PreprocessError: as :func:`preprocess`.
    """
    return preprocess(read_needed(load_dataset(source), spec, scaled=scaled), spec)


def decode_scale(ds: Dataset, spec: PreprocessSpec) -> int:
    """The DCT scaling (1, 2, 4 or 8) at which ``ds`` can be decoded for ``spec``.

    The largest factor that leaves the imaging box (the union of the usable 2D ultrasound
    regions) at least ``spec.size`` pixels on its longer side, so the final resize still
    shrinks. 1 when the file has no usable regions (the box then comes from the pixels)
    or is not JPEG baseline (:func:`read_cine` decodes other encodings at full size).
    """
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    box = union_box(usable_2d(parse_regions(ds), rows, cols))
    if box is None or str(ds.file_meta.get("TransferSyntaxUID", "")) != JPEGBaseline8Bit:
        return 1
    side = max(box[2] - box[0], box[3] - box[1]) + 1
    return next((s for s in (8, 4, 2) if side // s >= spec.size), 1)


def read_needed(
    ds: Dataset,
    spec: PreprocessSpec = PreprocessSpec(),
    *,
    scaled: bool = True,
    outputs: Sequence[int] | None = None,
) -> Cine:
    """Decode only the frames of ``ds`` that :func:`preprocess` with ``spec`` uses.

    The returned cine holds those frames (``(T', H', W', C)``, T' <= the file's frames).
    With ``scaled`` (the default, and the one reader that ingest, offline screening and
    the service use for model clips), JPEG-baseline frames are decoded at 1/``s`` of their
    size (:func:`decode_scale`), which is several times cheaper; the clip then differs
    slightly from a full-size decode (see docs/dicom.md). ``scaled=False`` decodes at full
    size and preprocesses to exactly the clip of the whole cine.

    ``outputs`` (as for :func:`preprocess`) narrows the decode to the source frames of
    those output frames when the file's ultrasound regions give the imaging box; without
    usable regions the box is detected from the pixels, so every frame of the whole clip
    is decoded and the box, hence each output frame, stays what it is in the whole clip.

    Raises:
        NotDicomError, DicomDecodeError: as :func:`read_cine`.
        PreprocessError: ``outputs`` outside ``range(spec.frames)``.
    """
    rows, cols, _, n = check_image(ds)
    wanted = sample_indices(n, frame_rate(ds), spec)
    if outputs is not None and union_box(usable_2d(parse_regions(ds), rows, cols)) is not None:
        wanted = _outputs(wanted, outputs)
    scale = decode_scale(ds, spec) if scaled else 1
    return read_cine(ds, frame_indices=np.unique(wanted).tolist(), scale=scale)
