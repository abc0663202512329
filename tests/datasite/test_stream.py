"""Batch answers stream clip by clip; a clip failing authentication after earlier clips
were sent breaks the answer (the client raises), never hands over wrong pixels."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from tests.datasite.sitefix import Served, tamper
from tests.datasite.test_server import audit_since, head

from echoscreen.data import RemoteSite
from echoscreen.datasite.wire import decode_batch, npy_array, npy_nbytes
from echoscreen.errors import DatasiteError


def test_content_length_is_known_before_decryption(served: Served) -> None:
    truth = served.truth["cohort-a"]
    ids = sorted(truth)[:3]
    with served.client("alice") as c:
        r = c.post("/v1/clips:batch", json={"ids": ids})
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
    got = decode_batch(r.content)
    assert [len(buf) for _, buf in got] == [npy_nbytes(truth[cid].shape) for cid in ids]
    assert all(np.array_equal(npy_array(buf), truth[cid]) for cid, buf in got)


def test_later_tampered_clip_aborts_the_answer(served: Served) -> None:
    good = sorted(served.truth["cohort-a"])[:2]
    bad = sorted(served.truth["cohort-t"])[1]
    tamper(served.site, bad)
    start = head(served)
    with served.client("alice") as c, pytest.raises(httpx.RemoteProtocolError):
        c.post("/v1/clips:batch", json={"ids": [*good, bad]})  # cut short of Content-Length
    remote = RemoteSite(served.url, served.ids["alice"])
    handed: dict[str, np.ndarray] = {}
    with pytest.raises(DatasiteError, match="cut its answer short"):
        remote.fetch_each([*good, bad], handed.__setitem__)
    assert list(handed) == good  # the clips sent before the failure, each authentic
    assert all(np.array_equal(handed[c], served.truth["cohort-a"][c]) for c in good)
    with pytest.raises(DatasiteError):
        remote.fetch([*good, bad])
    assert remote.fetch(good)[1].tobytes() == served.truth["cohort-a"][good[1]].tobytes()
    remote.close()
    recs = [r for r in audit_since(served, start) if r.action == "POST /v1/clips:batch"]
    assert [r.status for r in recs] == [409, 409, 409, 200]
    assert not any(r.allowed for r in recs[:3]) and "integrity" in (recs[0].detail or "")
