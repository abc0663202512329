"""Content-addressed, encrypted object store on a local file system.

An object's id is ``HMAC-SHA256(id_key, plaintext)`` in hex: the same bytes get the
same id (so ``put`` is idempotent) but, unlike a plain SHA-256, the id does not let
anyone without the site's key test whether a known file is stored. Objects live at
``ROOT/<id[:2]>/<id>``; each is an envelope (:mod:`.crypto`) written atomically: a
temporary ``.tmp-*`` file in the same directory, fsynced, then ``os.replace``-d into
place, then the directory fsynced. A crash mid-put leaves at most a temporary file,
which readers ignore and :meth:`ObjectStore.clean_tmp` removes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from echoscreen.errors import IntegrityError, StoreError
from echoscreen.store.crypto import open_sealed, parse_header, rewrap, seal
from echoscreen.store.keys import KeyProvider, fsync_dir

OID_RE = re.compile(r"^[0-9a-f]{64}$")
TMP_PREFIX = ".tmp-"
#: called with (done, total) after each object; total is known up front
Progress = Callable[[int, int], None]


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either nothing or the whole file.

    A temporary file in the same directory is written and fsynced, then renamed over
    ``path`` with :func:`os.replace`, then the directory is fsynced.
    """
    tmp = path.parent / f"{TMP_PREFIX}{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class ObjectStore:
    """Encrypted objects addressed by a keyed hash of their plaintext.

    Args:
        root: directory of the objects (``SITE/objects``); created if missing.
        keys: wraps each object's data key.
        id_key: secret key of the object-id HMAC (32 bytes).
    """

    def __init__(self, root: Path, keys: KeyProvider, id_key: bytes) -> None:
        if len(id_key) < 16:
            raise StoreError("the object-id key must be at least 16 bytes")
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._root_str = str(self.root)
        self.keys = keys
        self._id_key = id_key
        self._local = threading.local()  # per-thread ciphertext buffer of read()

    def object_id(self, data: bytes) -> str:
        """The id ``data`` is stored under: ``HMAC-SHA256(id_key, data)`` as 64 hex digits."""
        return hmac.new(self._id_key, data, hashlib.sha256).hexdigest()

    def path(self, oid: str) -> Path:
        """File of object ``oid``.

        Raises:
            StoreError: ``oid`` is not 64 lower-case hex digits (no path tricks get through).
        """
        if not isinstance(oid, str) or not OID_RE.match(oid):
            raise StoreError(
                f"malformed object id {str(oid)[:80]!r}: ids are 64 lower-case hex digits"
            )
        return self.root / oid[:2] / oid

    def put(self, data: bytes) -> str:
        """Encrypt and store ``data``; storing the same bytes again is a no-op.

        Returns:
            the object id.
        """
        oid = self.object_id(data)
        path = self.path(oid)
        if path.exists():
            return oid
        path.parent.mkdir(mode=0o700, exist_ok=True)
        atomic_write(path, seal(data, oid, self.keys))
        return oid

    def get(self, oid: str, *, check_id: bool = False) -> bytes:
        """Decrypt and authenticate object ``oid``.

        AES-GCM authentication with the object id as associated data already proves
        the bytes are the ones written for ``oid``; ``check_id`` also recomputes the
        content id (one more HMAC pass over the plaintext), which :meth:`verify` does.

        Raises:
            StoreError: ``oid`` is malformed or not stored.
            IntegrityError: any byte of the object was altered.
        """
        data = bytes(self.read(oid))
        if check_id and not hmac.compare_digest(self.object_id(data), oid):
            raise IntegrityError(f"object {oid} decrypted to content with another id")
        return data

    def read(self, oid: str) -> memoryview:
        """Decrypt and authenticate object ``oid`` with no copy: the training read path.

        The file is read with one ``readinto`` into a buffer this thread reuses for
        every read (it holds ciphertext only), and the body is decrypted from there
        straight into a fresh plaintext buffer
        (:func:`~echoscreen.store.crypto.open_sealed`, GIL released), so clip reads in
        several loader threads run in parallel. Same checks and errors as :meth:`get`.

        Returns:
            a read-only view of the plaintext.
        """
        if not isinstance(oid, str) or not OID_RE.match(oid):
            self.path(oid)  # raises the malformed-id error
        path = os.path.join(self._root_str, oid[:2], oid)  # no pathlib: a read per clip
        try:
            with open(path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                buf = self._scratch(size)
                got = f.readinto(buf)
        except FileNotFoundError as exc:
            raise StoreError(f"no object {oid} in {self.root}") from exc
        if got != size:
            raise IntegrityError(f"object {oid} changed size while being read")
        return open_sealed(buf, oid, self.keys)

    def _scratch(self, size: int) -> memoryview:
        """This thread's ciphertext buffer, grown to at least ``size`` bytes; a view of
        exactly ``size``."""
        buf: bytearray | None = getattr(self._local, "buf", None)
        if buf is None or len(buf) < size:
            buf = bytearray(size)
            self._local.buf = buf
        return memoryview(buf)[:size]

    def exists(self, oid: str) -> bool:
        """Whether object ``oid`` is stored (``False`` for malformed ids)."""
        return bool(OID_RE.match(oid)) and (self.root / oid[:2] / oid).is_file()

    def ids(self) -> Iterator[str]:
        """Ids of every stored object (temporary files and strays are skipped), sorted."""
        for sub in sorted(self.root.iterdir()):
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for f in sorted(sub.iterdir()):
                if OID_RE.match(f.name) and f.name[:2] == sub.name and f.is_file():
                    yield f.name

    def delete(self, oid: str) -> None:
        """Remove object ``oid`` (no error when it is absent)."""
        self.path(oid).unlink(missing_ok=True)

    def strays(self) -> list[Path]:
        """Files under the root that are neither objects nor temporary files."""
        found = []
        for f in self.root.rglob("*"):
            if f.is_dir() or f.name.startswith(TMP_PREFIX):
                continue
            if not (OID_RE.match(f.name) and f.parent.name == f.name[:2]):
                found.append(f)
        return found

    def clean_tmp(self, older_than_s: float = 3600.0) -> int:
        """Delete temporary files left by interrupted puts.

        Args:
            older_than_s: only files not modified for this many seconds go, so a put
                running concurrently keeps its temporary file.

        Returns:
            how many files were removed.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        for f in self.root.glob(f"*/{TMP_PREFIX}*"):
            if f.stat().st_mtime < cutoff:
                f.unlink(missing_ok=True)
                removed += 1
        return removed

    def verify(self, progress: Progress | None = None) -> list[tuple[str, str]]:
        """Decrypt and check every object; also remove stale temporary files.

        Returns:
            ``(object id or path, reason)`` for every object that fails.
        """
        self.clean_tmp()
        failures = [(str(p.relative_to(self.root)), "stray file") for p in self.strays()]
        ids = list(self.ids())
        for i, oid in enumerate(ids, 1):
            try:
                self.get(oid, check_id=True)
            except StoreError as exc:
                failures.append((oid, str(exc)))
            if progress is not None:
                progress(i, len(ids))
        return failures

    def key_ids_in_use(self) -> set[str]:
        """KEK ids named by the headers of the stored objects (unparsable headers skipped)."""
        used = set()
        for oid in self.ids():
            with open(self.root / oid[:2] / oid, "rb") as fh:
                head = fh.read(512)
            try:
                used.add(parse_header(head + b"\0" * 64).key_id)
            except IntegrityError:
                continue
        return used

    def rewrap(self, progress: Progress | None = None) -> int:
        """Re-wrap every data key under the active KEK without re-encrypting any data.

        Only the small header of each object changes; the ciphertext bytes stay the
        same. Objects whose key cannot be unwrapped are left as they are (``verify``
        reports them).

        Returns:
            how many objects were re-wrapped.
        """
        ids = list(self.ids())
        done = 0
        for i, oid in enumerate(ids, 1):
            path = self.root / oid[:2] / oid
            try:
                new = rewrap(path.read_bytes(), self.keys)
            except StoreError:
                new = None
            if new is not None:
                atomic_write(path, new)
                done += 1
            if progress is not None:
                progress(i, len(ids))
        return done
