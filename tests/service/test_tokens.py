"""TokenStore: secrets shown once, stored hashed, revocation seen by other handles at once."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from echoscreen.errors import AuthError, ServiceError
from echoscreen.service.tokens import TokenStore


def test_create_verify_revoke(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "state" / "tokens.db")
    secret = store.create("clinic-a")
    assert secret.startswith("es_") and len(secret) == 46
    assert store.verify(secret) == "clinic-a"
    other = TokenStore(tmp_path / "state" / "tokens.db")  # e.g. the CLI in another process
    assert other.verify(secret) == "clinic-a"
    with pytest.raises(ServiceError, match="active token already"):
        store.create("clinic-a")
    assert other.revoke("clinic-a") == 1
    with pytest.raises(AuthError, match="unknown or revoked"):
        store.verify(secret)
    with pytest.raises(ServiceError, match="no active token"):
        store.revoke("clinic-a")
    again = store.create("clinic-a")  # a new token after revocation
    assert again != secret and store.verify(again) == "clinic-a"
    listed = store.list()
    assert [t.name for t in listed] == ["clinic-a", "clinic-a"]
    assert listed[0].revoked is not None and listed[1].revoked is None


def test_stored_hashed_and_private(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    store = TokenStore(path)
    secret = store.create("b")
    assert secret.encode() not in path.read_bytes()
    with sqlite3.connect(path) as db:
        (digest,) = db.execute("SELECT digest FROM tokens").fetchone()
    assert len(digest) == 64 and secret not in digest
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("bad", ["", "es_", "es_nope", "Bearer es_x", "x" * 300])
def test_bad_secrets_refused(tmp_path: Path, bad: str) -> None:
    store = TokenStore(tmp_path / "tokens.db")
    store.create("a")
    with pytest.raises(AuthError):
        store.verify(bad)


@pytest.mark.parametrize("name", ["", "-x", "a b", "a/b", "x" * 65])
def test_bad_names_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ServiceError, match="invalid token name"):
        TokenStore(tmp_path / "tokens.db").create(name)
