"""Sources on local files: a folder tree and a zip archive.

Both first index the headers of every file (StudyInstanceUID only, pixel data
never read), then read one study's files at a time, so memory holds one study.
File names do not matter: DICOM files with or without ``.dcm`` are found, and a
DICOMDIR, hidden files and known side files (a cohort's CSVs and masks) are skipped.

A zip comes from outside, so it is checked before anything is read: the number
of members and their total uncompressed size are bounded (zip bombs), member
names must be relative paths without ``..`` (the archive is never extracted,
but a hostile name is refused anyway), and each member is read through
:mod:`zipfile`, which stops at the declared size and checks the CRC.
"""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from echoscreen.dicom.inspect import (
    UNSAFE_MEMBER,
    is_litter,
    is_side_file,
    is_unsafe_member,
    walk_files,
)
from echoscreen.errors import IngestError
from echoscreen.ingest.base import (
    HOUSEKEEPING_NAMES,
    HeaderInfo,
    Instance,
    StudyBatch,
    chunked_unreadable,
    read_header,
)

#: quarantine reason of a pipe, device or socket in a folder (never opened)
NOT_REGULAR = "not a regular file (a pipe, device or socket); not read"
DEFAULT_MAX_MEMBERS = 100_000
DEFAULT_MAX_TOTAL_BYTES = 64 * 1024**3
#: a member over 1 MiB compressing better than this is refused as a bomb (real clips stay
#: far below; deflate itself cannot exceed ~1032:1, so this catches zero-filled payloads)
MAX_MEMBER_RATIO = 500


@dataclass
class _Index:
    """Files grouped by study: names only, data is read when the study is yielded."""

    studies: dict[str, list[str]] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, info: HeaderInfo) -> None:
        if info.skip:
            return
        if info.study_uid is None:
            self.unreadable.append((name, info.reason))
        else:
            self.studies.setdefault(info.study_uid, []).append(name)

    def batches(self) -> int:
        chunks = -(-len(self.unreadable) // 64)
        return len(self.studies) + chunks


class FolderSource:
    """Every file under a folder (recursively), grouped by study.

    Args:
        root: the folder (a single file is accepted too).

    Raises:
        IngestError: when ``root`` does not exist.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise IngestError(f"folder {self.root} does not exist; check the path")
        self._index: _Index | None = None

    def describe(self) -> str:
        return f"folder {self.root}"

    def _files(self) -> Iterator[Path]:
        if self.root.is_file():
            yield self.root
            return
        try:
            for _, path in walk_files(self.root):
                if path.name not in HOUSEKEEPING_NAMES and not is_side_file(path.name):
                    yield path
        except OSError as exc:  # before anything is stored: the index is read first
            raise IngestError(f"cannot list folder {exc.filename} ({exc.strerror}); fix its "
                              "permissions and ingest again: the walk skips no folder "
                              "silently") from exc  # fmt: skip

    def _origin(self, path: Path) -> str:
        if self.root.is_file():
            return path.name
        return path.relative_to(self.root).as_posix()

    def index(self) -> _Index:
        """Read the header of every file once (cached)."""
        if self._index is None:
            index = _Index()
            for path in self._files():
                try:
                    if not _regular(path):
                        info = HeaderInfo(None, reason=NOT_REGULAR)
                    else:
                        with path.open("rb") as fp:
                            info = read_header(fp)
                except OSError as exc:
                    info = HeaderInfo(None, reason=f"file cannot be read ({type(exc).__name__})")
                index.add(self._origin(path), info)
            self._index = index
        return self._index

    def count_hint(self) -> int | None:
        return self.index().batches()

    def _read(self, origin: str) -> Instance:
        path = self.root if self.root.is_file() else self.root / origin
        return Instance(path.read_bytes() if _regular(path) else b"", origin)

    def studies(self) -> Iterator[StudyBatch]:
        index = self.index()
        for uid, names in index.studies.items():
            batch = StudyBatch(uid)
            for name in names:
                try:
                    batch.instances.append(self._read(name))
                except OSError as exc:
                    reason = f"file cannot be read ({type(exc).__name__})"
                    batch.unreadable.append((Instance(b"", name), reason))
            yield batch
        bad = []
        for name, reason in index.unreadable:
            try:
                inst = self._read(name)
            except OSError:
                inst = Instance(b"", name)
            bad.append((inst, reason))
        yield from chunked_unreadable(bad)


def _regular(path: Path) -> bool:
    """Whether ``path`` (followed if a link) is a regular file: a pipe would block the walk
    when opened, a device like /dev/zero would never end."""
    return stat.S_ISREG(path.stat().st_mode)


class ZipSource:
    """The DICOM files inside a zip archive, grouped by study; nothing is extracted.

    Args:
        path: the ``.zip`` file.
        max_members: refuse archives with more entries than this.
        max_total_bytes: refuse archives whose members add up to more than this
            many uncompressed bytes.

    Raises:
        IngestError: the file is missing or not a zip, or the archive breaks a
            limit (too many members, too large, a bomb-like ratio, unsafe names).
    """

    def __init__(
        self,
        path: Path,
        *,
        max_members: int = DEFAULT_MAX_MEMBERS,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    ) -> None:
        self.path = Path(path)
        self.max_members = max_members
        self.max_total_bytes = max_total_bytes
        self._members = self._check()
        self._index: _Index | None = None

    def describe(self) -> str:
        return f"zip {self.path}"

    def _open(self) -> zipfile.ZipFile:
        if not self.path.is_file():
            raise IngestError(f"zip archive {self.path} does not exist; check the path")
        try:
            return zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise IngestError(
                f"{self.path} is not a readable zip archive ({exc}); re-create it, "
                "or unpack it and ingest the folder"
            ) from exc

    def _check(self) -> list[zipfile.ZipInfo]:
        """Validate the central directory; return the file members worth reading."""
        with self._open() as zf:
            infos = zf.infolist()
        if len(infos) > self.max_members:
            raise IngestError(
                f"{self.path} has {len(infos)} members, more than the limit of "
                f"{self.max_members}; split the archive or raise max_members"
            )
        total = sum(info.file_size for info in infos)
        if total > self.max_total_bytes:
            raise IngestError(
                f"{self.path} would unpack to {total} bytes, more than the limit of "
                f"{self.max_total_bytes} (a zip bomb?); split the archive or raise the limit"
            )
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise IngestError(
                f"{self.path} lists the same member name twice (a tampered archive?); "
                "re-create the archive"
            )
        for info in infos:
            if is_unsafe_member(info.filename):
                raise IngestError(
                    f"{self.path} contains a member {info.filename!r} {UNSAFE_MEMBER}"
                )
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > 1024**2 and ratio > MAX_MEMBER_RATIO:
                raise IngestError(
                    f"{self.path} member {info.filename!r} expands {ratio:.0f}x "
                    "(a zip bomb?); refusing the archive"
                )
        return [info for info in infos if self._wanted(info)]

    @staticmethod
    def _wanted(info: zipfile.ZipInfo) -> bool:
        if info.is_dir() or is_litter(info.filename):
            return False
        if stat.S_ISLNK(info.external_attr >> 16):
            return False
        name = PurePosixPath(info.filename).name
        return name not in HOUSEKEEPING_NAMES and not is_side_file(name)

    def index(self) -> _Index:
        """Read the header of every member once (cached)."""
        if self._index is None:
            index = _Index()
            with self._open() as zf:
                for info in self._members:
                    index.add(info.filename, self._header(zf, info))
            self._index = index
        return self._index

    @staticmethod
    def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> HeaderInfo:
        if info.flag_bits & 0x1:
            return HeaderInfo(None, reason="encrypted zip member")
        try:
            with zf.open(info) as fp:
                return read_header(fp)  # type: ignore[arg-type]
        except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError) as exc:
            return HeaderInfo(None, reason=f"zip member cannot be read ({type(exc).__name__})")

    def count_hint(self) -> int | None:
        return self.index().batches()

    @staticmethod
    def _read(zf: zipfile.ZipFile, name: str) -> tuple[Instance, str]:
        try:
            return Instance(zf.read(name), name), ""
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError) as exc:
            return Instance(b"", name), f"zip member cannot be read ({type(exc).__name__})"

    def studies(self) -> Iterator[StudyBatch]:
        index = self.index()
        with self._open() as zf:
            for uid, names in index.studies.items():
                batch = StudyBatch(uid)
                for name in names:
                    inst, problem = self._read(zf, name)
                    if problem:
                        batch.unreadable.append((inst, problem))
                    else:
                        batch.instances.append(inst)
                yield batch
            bad = []
            for name, reason in index.unreadable:
                inst, _ = self._read(zf, name)
                bad.append((inst, reason))
        yield from chunked_unreadable(bad)
