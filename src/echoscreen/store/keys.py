"""Key-encryption keys (KEKs) behind one narrow seam, :class:`KeyProvider`.

Every stored object is encrypted under its own random data key (DEK); the DEK is
stored next to the object only in *wrapped* form, encrypted by a key-encryption
key that the :class:`KeyProvider` holds. The default provider keeps its KEKs in
files under ``SITE/keys`` (directory ``0700``, files ``0600``); a hospital KMS or
HSM plugs in by implementing the same three members (see ``docs/store.md``).

:class:`LocalKeyProvider` wraps a DEK with AES-256-GCM under the active KEK and
binds the KEK id as associated data, so a wrapped key cannot be moved to another
KEK id unnoticed::

    wrapped = nonce (12 bytes) || AES-256-GCM(kek, nonce, dek, aad=b"echoscreen-kek/v1|" + key_id)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from echoscreen.errors import IntegrityError, StoreError

KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_KEK_BYTES = 32
_WRAP_AAD = b"echoscreen-kek/v1|"
_KEYRING = "keyring.json"


@runtime_checkable
class KeyProvider(Protocol):
    """Wraps and unwraps data keys under key-encryption keys it never hands out."""

    @property
    def active_key_id(self) -> str:
        """Id of the KEK that :meth:`wrap` uses now."""
        ...

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """Encrypt a data key under the active KEK.

        Args:
            data_key: the 32-byte data key.

        Returns:
            ``(key_id, wrapped)``: the KEK's id and the wrapped key bytes.
        """
        ...

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        """Decrypt a wrapped data key.

        Raises:
            StoreError: the provider does not hold ``key_id``.
            IntegrityError: ``wrapped`` does not authenticate under that KEK.
        """
        ...


def write_secret_file(path: Path, data: bytes) -> None:
    """Create ``path`` readable by the owner only (``0600``), refusing to overwrite.

    The file is fsynced before returning so a crash cannot leave a truncated key.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def check_private(path: Path, *, directory: bool = False) -> None:
    """Refuse key material that group or others may read.

    Raises:
        StoreError: ``path`` has group/other permission bits, with the ``chmod`` that fixes it.
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        want = "700" if directory else "600"
        raise StoreError(
            f"{path} is accessible by other users (mode {mode:o}); key material must be "
            f"owner-only: run `chmod {want} {path}`"
        )


class LocalKeyProvider:
    """KEKs kept as 32-byte files ``kek-<id>.key`` in an owner-only directory.

    ``keyring.json`` in the same directory names the active KEK. Older KEKs stay
    until :meth:`retire` removes them (after every object was re-wrapped).

    Args:
        key_dir: the directory holding the KEK files (``SITE/keys``).

    Raises:
        StoreError: the directory or a key file is missing or readable by others.
    """

    def __init__(self, key_dir: Path) -> None:
        self.key_dir = Path(key_dir)
        ring = self.key_dir / _KEYRING
        if not ring.is_file():
            raise StoreError(
                f"no key ring at {ring}: the site's keys are missing "
                "(restore SITE/keys from backup, or create a site with `echoscreen site init`)"
            )
        check_private(self.key_dir, directory=True)
        try:
            active = json.loads(ring.read_text())["active"]
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{ring} is malformed ({exc}); restore it from backup") from exc
        if not isinstance(active, str) or not KEY_ID_RE.match(active):
            raise StoreError(f"{ring} names an invalid active key id {active!r}")
        self._active = active
        self._cache: dict[str, AESGCM] = {}
        self._load(active)  # fail early if the active KEK is missing or unsafe

    @classmethod
    def create(cls, key_dir: Path) -> LocalKeyProvider:
        """Make ``key_dir`` (``0700``) with a first KEK and return its provider.

        Raises:
            StoreError: ``key_dir`` already holds a key ring.
        """
        key_dir = Path(key_dir)
        if (key_dir / _KEYRING).exists():
            raise StoreError(f"{key_dir} already holds keys; refusing to overwrite them")
        key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(key_dir, 0o700)
        key_id = cls._new_kek(key_dir)
        cls._write_ring(key_dir, key_id)
        return cls(key_dir)

    @property
    def active_key_id(self) -> str:
        """Id of the KEK new data keys are wrapped under."""
        return self._active

    def key_ids(self) -> list[str]:
        """Ids of every KEK file present, active one included (sorted)."""
        ids = (p.name[4:-4] for p in self.key_dir.glob("kek-*.key"))
        return sorted(i for i in ids if KEY_ID_RE.match(i))

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """Wrap a 32-byte data key under the active KEK (AES-256-GCM, key id bound)."""
        if len(data_key) != _KEK_BYTES:
            raise StoreError(f"data keys are {_KEK_BYTES} bytes, got {len(data_key)}")
        nonce = os.urandom(12)
        aad = _WRAP_AAD + self._active.encode()
        return self._active, nonce + self._load(self._active).encrypt(nonce, data_key, aad)

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        """Unwrap a data key wrapped by :meth:`wrap` under ``key_id``."""
        if not KEY_ID_RE.match(key_id):
            raise IntegrityError(f"malformed key id {key_id!r} in an object header")
        if len(wrapped) != 12 + _KEK_BYTES + 16:
            raise IntegrityError(f"wrapped data key has {len(wrapped)} bytes, expected 60")
        kek = self._load(key_id)
        try:
            return kek.decrypt(wrapped[:12], wrapped[12:], _WRAP_AAD + key_id.encode())
        except InvalidTag as exc:
            raise IntegrityError(
                f"wrapped data key does not authenticate under KEK {key_id}"
            ) from exc

    def rotate(self) -> str:
        """Create a new KEK and make it the active one; older KEKs stay until retired.

        Returns:
            the new KEK's id.
        """
        key_id = self._new_kek(self.key_dir)
        self._write_ring(self.key_dir, key_id)
        self._active = key_id
        return key_id

    def retire(self, key_id: str) -> None:
        """Delete a non-active KEK file (overwritten with zeros first).

        Only call this once no object is wrapped under ``key_id`` any more:
        objects still wrapped under it become unreadable.
        """
        if key_id == self._active:
            raise StoreError(f"KEK {key_id} is the active key; rotate before retiring it")
        path = self._path(key_id)
        if path.exists():
            with open(path, "r+b") as fh:
                fh.write(b"\0" * _KEK_BYTES)
                fh.flush()
                os.fsync(fh.fileno())
            path.unlink()
        self._cache.pop(key_id, None)

    # -- internals -------------------------------------------------------------------------

    def _path(self, key_id: str) -> Path:
        return self.key_dir / f"kek-{key_id}.key"

    def _load(self, key_id: str) -> AESGCM:
        cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        path = self._path(key_id)
        if not path.is_file():
            raise StoreError(
                f"key-encryption key {key_id} is not in {self.key_dir}: it was retired or lost "
                "(restore SITE/keys from backup)"
            )
        check_private(path)
        data = path.read_bytes()
        if len(data) != _KEK_BYTES:
            raise StoreError(f"{path} holds {len(data)} bytes, not a {_KEK_BYTES}-byte key")
        self._cache[key_id] = AESGCM(data)
        return self._cache[key_id]

    @staticmethod
    def _new_kek(key_dir: Path) -> str:
        key_id = secrets.token_hex(8)
        write_secret_file(key_dir / f"kek-{key_id}.key", secrets.token_bytes(_KEK_BYTES))
        return key_id

    @staticmethod
    def _write_ring(key_dir: Path, active: str) -> None:
        tmp = key_dir / f".{_KEYRING}.tmp"
        tmp.unlink(missing_ok=True)
        write_secret_file(tmp, json.dumps({"active": active}).encode())
        os.replace(tmp, key_dir / _KEYRING)
        fsync_dir(key_dir)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
