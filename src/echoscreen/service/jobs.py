"""``JobStore``: the service's record of accepted jobs (SQLite, pseudonymised, no pixels).

Each row holds what a client needs to find its result and what an operator needs to
account for the work, and nothing that identifies a patient: the study is a keyed
pseudonym (HMAC-SHA256 of its StudyInstanceUID under a secret kept beside the database,
``jobs.key``), and the result document holds no file names, header values or pixels (the
engine replaces file names by their position in the upload). Opening the store after a
crash marks the jobs it left queued or running ``interrupted``; expired rows are purged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from echoscreen.errors import ConfigError

#: where a job came from
SOURCES = ("api", "sync", "stow", "dimse", "web")
#: job states
STATUSES = ("queued", "running", "done", "failed", "interrupted")
#: reason given to jobs a restart cut short
INTERRUPTED = "the service restarted before this job finished; submit the study again"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, client TEXT NOT NULL, source TEXT NOT NULL, status TEXT NOT NULL,
    created TEXT NOT NULL, finished TEXT, study TEXT, n_files INTEGER NOT NULL,
    result TEXT, reason TEXT, expires TEXT
)
"""


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def _secret(path: Path) -> bytes:
    """The pseudonym secret in ``path`` (32 random bytes, made on first use, mode 0600)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) < 16:
            raise ConfigError(
                f"{path} holds {len(key)} bytes, not a key; delete it to make "
                "a new one (old study pseudonyms will no longer match)"
            ) from None
        return key
    key = os.urandom(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


class JobStore:
    """Jobs in a SQLite file; thread-safe.

    Args:
        path: the database file (``STATE/jobs.db``); its folder is made if missing and
            holds the pseudonym secret ``jobs.key``.
        ttl_s: how long a finished (done, failed, interrupted) job is kept, in seconds.
    """

    def __init__(self, path: Path, ttl_s: float = 3600.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.ttl = timedelta(seconds=ttl_s)
        self._key = _secret(self.path.parent / "jobs.key")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        now = _now()
        self._db.execute(
            "UPDATE jobs SET status='interrupted', reason=?, finished=?, expires=? "
            "WHERE status IN ('queued', 'running')", (INTERRUPTED, _iso(now), _iso(now + self.ttl)),
        )  # fmt: skip
        self.purge()

    def pseudonym(self, study_uid: str) -> str:
        """Keyed pseudonym (32 hex characters) of a StudyInstanceUID; "" for none."""
        if not study_uid:
            return ""
        return hmac.new(self._key, study_uid.encode(), hashlib.sha256).hexdigest()[:32]

    def create(self, *, client: str, source: str, study: str, n_files: int) -> str:
        """Record a queued job and return its id (uuid4 hex).

        Args:
            client: the token's name (or ``dimse:AE``). source: one of :data:`SOURCES`.
            study: the study's pseudonym (:meth:`pseudonym`). n_files: files received.
        """
        if source not in SOURCES:
            raise ConfigError(f"job source {source!r} is unknown; use one of {', '.join(SOURCES)}")
        job_id = uuid.uuid4().hex
        self._exec("INSERT INTO jobs (id, client, source, status, created, study, n_files) "
                   "VALUES (?, ?, ?, 'queued', ?, ?, ?)",
                   (job_id, client, source, _iso(_now()), study, n_files))  # fmt: skip
        return job_id

    def start(self, job_id: str) -> None:
        """Mark a job running."""
        self._exec("UPDATE jobs SET status='running' WHERE id=?", (job_id,))

    def finish(self, job_id: str, result: dict[str, Any]) -> str:
        """Store a job's result document, mark it done; returns when it expires (ISO)."""
        return self._end(job_id, "done", None, json.dumps(result))

    def fail(self, job_id: str, reason: str, status: str = "failed") -> str:
        """Mark a job ``failed`` (or ``interrupted``) with a reason; returns its expiry."""
        if status not in ("failed", "interrupted"):
            raise ValueError(f"a job cannot end as {status!r}")
        return self._end(job_id, status, reason, None)

    def get(self, job_id: str) -> dict[str, Any] | None:
        """``{"id", "status", "created", "finished", "reason", "result", "expires", ...}``.

        None when there is no such job or it has expired.
        """
        with self._lock:
            cur = self._db.execute("SELECT * FROM jobs WHERE id=? AND (expires IS NULL OR "
                                   "expires > ?)", (job_id, _iso(_now())))  # fmt: skip
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
        if row is None:
            return None
        job = dict(zip(names, row, strict=True))
        job["result"] = json.loads(job["result"]) if job["result"] else None
        return job

    def counts(self) -> dict[str, int]:
        """Jobs by status (expired rows not purged yet included)."""
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {s: int(n) for s, n in rows}

    def purge(self) -> int:
        """Delete expired rows; returns how many."""
        return self._exec("DELETE FROM jobs WHERE expires IS NOT NULL AND expires <= ?",
                          (_iso(_now()),))  # fmt: skip

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _end(self, job_id: str, status: str, reason: str | None, result: str | None) -> str:
        now = _now()
        expires = _iso(now + self.ttl)
        self._exec("UPDATE jobs SET status=?, reason=?, result=?, finished=?, expires=? "
                   "WHERE id=?", (status, reason, result, _iso(now), expires, job_id))  # fmt: skip
        return expires

    def _exec(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount
