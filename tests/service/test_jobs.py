"""JobStore: lifecycle, a restart after a crash, expiry, keyed study pseudonyms."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from echoscreen.errors import ConfigError
from echoscreen.service.jobs import INTERRUPTED, JobStore

UID = "1.2.826.0.1.3680043.8.498.12345678901234567890"


def test_a_job_goes_queued_running_done(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "state" / "jobs.db")
    job = store.create(client="clinic-a", source="api", study=store.pseudonym(UID), n_files=3)
    assert len(job) == 32 and int(job, 16) >= 0
    first = store.get(job)
    assert first is not None and first["status"] == "queued" and first["result"] is None
    assert first["client"] == "clinic-a" and first["n_files"] == 3
    store.start(job)
    assert store.get(job)["status"] == "running"  # type: ignore[index]
    store.finish(job, {"decision": "normal", "clips": [{"file_index": 0}]})
    done = store.get(job)
    assert done is not None and done["status"] == "done" and done["finished"] >= done["created"]
    assert done["result"] == {"decision": "normal", "clips": [{"file_index": 0}]}
    assert store.get("0" * 32) is None
    with pytest.raises(ConfigError, match="source"):
        store.create(client="x", source="fax", study="", n_files=1)
    store.close()


def test_reopening_after_a_crash_interrupts_unfinished_jobs(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    queued = store.create(client="a", source="api", study="", n_files=1)
    running = store.create(client="a", source="dimse", study="", n_files=1)
    done = store.create(client="a", source="web", study="", n_files=1)
    store.start(running)
    store.start(done)
    store.finish(done, {"decision": "normal"})
    store.close()  # the process dies here: nothing else is written
    again = JobStore(tmp_path / "jobs.db")
    for job in (queued, running):
        row = again.get(job)
        assert row is not None and row["status"] == "interrupted" and row["reason"] == INTERRUPTED
    assert again.get(done)["status"] == "done"  # type: ignore[index]
    assert again.counts() == {"interrupted": 2, "done": 1}
    again.close()


def test_results_expire_and_are_purged(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db", ttl_s=0.05)
    job = store.create(client="a", source="api", study="", n_files=1)
    failed = store.create(client="a", source="api", study="", n_files=1)
    store.finish(job, {"decision": "normal"})
    store.fail(failed, "no clip in the study could be read")
    waiting = store.create(client="a", source="api", study="", n_files=1)
    time.sleep(0.1)
    assert store.get(job) is None and store.get(failed) is None
    assert store.get(waiting) is not None  # unfinished jobs do not expire
    assert store.purge() == 2
    rows = sqlite3.connect(tmp_path / "jobs.db").execute("SELECT id FROM jobs").fetchall()
    assert rows == [(waiting,)]
    store.close()


def test_study_pseudonyms_are_keyed_stable_and_secret(tmp_path: Path) -> None:
    a = JobStore(tmp_path / "a" / "jobs.db")
    p = a.pseudonym(UID)
    assert len(p) == 32 and UID not in p and a.pseudonym("") == ""
    a.close()
    assert JobStore(tmp_path / "a" / "jobs.db").pseudonym(UID) == p  # same key after restart
    assert JobStore(tmp_path / "b" / "jobs.db").pseudonym(UID) != p  # another service's key
    assert (tmp_path / "a" / "jobs.key").stat().st_mode & 0o077 == 0
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "jobs.key").write_bytes(b"short")
    with pytest.raises(ConfigError, match="delete it"):
        JobStore(tmp_path / "c" / "jobs.db")
