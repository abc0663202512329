"""The files of one study: a folder, a zip archive, or a single DICOM file.

Files are yielded one at a time as ``(name, bytes)``: ``name`` is the path relative to
the folder or inside the zip (the file's own name for a single file); nothing is
extracted or written anywhere.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from echoscreen.dicom.inspect import UNSAFE_MEMBER, is_litter, is_unsafe_member, walk_files
from echoscreen.errors import ScreenError

#: most files read from one study
MAX_FILES = 5000
#: most bytes (uncompressed) read from one study
MAX_BYTES = 8 << 30


def _check_total(n: int, total: int) -> None:
    if n > MAX_FILES or total > MAX_BYTES:
        raise ScreenError(f"the study holds more than {MAX_FILES} files or {MAX_BYTES >> 30} GiB; "
                          "is it one study? pass the folder of a single study")  # fmt: skip


def _zip_members(path: Path) -> Iterator[tuple[str, bytes]]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ScreenError(f"{path} is not a readable zip archive ({exc}); pass a folder, a zip "
                          "or a DICOM file") from exc  # fmt: skip
    with zf:
        unsafe = [i.filename for i in zf.infolist() if is_unsafe_member(i.filename)]
        if unsafe:  # as ingest and the service: not read by another name, nor dropped
            raise ScreenError(f"{path} holds a member {unsafe[0]!r} {UNSAFE_MEMBER}")
        members = [i for i in zf.infolist() if not i.is_dir() and not is_litter(i.filename)]
        _check_total(len(members), sum(i.file_size for i in members))
        for info in sorted(members, key=lambda i: i.filename):
            try:
                data = zf.read(info)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise ScreenError(f"{path} is damaged: member {info.filename!r} cannot be read "
                                  f"({exc}); re-create the zip, or pass the study folder"
                                  ) from exc  # fmt: skip
            yield info.filename, data


def iter_study(path: Path) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, bytes)`` for every file of the study at ``path``.

    Args:
        path: a folder (searched recursively, skipping litter:
            :func:`~echoscreen.dicom.inspect.is_litter`), a ``.zip`` archive, or one file.

    Raises:
        ScreenError: the path does not exist, is not a folder or regular file, is an
            unreadable or damaged zip or one with a member named as an unsafe path
            (:func:`~echoscreen.dicom.inspect.is_unsafe_member`), is too large, or holds a
            folder that cannot be listed.
    """
    path = Path(path)
    if not path.exists():
        raise ScreenError(f"{path} does not exist; pass a study folder, a zip of one, or a file")
    if path.is_dir():
        try:
            files = [(rel, p) for rel, p in walk_files(path) if p.is_file()]
        except OSError as exc:
            raise ScreenError(f"cannot list folder {exc.filename} ({exc.strerror}) of the "
                              "study; fix its permissions: a study is not screened in "
                              "part") from exc  # fmt: skip
        _check_total(len(files), sum(p.stat().st_size for _, p in files))
        for rel, p in files:
            yield rel, p.read_bytes()
    elif not path.is_file():  # a pipe or a device: opening or reading it would not end
        raise ScreenError(f"{path} is not a folder or a regular file; pass a study folder, a "
                          "zip of one, or a DICOM file")  # fmt: skip
    elif zipfile.is_zipfile(path):
        yield from _zip_members(path)
    else:
        _check_total(1, path.stat().st_size)
        yield path.name, path.read_bytes()
