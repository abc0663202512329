"""The append-only, hash-chained audit log of a data site.

Records are rows of the catalog table ``audit_log``
(:class:`~echoscreen.datasite.schema.AuditRecord`), numbered ``seq = 1, 2, ...``
without gaps. Each carries the hash of its predecessor (``prev_hash``; the first
one 64 zeros) and its own ``hash``::

    hash = HMAC-SHA256(audit_key, canonical_json(record fields + prev_hash))

where ``canonical_json`` is ``json.dumps(sort_keys=True, separators=(",", ":"))`` and
``audit_key`` is derived from the site's pseudonymisation secret (``SITE/keys``).
A keyed hash rather than a bare SHA-256 means someone who can write the catalog
but not read the site keys cannot edit a record and re-compute the chain after it.

Deleting the *newest* records leaves a valid shorter chain, so every append also
writes the head ``(seq, hash)`` to ``SITE/audit.head`` (atomically, fsynced) after
the row is committed; :func:`verify` requires the chain to reach that head.

Appends are serialised by a lock within a process and by the primary key across
processes (a conflicting insert is retried on the new head).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from echoscreen.datasite.schema import AuditRecord, ensure_tables
from echoscreen.errors import DatasiteError
from echoscreen.store.objects import atomic_write
from echoscreen.store.site import Site

GENESIS = "0" * 64
HEAD_FILE = "audit.head"
_FIELDS = ("seq", "at", "who", "serial", "client", "action", "target", "status", "allowed",
           "nbytes", "detail", "prev_hash")  # fmt: skip


@dataclass
class Event:
    """What happened, as the caller knows it (the log adds seq, time and hashes).

    Attributes:
        who: tenant name, ``"unauthenticated"`` (TLS refused / no certificate) or
            ``"site-admin"`` (CLI changes to grants and identities).
        action: e.g. ``"GET /v1/clips/{id}"`` or ``"tls-handshake"`` or ``"grant"``.
        allowed: whether the request was served.
        status: HTTP status sent (0 when there was no HTTP exchange).
        serial: client certificate serial (hex) when one was presented.
        client: peer address ``host:port`` when known.
        target: the dataset, clip id(s) or path concerned.
        nbytes: response body bytes sent.
        detail: the reason for a refusal, or other context.
    """

    who: str
    action: str
    allowed: bool
    status: int = 0
    serial: str | None = None
    client: str | None = None
    target: str | None = None
    nbytes: int = 0
    detail: str | None = None


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _record_fields(r: AuditRecord) -> dict[str, Any]:
    return {f: getattr(r, f) for f in _FIELDS}


class AuditLog:
    """Append to and verify the audit log of one site.

    Args:
        site: the open site (its catalog holds the log; its secret keys the hashes).
    """

    def __init__(self, site: Site) -> None:
        self.site = site
        self._key = hmac.new(site.pseudonym_secret, b"echoscreen/audit/v1", hashlib.sha256).digest()
        self._lock = threading.Lock()
        self._head_path = site.path / HEAD_FILE
        ensure_tables(site.catalog)

    def _hash(self, fields: dict[str, Any]) -> str:
        return hmac.new(self._key, _canonical(fields), hashlib.sha256).hexdigest()

    def append(self, event: Event) -> int:
        """Append ``event``; returns its sequence number.

        Raises:
            DatasiteError: the log could not be written after several attempts.
        """
        with self._lock:
            for _ in range(8):
                try:
                    seq, digest = self._append_once(event)
                except SAIntegrityError:
                    continue  # another process appended first: chain onto the new head
                head = json.dumps({"seq": seq, "hash": digest}).encode()
                atomic_write(self._head_path, head)
                return seq
        raise DatasiteError("the audit log is contended by other writers; retry the request")

    def _append_once(self, event: Event) -> tuple[int, str]:
        with self.site.catalog.session() as s:
            last = s.execute(
                select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc()).limit(1)
            ).first()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            fields = asdict(event)
            fields.update(seq=seq, prev_hash=prev,
                          at=datetime.now(UTC).isoformat(timespec="microseconds"))  # fmt: skip
            for key in ("target", "detail"):
                if isinstance(fields[key], str):
                    fields[key] = fields[key][:2000]
            digest = self._hash({f: fields[f] for f in _FIELDS})
            s.add(AuditRecord(hash=digest, **{f: fields[f] for f in _FIELDS}))
        return seq, digest

    def records(self, last: int | None = None) -> list[AuditRecord]:
        """The log in order; only the newest ``last`` records when given."""
        with self.site.catalog.session() as s:
            q = select(AuditRecord).order_by(AuditRecord.seq.desc() if last else AuditRecord.seq)
            rows = list(s.scalars(q.limit(last) if last else q))
        return rows[::-1] if last else rows

    def _iter_all(self) -> Iterator[AuditRecord]:
        with self.site.catalog.session() as s:
            yield from s.scalars(
                select(AuditRecord).order_by(AuditRecord.seq).execution_options(yield_per=1000)
            )

    def verify(self) -> list[tuple[int, str]]:
        """Check the whole chain and its head anchor.

        Returns:
            ``(seq, problem)`` for every break found (seq 0: about the log as a whole);
            empty when the log is intact.
        """
        problems: list[tuple[int, str]] = []
        expect_seq, prev, n = 1, GENESIS, 0
        hashes: dict[int, str] = {}
        for r in self._iter_all():
            n += 1
            if r.seq != expect_seq:
                problems.append((r.seq, f"sequence gap or reorder: expected {expect_seq}"))
            if r.prev_hash != prev:
                problems.append((r.seq, "prev_hash does not match the previous record"))
            if not hmac.compare_digest(self._hash(_record_fields(r)), r.hash):
                problems.append((r.seq, "record content does not match its hash (edited)"))
            expect_seq, prev = r.seq + 1, r.hash
            hashes[r.seq] = r.hash
        problems.extend(self._check_head(hashes, n))
        return problems

    def _check_head(self, hashes: dict[int, str], n: int) -> list[tuple[int, str]]:
        if not self._head_path.exists():
            return [(0, f"{self._head_path} is missing but the log has records")] if n else []
        try:
            head = json.loads(self._head_path.read_text())
            seq, digest = int(head["seq"]), str(head["hash"])
        except (ValueError, KeyError, TypeError):
            return [(0, f"{self._head_path} is malformed")]
        if seq not in hashes:
            return [(0, f"the log ends before its recorded head {seq} (records deleted)")]
        if not hmac.compare_digest(hashes[seq], digest):
            return [(seq, "record differs from the recorded head (rewritten)")]
        return []

