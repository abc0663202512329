"""Opening a DICOM source and checking its image header before any pixel is decoded."""

from __future__ import annotations

import copy
import io
import math
import struct
import warnings
from pathlib import Path
from typing import BinaryIO, NamedTuple

import pydicom
import pydicom.config
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from echoscreen.errors import DicomDecodeError, NotDicomError

Source = str | Path | bytes | bytearray | BinaryIO | Dataset
#: the readers' default bounds on frames and Rows x Columns x frames (``check_image``)
MAX_FRAMES = 10_000
MAX_PIXELS = 2_000_000_000
#: the Pixel Data tag (7FE0,0010) as little- and big-endian bytes
_PIXEL_TAG = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")
_UNDEFINED = 0xFFFFFFFF


class Header(NamedTuple):
    """A file's dataset read up to its pixel data (:func:`read_header`).

    Attributes:
        dataset: every element before the pixel data (the pixel data is not read).
        has_pixels: whether a Pixel Data element follows them.
    """

    dataset: Dataset
    has_pixels: bool


def silence_value_warnings() -> None:
    """Stop pydicom from checking, aloud, each header value it reads (in this process).

    Its warning quotes the value: a UID with a leading-zero component or a birth date
    written 1985-03-12, as some scanners do, put that identifying value on stderr from
    ``screen`` and ``ingest``. echoscreen uses no verdict of those checks. Called once
    per process at its edge (the CLI's ``main``, ingest's worker processes).
    """
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


def load_dataset(source: Source) -> Dataset:
    """Parse ``source`` into a dataset.

    Raises:
        NotDicomError: it is not DICOM (saying why).
        DicomDecodeError: it is DICOM, but truncated before or inside its pixel data.
    """
    if isinstance(source, Dataset):
        return _with_syntax(source)
    name = str(source) if isinstance(source, str | Path) else "the file"
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
    ds, _ = _parse(data, name, header_only=False)
    if "PixelData" not in ds and read_header(data, name).has_pixels:
        # the header ends at a Pixel Data element the whole read could not complete
        raise DicomDecodeError(f"{name} is truncated: it ends inside its pixel data; "
                               f"{_RESEND}")  # fmt: skip
    return ds


_RESEND = "copy or send the whole file again"


def read_header(data: bytes, name: str = "the file") -> Header:
    """The dataset of a DICOM file's bytes up to its pixel data, which is not read.

    Cheap whatever the size of the cine; for checks made before anything is decoded
    (the screening service's door).

    Args:
        data: the file's bytes.
        name: how messages name the file.

    Raises:
        NotDicomError: it is not DICOM.
        DicomDecodeError: it is truncated inside its header (pydicom reads a cut file
            without complaint, as if its header simply ended there).
    """
    ds, at = _parse(data, name, header_only=True)
    if _cut_short(ds, data, at):
        raise DicomDecodeError(f"{name} is truncated: it ends inside its DICOM header, before "
                               f"any pixel data; {_RESEND}")  # fmt: skip
    return Header(ds, data[at : at + 4] in _PIXEL_TAG)


def _parse(data: bytes, name: str, *, header_only: bool) -> tuple[Dataset, int]:
    """``data``'s dataset (up to the pixel data with ``header_only``) and where the read
    stopped: at the Pixel Data element's tag, or at the end of ``data``."""
    fp = io.BytesIO(data)
    try:
        return pydicom.dcmread(fp, stop_before_pixels=header_only), fp.tell()
    except Exception:
        pass
    forced = _read_forced(data, header_only)
    if forced is not None:
        return forced
    if data[128:132] == b"DICM":  # a Part 10 file whose header pydicom could not finish
        raise DicomDecodeError(f"{name} starts as a DICOM file does, but its header cannot be "
                               f"parsed: it is truncated or damaged; {_RESEND}")  # fmt: skip
    raise NotDicomError(
        f"{name} is not DICOM (no 'DICM' prefix and no parsable dataset); "
        "expected a DICOM Part 10 file"
    )


def _cut_short(ds: Dataset, data: bytes, at: int) -> bool:
    """Whether ``data``, which a read without pixels made into ``ds`` stopping at ``at``,
    ends inside the header: the read ran to the end of the bytes and its last element
    does not end exactly there (its value is cut, or a piece of the next element's tag
    and length is left over), or nothing followed the file meta."""
    if at < len(data):  # it stopped before pixel data: the header is whole
        return False
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return False  # offsets are into the inflated stream, not into the bytes
    elements = list(ds.elements())  # raw elements stay raw: value_tell and length
    if not elements:
        return True
    last = max(elements, key=lambda e: int(getattr(e, "value_tell", None)
                                            or getattr(e, "file_tell", None) or 0))  # fmt: skip
    end = _end(last, data, ds)
    return end is not None and end != len(data)


def _end(elem: RawDataElement | DataElement, data: bytes, ds: Dataset) -> int | None:
    """Where a top-level element read from ``data`` ends; None when not known (an
    undefined length: a sequence read whole)."""
    if isinstance(elem, RawDataElement):
        return None if elem.length == _UNDEFINED else int(elem.value_tell + elem.length)
    at, (implicit, little) = elem.file_tell, ds.original_encoding
    if elem.is_undefined_length or at is None or implicit is None:
        return None
    # converted while read (Specific Character Set): its length field precedes its value
    fmt = ("<" if little else ">") + ("I" if implicit or elem.VR in EXPLICIT_VR_LENGTH_32 else "H")
    if at < struct.calcsize(fmt):
        return None
    (length,) = struct.unpack_from(fmt, data, at - struct.calcsize(fmt))
    return int(at + length)


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


def _read_forced(data: bytes, header_only: bool) -> tuple[Dataset, int] | None:
    """Accept a dataset without the Part 10 preamble, if it looks like an image object
    (and where its read stopped, as :func:`_parse`)."""
    fp = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(fp, force=True, stop_before_pixels=header_only)
            ok = "SOPClassUID" in ds or ("Rows" in ds and (header_only or "PixelData" in ds))
    except Exception:
        return None
    if not ok:
        return None
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2")
    return ds, fp.tell()


def check_image(
    ds: Dataset,
    *,
    max_frames: int = MAX_FRAMES,
    max_pixels: int = MAX_PIXELS,
    pixels: bool | None = None,
) -> tuple[int, int, int, int]:
    """Validate the image header before decoding anything.

    Args:
        ds: the dataset (with its pixel data, or a :func:`read_header` one).
        max_frames, max_pixels: bounds on NumberOfFrames and Rows x Columns x frames.
        pixels: whether the file holds pixel data (None: whether ``ds`` has it; a header
            read without its pixels passes :attr:`Header.has_pixels`).

    Returns:
        (rows, columns, samples per pixel, number of frames).

    Raises:
        DicomDecodeError: with what is wrong and what to do.
    """
    # the SOP class only: these messages reach quarantine reasons and screening results,
    # which must hold no original UID (the instance UID identifies the image)
    what = f"{ds.get('SOPClassUID', 'object')!s}"
    if not ("PixelData" in ds if pixels is None else pixels):
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
