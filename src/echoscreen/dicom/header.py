"""Opening a DICOM source and checking its image header before any pixel is decoded."""

from __future__ import annotations

import copy
import io
import math
import warnings
from pathlib import Path
from typing import BinaryIO

import pydicom
import pydicom.config
from pydicom.dataset import Dataset
from pydicom.uid import UID

from echoscreen.errors import DicomDecodeError, NotDicomError

Source = str | Path | bytes | bytearray | BinaryIO | Dataset


def silence_value_warnings() -> None:
    """Stop pydicom from checking, aloud, each header value it reads (in this process).

    Its warning quotes the value: a UID with a leading-zero component or a birth date
    written 1985-03-12, as some scanners do, put that identifying value on stderr from
    ``screen`` and ``ingest``. echoscreen uses no verdict of those checks. Called once
    per process at its edge (the CLI's ``main``, ingest's worker processes).
    """
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

def load_dataset(source: Source) -> Dataset:
    """Parse ``source`` into a dataset, or raise :class:`NotDicomError` saying why."""
    if isinstance(source, Dataset):
        return _with_syntax(source)
    name = str(source) if isinstance(source, str | Path) else "input"
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise NotDicomError(f"{path}: no such file; check the path")
        try:
            data: bytes = path.read_bytes()
        except OSError as exc:
            raise NotDicomError(f"{path}: cannot be read ({exc.strerror})") from exc
    elif isinstance(source, bytes | bytearray):
        data = bytes(source)
    else:
        data = source.read()
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except Exception:
        forced = _read_forced(data)
        if forced is not None:
            return forced
        raise NotDicomError(
            f"{name} is not DICOM (no 'DICM' prefix and no parsable dataset); "
            "expected a DICOM Part 10 file"
        ) from None


def _with_syntax(ds: Dataset) -> Dataset:
    """A dataset given in memory without file meta (e.g. from a network peer) gets one.

    Native pixel data is taken as Implicit VR Little Endian (DICOM's default transfer
    syntax); encapsulated pixel data cannot be decoded without knowing its syntax.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return ds
    pixels = ds.get("PixelData")
    if isinstance(pixels, bytes) and pixels[:4] == b"\xfe\xff\x00\xe0":
        raise DicomDecodeError(
            "the dataset has encapsulated pixel data but no transfer syntax; set "
            "ds.file_meta.TransferSyntaxUID to the syntax it was received in"
        )
    from pydicom.dataset import FileMetaDataset

    out = copy.copy(ds)  # new attributes only; the elements stay shared
    out.file_meta = FileMetaDataset(meta) if meta is not None else FileMetaDataset()
    out.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2")
    return out


def _read_forced(data: bytes) -> Dataset | None:
    """Accept a dataset without the Part 10 preamble, if it looks like an image object."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            ok = "SOPClassUID" in ds or ("Rows" in ds and "PixelData" in ds)
    except Exception:
        return None
    if not ok:
        return None
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2")
    return ds


def check_image(ds: Dataset, *, max_frames: int, max_pixels: int) -> tuple[int, int, int, int]:
    """Validate the image header before decoding anything.

    Returns:
        (rows, columns, samples per pixel, number of frames).

    Raises:
        DicomDecodeError: with what is wrong and what to do.
    """
    # the SOP class only: these messages reach quarantine reasons and screening results,
    # which must hold no original UID (the instance UID identifies the image)
    what = f"{ds.get('SOPClassUID', 'object')!s}"
    if "PixelData" not in ds:
        raise DicomDecodeError(
            f"DICOM {what} has no pixel data (it is not an image, or the file is "
            "truncated); only image objects can be read"
        )
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        raw_n = ds.get("NumberOfFrames")
        n = 1 if raw_n in (None, "") else int(raw_n)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomDecodeError(f"DICOM {what} has a malformed image header ({exc})") from None
    if n <= 0:
        raise DicomDecodeError(f"DICOM {what} declares {n} frames; a cine needs at least one")
    if rows <= 0 or cols <= 0:
        raise DicomDecodeError(f"DICOM {what} declares an empty image ({rows} x {cols})")
    if spp not in (1, 3):
        raise DicomDecodeError(f"DICOM {what} has {spp} samples per pixel; expected 1 or 3")
    if n > max_frames:
        raise DicomDecodeError(
            f"DICOM {what} declares {n} frames, over the limit of {max_frames}; "
            "raise max_frames if this is genuine"
        )
    if rows * cols * n > max_pixels:
        raise DicomDecodeError(
            f"DICOM {what} declares {n} frames of {rows} x {cols} = {rows * cols * n:,} "
            f"pixels, over the limit of {max_pixels:,}; raise max_pixels if this is genuine"
        )
    return rows, cols, spp, n


def frame_rate(ds: Dataset) -> float | None:
    """Frames per second from FrameTime, FrameTimeVector, CineRate, RecommendedDisplayFrameRate.

    Returns:
        A positive finite rate, or None when the header gives none.
    """
    candidates: list[float] = []
    try:
        if ds.get("FrameTime") not in (None, ""):
            candidates.append(1000.0 / float(ds.FrameTime))
        vector = ds.get("FrameTimeVector")
        if vector is not None and len(vector) > 1:
            steps = [float(v) for v in list(vector)[1:]]
            candidates.append(1000.0 / (sum(steps) / len(steps)))
        for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
            if ds.get(keyword) not in (None, ""):
                candidates.append(float(ds.get(keyword)))
    except (TypeError, ValueError, ZeroDivisionError):
        pass
    return next((c for c in candidates if math.isfinite(c) and c > 0), None)
