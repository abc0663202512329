"""Bearer tokens of the screening service, stored hashed in SQLite (``STATE/tokens.db``).

A token is ``es_`` followed by 32 url-safe random bytes (43 characters). It is shown once,
by :meth:`TokenStore.create`; the store keeps only its SHA-256, the name it was given
(the *client* named in the access log and the job records) and when it was created and
revoked. Every check reads the database, so ``echoscreen tokens revoke NAME`` run from
another process takes effect on the next request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from echoscreen.errors import AuthError, ServiceError

PREFIX = "es_"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    digest  TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    created TEXT NOT NULL,
    revoked TEXT
);
CREATE INDEX IF NOT EXISTS tokens_name ON tokens (name);
"""


@dataclass(frozen=True)
class TokenInfo:
    """One token as listed (never the secret).

    Attributes:
        name: the client name the token stands for.
        created: UTC ISO time of creation; revoked: UTC ISO time of revocation or None.
    """

    name: str
    created: str
    revoked: str | None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class TokenStore:
    """The tokens of one service, in the SQLite file ``path`` (created, mode 0600).

    Safe to use from many threads and processes: each call opens its own connection.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.executescript(_SCHEMA)
        self.path.chmod(0o600)

    def _connect(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(self.path, timeout=10.0)
        except sqlite3.Error as exc:
            raise ServiceError(f"cannot open the token store {self.path} ({exc}); check the "
                               "--state folder", status=503) from exc  # fmt: skip

    def create(self, name: str) -> str:
        """Create a token for client ``name`` and return its secret (shown only now).

        Raises:
            ServiceError: the name is malformed, or has an active token already (409).
        """
        if not NAME_RE.match(name):
            raise ServiceError(f"invalid token name {name!r}: use 1-64 of A-Z a-z 0-9 . _ @ - "
                               "starting with a letter or digit")  # fmt: skip
        secret = PREFIX + secrets.token_urlsafe(32)
        with closing(self._connect()) as db, db:
            db.execute("BEGIN IMMEDIATE")
            if db.execute("SELECT 1 FROM tokens WHERE name = ? AND revoked IS NULL",
                          (name,)).fetchone():  # fmt: skip
                raise ServiceError(f"{name!r} has an active token already; revoke it first "
                                   f"(`echoscreen tokens revoke {name}`)", status=409)  # fmt: skip
            db.execute("INSERT INTO tokens (digest, name, created) VALUES (?, ?, ?)",
                       (_digest(secret), name, _now()))  # fmt: skip
        return secret

    def revoke(self, name: str) -> int:
        """Revoke every active token of ``name``; returns how many.

        Raises:
            ServiceError: ``name`` has no active token (404).
        """
        with closing(self._connect()) as db, db:
            n = db.execute("UPDATE tokens SET revoked = ? WHERE name = ? AND revoked IS NULL",
                           (_now(), name)).rowcount  # fmt: skip
        if n == 0:
            raise ServiceError(f"no active token named {name!r}; `echoscreen tokens list` "
                               "shows them", status=404)  # fmt: skip
        return int(n)

    def list(self) -> list[TokenInfo]:
        """Every token ever created, oldest first (revoked ones too)."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT name, created, revoked FROM tokens "
                              "ORDER BY created, rowid").fetchall()  # fmt: skip
        return [TokenInfo(str(n), str(c), None if r is None else str(r)) for n, c, r in rows]

    def verify(self, secret: str) -> str:
        """The client name of an active token.

        Raises:
            AuthError: the secret is malformed, unknown or revoked.
        """
        if not secret.startswith(PREFIX) or len(secret) > 200:
            raise AuthError("malformed bearer token; send `Authorization: Bearer es_...` with "
                            "a token from `echoscreen tokens create NAME`")  # fmt: skip
        with closing(self._connect()) as db:
            row = db.execute("SELECT name FROM tokens WHERE digest = ? AND revoked IS NULL",
                             (_digest(secret),)).fetchone()  # fmt: skip
        if row is None:
            raise AuthError("unknown or revoked token; ask the service operator for a new one")
        return str(row[0])
