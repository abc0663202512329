"""The MANIFEST of a model package: the SHA-256 of every file, checked on every load.

Format: one line per file, ``<sha256 hex>  <relative path>`` (the ``sha256sum`` format,
so ``cd PACKAGE && sha256sum -c MANIFEST`` checks a package without echoscreen), paths
with ``/`` separators, sorted. The MANIFEST does not list itself.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from echoscreen.errors import RegistryError

MANIFEST = "MANIFEST"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def package_files(root: Path) -> list[str]:
    """Relative paths (``/``-separated, sorted) of every file under ``root`` but the MANIFEST."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.relative_to(root).as_posix() != MANIFEST)  # fmt: skip


def write_manifest(root: Path) -> dict[str, str]:
    """Hash every file under ``root`` and write ``root/MANIFEST``.

    Returns:
        relative path -> hex SHA-256.
    """
    sums = {rel: sha256_file(root / rel) for rel in package_files(root)}
    (root / MANIFEST).write_text("".join(f"{h}  {rel}\n" for rel, h in sums.items()))
    return sums


def read_manifest(root: Path) -> dict[str, str]:
    """Parse ``root/MANIFEST``.

    Raises:
        RegistryError: missing or malformed.
    """
    path = root / MANIFEST
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise RegistryError(f"{root} has no {MANIFEST}: not a complete package; publish it again "
                            "under a new version") from exc  # fmt: skip
    except UnicodeDecodeError:
        raise _malformed(path, "is not text") from None
    sums: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or not rel or rel.startswith("/") or ".." in rel.split("/"):
            raise _malformed(path, f"line {n}")
        sums[rel] = digest
    return sums


def _malformed(path: Path, where: str) -> RegistryError:
    return RegistryError(f"{path} {where} is malformed; the package was altered, "
                         "restore it from a backup or publish a new version")  # fmt: skip


def verify_manifest(root: Path) -> dict[str, str]:
    """Check that the files under ``root`` are exactly those of its MANIFEST, unchanged.

    Returns:
        relative path -> hex SHA-256 (as listed).

    Raises:
        RegistryError: a file is missing, added, or its checksum differs (names them).
    """
    sums = read_manifest(root)
    present = set(package_files(root))
    missing = sorted(set(sums) - present)
    extra = sorted(present - set(sums))
    changed = sorted(rel for rel in set(sums) & present if sha256_file(root / rel) != sums[rel])
    problems = [f"{what}: {', '.join(names)}" for what, names in
                (("changed", changed), ("missing", missing), ("not in the manifest", extra))
                if names]  # fmt: skip
    if problems:
        raise RegistryError(
            f"model package {root} fails its checksums ({'; '.join(problems)}); it was altered "
            "after publishing: do not use it, restore it or publish a new version"
        )
    return sums
