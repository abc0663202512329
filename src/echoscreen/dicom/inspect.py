"""``echoscreen inspect``: one row per file saying what it is and whether it decodes."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath

from pydicom.uid import UID

from echoscreen.dicom.read import read_cine
from echoscreen.errors import EchoscreenError

#: suffixes skipped when walking folders (side files of a cohort, never DICOM)
#: files that sit beside DICOM in a folder (a cohort's CSVs and masks, reports) and are not read
SIDE_FILE_SUFFIXES = frozenset(
    {".csv", ".json", ".md", ".npz", ".npy", ".png", ".jpg", ".html", ".log"}
)


def is_side_file(name: str) -> bool:
    """True for a hidden file or a known side file (:data:`SIDE_FILE_SUFFIXES`), by name."""
    return name.startswith(".") or PurePath(name).suffix.lower() in SIDE_FILE_SUFFIXES


def is_litter(name: str) -> bool:
    """Whether a file's relative path (``/``-separated) is folder litter, never part of a
    study: dot files and folders, and macOS resource forks (``__MACOSX/``). One rule for
    every folder and zip walk: ingest, offline screening and the service's uploads."""
    parts = [p for p in name.split("/") if p]
    return bool(parts) and (parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts))


#: what ingest, offline screening and the service say of a zip member :func:`is_unsafe_member`
UNSAFE_MEMBER = ("named with an unsafe path (absolute, or with '..' or a backslash); the whole "
                 "zip is refused: zip the study folder again, with relative names")  # fmt: skip


def is_unsafe_member(name: str) -> bool:
    """Whether a zip member's name is a path that would leave an extraction folder: absolute
    (``/x``, ``C:x``), with a ``..`` part, a backslash or a NUL. One rule for every zip
    echoscreen reads (ingest, offline screening, the service's uploads), each of which
    refuses the whole archive rather than read such a member by another name or drop it.
    """
    if "\x00" in name or name.startswith(("/", "\\")) or "\\" in name:
        return True
    if len(name) > 1 and name[1] == ":":  # C:evil or C:\evil
        return True
    return any(part == ".." for part in PurePosixPath(name).parts)


def _raise(exc: OSError) -> None:
    raise exc


def walk_files(root: Path, unreadable: list[OSError] | None = None
               ) -> Iterator[tuple[str, Path]]:  # fmt: skip
    """``(relative path, path)`` of every file under the folder ``root`` that is not litter
    (:func:`is_litter`), in sorted order; symlinked folders are not entered.

    Args:
        root: the folder.
        unreadable: when given, a folder that cannot be listed is appended here (its
            path in ``filename``) and the walk goes on without it; when None, it raises.

    Raises:
        OSError: a folder cannot be listed (no permission, ...), named in ``filename``:
            a walk never leaves part of a study out silently.
    """
    onerror = _raise if unreadable is None else unreadable.append
    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        rel = Path(dirpath).relative_to(root).as_posix()
        at = "" if rel == "." else f"{rel}/"
        dirnames[:] = sorted(d for d in dirnames if not is_litter(at + d))
        for name in sorted(filenames):
            if not is_litter(at + name):
                yield at + name, Path(dirpath) / name


@dataclass
class InspectRow:
    """What ``inspect`` learnt about one file.

    Attributes:
        path: the file.
        modality: Modality ("" when unknown).
        frames: number of frames (0 when unknown).
        rows, cols: image size in pixels (0 when unknown).
        fps: frame rate, or None.
        transfer_syntax: the transfer syntax's name ("" when unknown).
        photometric: Photometric Interpretation as stored.
        n_regions: items in the Sequence of Ultrasound Regions.
        ok: whether every frame decoded.
        error: why not, when ``ok`` is False.
    """

    path: Path
    modality: str = ""
    frames: int = 0
    rows: int = 0
    cols: int = 0
    fps: float | None = None
    transfer_syntax: str = ""
    photometric: str = ""
    n_regions: int = 0
    ok: bool = False
    error: str | None = None


def inspect_file(path: Path) -> InspectRow:
    """Read and fully decode one file; never raises for bad files.

    Args:
        path: a file path.

    Returns:
        The row, ``ok=False`` and ``error`` set when the file is not a usable DICOM image.
    """
    row = InspectRow(path=Path(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cine = read_cine(path)
    except EchoscreenError as exc:
        row.error = str(exc)
        return row
    except Exception as exc:  # a bug, but inspect must report it rather than crash
        row.error = f"unexpected {type(exc).__name__}: {exc}"
        return row
    row.modality = cine.modality
    row.frames, row.rows, row.cols = cine.n_frames, cine.height, cine.width
    row.fps = cine.fps
    row.transfer_syntax = UID(cine.transfer_syntax).name
    row.photometric = cine.photometric
    row.n_regions = len(cine.regions)
    row.ok = True
    return row


def iter_files(paths: Iterable[Path], unreadable: list[OSError] | None = None
               ) -> Iterator[Path]:  # fmt: skip
    """Files named, and files under folders named (recursively, sorted).

    In folders, hidden files and folders, ``__MACOSX`` and side files
    (:data:`SIDE_FILE_SUFFIXES`, e.g. a cohort's ``labels.csv``) are skipped. A named path
    is always yielded, even if it does not exist, so that ``inspect`` reports it.

    Args:
        paths: files and folders.
        unreadable: when given, folders that cannot be listed are appended here (as
            :func:`walk_files` says) and skipped; when None, the first one raises.

    Raises:
        OSError: a folder cannot be listed and ``unreadable`` is None.
    """
    for path in paths:
        if path.is_dir():
            found = [child for rel, child in walk_files(path, unreadable)
                     if not any(is_side_file(part) for part in rel.split("/"))]  # fmt: skip
            yield from sorted(child for child in found if child.is_file())
        else:
            yield path


def short_syntax_name(name: str) -> str:
    """A transfer syntax name without its parenthesised details, for narrow tables.

    ``"JPEG Baseline (Process 1)"`` -> ``"JPEG Baseline"``; ``"JPEG Lossless,
    Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])"`` ->
    ``"JPEG Lossless SV1"``.
    """
    if name.startswith("JPEG Lossless, Non-Hierarchical, First-Order"):
        return "JPEG Lossless SV1"
    head = name.split(" (")[0]
    return head.replace("Image Compression", "").replace("Little Endian", "LE").strip()
