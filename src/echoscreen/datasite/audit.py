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
writes the head ``(seq, hash)`` to ``SITE/audit.head`` (durably, keyed: :mod:`.audithead`)
after the row is committed; :func:`verify` requires the chain to reach that head.

Appends are serialised by a lock within a process and by the primary key across
processes: each log remembers the head it last committed and chains onto it without
asking the database; if another process appended meanwhile, the insert of the next
``seq`` conflicts and is retried on the head read back. Concurrent appends in one
process are group-committed (:meth:`AuditLog.append`): one transaction (one Core
``INSERT``) and one head update for all the records queued while the previous commit
ran.
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

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from echoscreen.datasite.audithead import HeadError, read_head, write_head
from echoscreen.datasite.schema import AuditRecord, connect, ensure_tables
from echoscreen.errors import DatasiteError
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

    def __post_init__(self) -> None:
        # Text from a request (a JSON id, a header) may hold lone surrogates ("\ud800"),
        # which the catalog's drivers cannot encode: one such event failed its whole group
        # commit, leaving that request and every request committed with it unaudited.
        # They are kept as visible escapes.
        for name in ("who", "action", "serial", "client", "target", "detail"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, storable(value))


def storable(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udXXX`` escapes (valid UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


@dataclass
class _Slot:
    """One caller's event on its way into the log."""

    event: Event
    seq: int = 0
    done: bool = False
    error: BaseException | None = None


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
        self._head_key = hmac.new(self._key, b"echoscreen/audit.head/v1", hashlib.sha256).digest()
        self._lock = threading.Lock()  # one committer at a time
        self._queue_lock = threading.Lock()
        self._queue: list[_Slot] = []  # appended, not yet committed
        self._head_path = site.path / HEAD_FILE
        self._last: tuple[int, str] | None = None  # the head this log last committed
        self._slot = 0  # head file slot written next (alternates)
        ensure_tables(site.catalog)

    def _hash(self, fields: dict[str, Any]) -> str:
        return hmac.new(self._key, _canonical(fields), hashlib.sha256).hexdigest()

    def append(self, event: Event) -> int:
        """Append ``event`` and commit it (durably) before returning its sequence number.

        Group commit: while one thread commits, the events other threads append queue
        up; the next thread to take the commit lock commits all of them in one
        transaction and one head update (each still its own hash-chained record), and
        every caller returns only once its own record is committed. This shares the
        fsyncs (about 3 ms of CPU and 15 ms of wall time per commit here) between
        concurrent requests.

        Raises:
            DatasiteError: the log could not be written after several attempts.
        """
        slot = _Slot(event)
        with self._queue_lock:
            self._queue.append(slot)
        with self._lock:
            if not slot.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if slot.error is not None:
            raise slot.error
        return slot.seq

    def _commit(self, batch: list[_Slot]) -> None:
        """Commit ``batch`` (caller holds the commit lock); every slot ends done."""
        error: BaseException = DatasiteError(
            "the audit record could not be committed (the log is contended by other writers, "
            "or its writer was interrupted); retry the request")  # fmt: skip
        try:
            for _ in range(8):
                try:
                    seqs, digest = self._append_once([s.event for s in batch])
                except SAIntegrityError:
                    self._last = None  # another process appended first: read the new head
                    continue
                self._last = (seqs[-1], digest)
                write_head(self._head_path, self._head_key, seqs[-1], digest, self._slot)
                self._slot ^= 1
                for s, seq in zip(batch, seqs, strict=True):
                    s.seq = seq
                break
        except Exception as exc:  # each waiting caller raises it
            error = exc
        finally:
            for s in batch:
                s.error = None if s.seq else error
                s.done = True

    def _append_once(self, events: list[Event]) -> tuple[list[int], str]:
        """Insert ``events`` after the newest record in one transaction: (seqs, last hash).

        Chains onto the head this log committed last, or the one read from the database.
        """
        with connect(self.site.catalog, write=True) as s:
            last = self._last or self._tip(s.execute(
                select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc()).limit(1)
            ).first())  # fmt: skip
            seq, prev = (last[0], last[1]) if last else (0, GENESIS)
            seqs, rows = [], []
            for event in events:
                seq += 1
                fields = asdict(event)
                fields.update(seq=seq, prev_hash=prev,
                              at=datetime.now(UTC).isoformat(timespec="microseconds"))  # fmt: skip
                for key in ("target", "detail"):
                    if isinstance(fields[key], str):
                        fields[key] = fields[key][:2000]
                prev = self._hash({f: fields[f] for f in _FIELDS})
                rows.append({**{f: fields[f] for f in _FIELDS}, "hash": prev})
                seqs.append(seq)
            s.execute(insert(AuditRecord), rows)  # Core, on a plain connection
        return seqs, prev

    def _tip(self, newest: Any) -> tuple[int, str] | None:
        """Where to chain on when this log has not committed yet: the newest record, or
        the head file when it is ahead of it.

        The head is written after each commit, so it is ahead only when newest records
        were deleted (or the catalog restored from an older backup). Numbering then goes
        on after the head, so the gap stays in the log for :meth:`verify` to report;
        chaining onto the newest remaining record instead made the next write hide the
        deletion. A head file with no valid slot (a crash tears one slot at most) is set
        aside as ``audit.head.damaged-TIME``, which :meth:`verify` reports, rather than
        overwritten.
        """
        try:
            head = read_head(self._head_path, self._head_key)
        except HeadError:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
            self._head_path.rename(self._head_path.with_name(f"{HEAD_FILE}.damaged-{stamp}"))
            head = None
        if head is not None and (newest is None or head.seq > newest[0]):
            return head.seq, head.hash
        return (int(newest[0]), str(newest[1])) if newest is not None else None

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
        damaged = [(0, f"{p.name}: a head file with no valid head was set aside by a later "
                       "write (a crash damages one slot at most: tampered with, or a failing disk)")
                   for p in sorted(self._head_path.parent.glob(f"{HEAD_FILE}.damaged-*"))]
        return damaged + self._check_head_file(hashes, n)

    def _check_head_file(self, hashes: dict[int, str], n: int) -> list[tuple[int, str]]:
        try:
            head = read_head(self._head_path, self._head_key)
        except HeadError:
            return [(0, f"{self._head_path} is malformed or not written with the site's key")]
        if head is None:
            return [(0, f"{self._head_path} is missing but the log has records")] if n else []
        if head.seq not in hashes:
            return [(0, f"the log ends before its recorded head {head.seq} (records deleted)")]
        if not hmac.compare_digest(hashes[head.seq], head.hash):
            return [(head.seq, "record differs from the recorded head (rewritten)")]
        if not head.keyed:
            why = ("is unkeyed (written by an earlier version, or by someone without the "
                   "site's keys), so it cannot show that no newest records were deleted; the "
                   "next audited action rewrites it keyed")  # fmt: skip
            return [(0, f"{self._head_path} {why}")]
        return []

