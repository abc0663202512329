"""A data site on disk: its keys, its encrypted objects and its catalog, opened as one.

Layout::

    SITE/
      site.json          format version, catalog URL without password (null: SQLite below)
      keys/      0700    keyring.json, kek-<id>.key (0600), pseudonym.key (0600),
                         catalog.password (0600, only for a password-protected catalog)
      objects/   0700    <id[:2]>/<id>: encrypted objects
      catalog.db         the default SQLite catalog

The catalog password, when there is one, comes from ``ECHOSCREEN_CATALOG_PASSWORD``
or else from ``keys/catalog.password``; it is never written into ``site.json``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy.engine import URL

from echoscreen.errors import StoreError
from echoscreen.store.catalog import Catalog, normalise_url
from echoscreen.store.keys import LocalKeyProvider, check_private, write_secret_file
from echoscreen.store.objects import ObjectStore, Progress, atomic_write

SITE_FORMAT = 1
PASSWORD_ENV = "ECHOSCREEN_CATALOG_PASSWORD"
_SECRET_BYTES = 32


@dataclass
class Rotation:
    """What :meth:`Site.rotate_key` did.

    Attributes:
        new_key_id: the KEK now active.
        rewrapped: objects whose data key was re-wrapped.
        retired: KEK ids deleted (no object used them any more).
        kept: old KEK ids kept because some object still names them.
    """

    new_key_id: str
    rewrapped: int
    retired: list[str]
    kept: list[str]


class Site:
    """Keys, object store and catalog of one data site.

    Use :meth:`init` to make a site and :meth:`open` to open one; close it (or use it
    as a context manager) to release catalog connections.
    """

    def __init__(
        self, path: Path, keys: LocalKeyProvider, pseudonym_secret: bytes, catalog: Catalog
    ) -> None:
        self.path = path
        self.keys = keys
        self.pseudonym_secret = pseudonym_secret
        id_key = hmac.new(pseudonym_secret, b"echoscreen/object-id/v1", hashlib.sha256).digest()
        self.objects = ObjectStore(path / "objects", keys, id_key)
        self.catalog = catalog

    @classmethod
    def init(cls, path: Path, catalog_url: str | None = None, *,
             pseudonym_secret: bytes | None = None) -> Site:  # fmt: skip
        """Create a new site at ``path`` (which must not exist or be an empty folder).

        Args:
            path: the site folder.
            catalog_url: ``postgresql://USER[:PASSWORD]@HOST/DB``; ``None`` for SQLite in
                the site. A password is moved to ``keys/catalog.password`` (0600).
            pseudonym_secret: the pseudonymisation secret; ``None`` (always, for real
                data) draws a random one. A given secret makes pseudonyms, and with them
                the patient split and each clip's augmentation, the same on every run:
                for the phantom demo only, since anyone who knows the secret can test
                guesses of identifiers against the pseudonyms.

        Raises:
            StoreError: ``path`` already holds something, or the given secret is shorter
                than 16 bytes.
            CatalogError: the catalog URL is bad or its server unreachable.
        """
        path = Path(path).absolute()
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise StoreError(f"{path} already exists and is not empty: choose a new site folder")
        if pseudonym_secret is not None and len(pseudonym_secret) < 16:
            raise StoreError("a pseudonym secret must be at least 16 bytes")
        url = normalise_url(catalog_url) if catalog_url else None
        created = not path.exists()
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            keys = LocalKeyProvider.create(path / "keys")
            secret = pseudonym_secret or os.urandom(_SECRET_BYTES)
            write_secret_file(path / "keys" / "pseudonym.key", secret)
            stored = None
            if url is None:
                (path / "catalog.db").touch(mode=0o600)
            if url is not None:
                if url.password:
                    write_secret_file(path / "keys" / "catalog.password", url.password.encode())
                bare = URL.create(url.drivername, url.username, None, url.host, url.port,
                                  url.database, url.query)  # fmt: skip
                stored = bare.render_as_string(hide_password=False)
            site = cls(path, keys, cls._secret(path), Catalog(cls._catalog_url(path, stored)))
            site.catalog.create_all()
            meta = {"format": SITE_FORMAT, "catalog": stored, "created_at": _now()}
            atomic_write(path / "site.json", json.dumps(meta, indent=2).encode())
        except BaseException:
            if created:
                shutil.rmtree(path, ignore_errors=True)
            else:
                for child in path.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            raise
        return site

    @classmethod
    def open(cls, path: Path) -> Site:
        """Open an existing site.

        Raises:
            StoreError: ``path`` is not a site, or its keys are missing or unsafe.
            CatalogError: the catalog is unreachable.
        """
        path = Path(path).absolute()
        meta_path = path / "site.json"
        if not meta_path.is_file():
            raise StoreError(
                f"{path} is not an echoscreen site: run `echoscreen site init {path}` first"
            )
        try:
            meta = json.loads(meta_path.read_text())
            fmt, stored = meta["format"], meta["catalog"]
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{meta_path} is malformed ({exc}); restore it from backup") from exc
        if fmt != SITE_FORMAT:
            raise StoreError(f"site format {fmt} is not supported by this echoscreen version")
        if stored is None and not (path / "catalog.db").is_file():
            raise StoreError(  # opening would make an empty catalog: every object orphaned
                f"{path / 'catalog.db'} is missing: restore it from backup (the stored objects "
                "are useless without it)"
            )
        keys = LocalKeyProvider(path / "keys")
        site = cls(path, keys, cls._secret(path), Catalog(cls._catalog_url(path, stored)))
        if not site.catalog.initialised():
            site.close()
            raise StoreError(  # create_all would make it an empty catalog, as above
                f"the catalog of {path} holds no echoscreen tables (emptied, "
                "truncated or replaced): restore it from backup (the stored objects are "
                "useless without it)"
            )
        site.catalog.create_all()
        return site

    def close(self) -> None:
        """Release the catalog's connections."""
        self.catalog.close()

    def __enter__(self) -> Site:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def verify(self, progress: Progress | None = None) -> list[tuple[str, str]]:
        """Check every object decrypts and authenticates, and every catalog reference resolves.

        Returns:
            ``(what, reason)`` for each failure; empty when the site is sound.
        """
        failures = self.objects.verify(progress)
        for clip_id, column, oid in self.catalog.object_refs():
            if not self.objects.exists(oid):
                failures.append((f"clip {clip_id} {column}", f"references missing object {oid}"))
        return failures

    def rotate_key(self, progress: Progress | None = None) -> Rotation:
        """Make a new KEK, re-wrap every data key under it, then retire unused old KEKs.

        Old KEKs are deleted only once no object header names them any more; an
        object that could not be re-wrapped (damaged) keeps its KEK alive, and so does an
        object the catalog references but the store lacks (its header, hence its KEK,
        is unknown: when it is restored from backup it still needs one of them).
        """
        old = [k for k in self.keys.key_ids() if k != self.keys.active_key_id]
        old.append(self.keys.active_key_id)
        new_id = self.keys.rotate()
        n = self.objects.rewrap(progress)
        in_use = self.objects.key_ids_in_use()
        stored = set(self.objects.ids())
        if any(oid not in stored for _, _, oid in self.catalog.object_refs()):
            in_use |= set(old)  # a missing object may name any of them
        retired, kept = [], []
        for key_id in old:
            if key_id in in_use:
                kept.append(key_id)
            else:
                self.keys.retire(key_id)
                retired.append(key_id)
        return Rotation(new_id, n, retired, kept)

    def summary(self) -> dict[str, Any]:
        """The catalog summary plus the number of stored objects and the active KEK id."""
        out = self.catalog.summary()
        out["objects"] = sum(1 for _ in self.objects.ids())
        out["active_key"] = self.keys.active_key_id
        return out

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _secret(path: Path) -> bytes:
        secret_path = path / "keys" / "pseudonym.key"
        if not secret_path.is_file():
            raise StoreError(f"{secret_path} is missing: restore SITE/keys from backup")
        check_private(secret_path)
        secret = secret_path.read_bytes()
        if len(secret) != _SECRET_BYTES:
            raise StoreError(f"{secret_path} is damaged: restore SITE/keys from backup")
        return secret

    @staticmethod
    def _catalog_url(path: Path, stored: str | None) -> str:
        if stored is None:
            return f"sqlite:///{path / 'catalog.db'}"
        url = normalise_url(stored)
        password = os.environ.get(PASSWORD_ENV)
        pw_file = path / "keys" / "catalog.password"
        if password is None and pw_file.is_file():
            check_private(pw_file)
            password = pw_file.read_text().strip()
        if password:
            url = url.set(password=password)
        return url.render_as_string(hide_password=False)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
