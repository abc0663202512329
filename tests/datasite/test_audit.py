"""The audit log: append-only hash chain; any edit, deletion or reordering is detected."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from tests.cli import fails, ok

from echoscreen.datasite.audit import AuditLog, Event
from echoscreen.datasite.schema import AuditRecord
from echoscreen.store.site import Site


@pytest.fixture
def site_with_log(tmp_path: Path) -> Iterator[tuple[Site, AuditLog]]:
    site = Site.init(tmp_path / "site")
    log = AuditLog(site)
    for i in range(6):
        log.append(Event("alice", f"GET /v1/clips/1.2.{i}", i % 3 != 0, 200 if i % 3 else 404,
                         serial="ab12", client="127.0.0.1:5000", target=f"clip 1.2.{i}",
                         nbytes=196736 if i % 3 else 0))  # fmt: skip
    yield site, log
    site.close()


def _edit(site: Site) -> None:
    with site.catalog.session() as s:
        s.execute(update(AuditRecord).where(AuditRecord.seq == 3).values(nbytes=1))


def _allow(site: Site) -> None:
    with site.catalog.session() as s:
        s.execute(update(AuditRecord).where(AuditRecord.seq == 4).values(allowed=True))


def _delete_middle(site: Site) -> None:
    with site.catalog.session() as s:
        s.execute(delete(AuditRecord).where(AuditRecord.seq == 2))


def _delete_last(site: Site) -> None:
    with site.catalog.session() as s:
        s.execute(delete(AuditRecord).where(AuditRecord.seq == 6))


def _reorder(site: Site) -> None:
    with site.catalog.session() as s:  # swap records 2 and 5 (via a free number)
        s.execute(update(AuditRecord).where(AuditRecord.seq == 2).values(seq=100))
        s.execute(update(AuditRecord).where(AuditRecord.seq == 5).values(seq=2))
        s.execute(update(AuditRecord).where(AuditRecord.seq == 100).values(seq=5))


def _rehash_without_key(site: Site) -> None:
    """Edit a record and recompute every SHA-256 after it: still caught (keyed hash)."""
    import hashlib

    with site.catalog.session() as s:
        recs = list(s.scalars(select(AuditRecord).order_by(AuditRecord.seq)))
        recs[2].who = "nobody"
        prev = recs[1].hash
        for r in recs[2:]:
            r.prev_hash = prev
            r.hash = hashlib.sha256(f"{r.seq}{r.who}{prev}".encode()).hexdigest()
            prev = r.hash


@pytest.mark.parametrize("tamper", [_edit, _allow, _delete_middle, _delete_last, _reorder,
                                    _rehash_without_key])  # fmt: skip
def test_tampering_is_detected(site_with_log: tuple[Site, AuditLog],
                               tamper: Callable[[Site], None]) -> None:  # fmt: skip
    site, log = site_with_log
    assert log.verify() == []
    tamper(site)
    problems = log.verify()
    assert problems, tamper.__name__


def _delete_last_two(site: Site) -> None:
    with site.catalog.session() as s:
        s.execute(delete(AuditRecord).where(AuditRecord.seq >= 5))


def _truncate_head(site: Site) -> None:
    head = site.path / "audit.head"
    head.write_bytes(head.read_bytes()[:60])


@pytest.mark.parametrize("tamper", [_delete_last, _delete_last_two, _truncate_head])
def test_tampering_stays_detected_after_the_next_write(
        site_with_log: tuple[Site, AuditLog], tamper: Callable[[Site], None]) -> None:  # fmt: skip
    site, log = site_with_log
    tamper(site)
    assert log.verify(), tamper.__name__
    # a new process (the server restarted, or a CLI command) appends the next record
    AuditLog(site).append(Event("site-admin", "grant", True, target="alice -> cohort"))
    assert log.verify(), f"{tamper.__name__} hidden by the next write"
    AuditLog(site).append(Event("site-admin", "grant", True, target="bob -> cohort"))
    assert log.verify(), f"{tamper.__name__} hidden by two writes"


def test_chain_links_each_record_to_the_previous(site_with_log: tuple[Site, AuditLog]) -> None:
    _, log = site_with_log
    recs = log.records()
    assert [r.seq for r in recs] == [1, 2, 3, 4, 5, 6]
    assert recs[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(recs))
    assert [r.seq for r in log.records(2)] == [5, 6]


def test_site_audit_cli_detects_tampering(site_with_log: tuple[Site, AuditLog]) -> None:
    site, _ = site_with_log
    text = ok("site", "audit", "--site", str(site.path), "--verify")
    assert "intact" in text and "GET /v1/clips/1.2.5" in text
    _edit(site)
    out = fails("site", "audit", "--site", str(site.path), "--verify", match="altered")
    assert "does not match its hash" in out


def test_concurrent_appends_are_each_committed_once_in_one_chain(tmp_path: Path) -> None:
    """Group commit: 24 threads append at once; each gets its own committed record."""
    import threading

    site = Site.init(tmp_path / "site")
    log, seqs, go = AuditLog(site), {}, threading.Barrier(24)

    def one(i: int) -> None:
        go.wait()
        seqs[i] = log.append(Event(f"t{i}", "POST /v1/clips:batch", True, 200, nbytes=i))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recs = {r.seq: r for r in log.records()}
    assert sorted(seqs.values()) == list(range(1, 25)) == sorted(recs)
    assert all(recs[seq].who == f"t{i}" and recs[seq].nbytes == i for i, seq in seqs.items())
    assert log.verify() == []
    head = (site.path / "audit.head").read_text()
    assert '"seq": 24' in head and recs[24].hash in head
    site.close()


def test_two_writers_with_stale_heads_still_make_one_chain(tmp_path: Path) -> None:
    """Each log chains onto the head it committed last; another writer's records in
    between make its insert conflict, and it retries on the head read back."""
    site = Site.init(tmp_path / "site")
    a, b = AuditLog(site), AuditLog(site)  # as two processes would
    order = [a, b, a, a, b, a, b, b]
    seqs = [log.append(Event(f"w{i}", "grant", True)) for i, log in enumerate(order)]
    assert seqs == list(range(1, 9))
    assert [r.who for r in a.records()] == [f"w{i}" for i in range(8)]
    assert a.verify() == [] and b.verify() == []
    site.close()


def test_head_file_survives_a_torn_slot(site_with_log: tuple[Site, AuditLog]) -> None:
    from echoscreen.datasite.audithead import SLOT, Head, read_head

    site, log = site_with_log
    path, key = site.path / "audit.head", log._head_key
    raw = bytearray(path.read_bytes())
    assert len(raw) == 2 * SLOT and read_head(path, key) == Head(6, log.records(1)[0].hash)
    newest = 0 if b'"seq": 6' in raw[:SLOT] else 1  # the slot the last commit wrote
    raw[newest * SLOT + 20 : newest * SLOT + 30] = b"#" * 10  # a crash tore that write
    path.write_bytes(bytes(raw))
    assert read_head(path, key) == Head(5, log.records(2)[0].hash)  # the other: one earlier
    assert log.verify() == []
    raw[(1 - newest) * SLOT + 20 : (1 - newest) * SLOT + 30] = b"#" * 10
    path.write_bytes(bytes(raw))
    assert any("malformed" in p for _, p in log.verify())


def _unkeyed_slot(seq: int, digest: str) -> bytes:
    """A head slot as earlier versions wrote it (and as anyone can: a plain digest)."""
    from echoscreen.datasite.audithead import OLD_SLOT

    check = hashlib.sha256(f"{seq}:{digest}".encode()).hexdigest()[:16]
    line = json.dumps({"seq": seq, "hash": digest, "check": check}).encode()
    return line.ljust(OLD_SLOT - 1) + b"\n"


@pytest.mark.parametrize("form", ["unkeyed slots", "one JSON object"])
def test_a_head_rewritten_without_the_key_does_not_hide_deleted_records(
        site_with_log: tuple[Site, AuditLog], form: str) -> None:  # fmt: skip
    """Delete the newest two records, then write a head naming the record left newest:
    with the plain-digest slot check (or the slot-less form) verify said intact."""
    from echoscreen.datasite.audithead import SLOT

    site, log = site_with_log
    _delete_last_two(site)
    kept = log.records(1)[0]
    forged = (_unkeyed_slot(kept.seq, kept.hash) * 2 if form == "unkeyed slots"
              else json.dumps({"seq": kept.seq, "hash": kept.hash}).encode())  # fmt: skip
    (site.path / "audit.head").write_bytes(forged)
    problems = log.verify()
    assert any("unkeyed" in p for _, p in problems), problems
    # a keyed-looking slot with a made-up key is no head at all
    fake = json.dumps({"seq": kept.seq, "hash": kept.hash, "key": "0" * 32}).encode()
    (site.path / "audit.head").write_bytes((fake.ljust(SLOT - 1) + b"\n") * 2)
    assert any("not written with the site's key" in p for _, p in log.verify())


def test_a_head_of_an_earlier_version_is_rewritten_keyed_by_the_next_write(
        site_with_log: tuple[Site, AuditLog]) -> None:  # fmt: skip
    site, log = site_with_log
    newest = log.records(1)[0]
    path = site.path / "audit.head"
    path.write_bytes(_unkeyed_slot(newest.seq, newest.hash) * 2)
    assert any("unkeyed" in p for _, p in log.verify())
    AuditLog(site).append(Event("site-admin", "grant", True, target="alice -> cohort"))
    assert log.verify() == []  # chained on after the old head, which the keyed slot replaces
    path.write_text(json.dumps({"seq": 7, "hash": log.records(1)[0].hash}))  # slot-less form
    assert any("unkeyed" in p for _, p in log.verify())
    with site.catalog.session() as s:
        s.execute(delete(AuditRecord).where(AuditRecord.seq == 7))
    assert any("ends before its recorded head 7" in p for _, p in log.verify())
