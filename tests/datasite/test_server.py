"""The data server over real mTLS on loopback: access control, bounds, integrity, audit.

Tests run in file order against one server (module fixture ``served``); the last
one checks that the audit chain built by all of them verifies.
"""

from __future__ import annotations

import io
import json
import time

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from tests.datasite.sitefix import Served, tamper

from echoscreen.datasite import pki
from echoscreen.datasite.audit import AuditLog
from echoscreen.datasite.limits import Limits
from echoscreen.datasite.schema import AuditRecord
from echoscreen.datasite.server import ServerConfig, running
from echoscreen.datasite.wire import BATCH_TYPE, decode_batch, npy_array
from echoscreen.store import tensors
from echoscreen.store.schema import Clip


def audit_since(served: Served, seq: int) -> list[AuditRecord]:
    """Audit records appended after ``seq``."""
    with served.site.catalog.session() as s:
        return list(s.scalars(select(AuditRecord).where(AuditRecord.seq > seq)
                              .order_by(AuditRecord.seq)))  # fmt: skip


def handshake_refusals(served: Served, seq: int, words: str) -> list[AuditRecord]:
    """``tls-handshake`` refusals after ``seq`` whose detail holds ``words``.

    The server records a refusal right after its TLS alert is sent, so the client may
    see the failure first: wait (up to 10 s) for the record.
    """
    for _ in range(500):
        recs = [r for r in audit_since(served, seq) if r.action == "tls-handshake"
                and not r.allowed and words in (r.detail or "")]  # fmt: skip
        if recs:
            return recs
        time.sleep(0.02)
    return []


def head(served: Served) -> int:
    """Sequence number of the newest audit record."""
    recs = AuditLog(served.site).records(1)
    return recs[-1].seq if recs else 0


def test_tenant_reads_exactly_its_granted_clips(served: Served) -> None:
    truth = served.truth["cohort-a"]
    with served.client("alice") as c:
        assert c.get("/v1/session").json()["tenant"] == "alice"
        names = [d["name"] for d in c.get("/v1/datasets").json()["datasets"]]
        assert names == ["cohort-a", "cohort-t"]
        clips = c.get("/v1/datasets/cohort-a/clips").json()["clips"]
        assert sorted(x["id"] for x in clips) == sorted(truth)
        assert {x["label"] for x in clips} == {"normal", "borderline", "definite", None}
        assert all(x["shape"] == [3, 16, 64, 64] and "patient" not in x for x in clips)
        one = c.get(f"/v1/clips/{clips[0]['id']}")
        assert one.status_code == 200 and one.headers["content-type"] == "application/x-npy"
        assert np.array_equal(np.load(io.BytesIO(one.content)), truth[clips[0]["id"]])
        ids = [x["id"] for x in clips[:5]]
        batch = c.post("/v1/clips:batch", json={"ids": ids})
        assert batch.headers["content-type"] == BATCH_TYPE
        got = decode_batch(batch.content)
        assert [cid for cid, _ in got] == ids
        for cid, buf in got:
            assert np.array_equal(npy_array(buf), truth[cid])


def test_compressed_clips_travel_as_stored_only_to_clients_that_accept_them(
    served: Served,
) -> None:
    """Clips ``x.1`` are stored zstd, ``x.2`` npy (sitefix); both read back exactly."""
    truth = served.truth["cohort-a"]
    ids = sorted(truth)[:4]
    with served.client("alice") as c:
        packed = decode_batch(c.post("/v1/clips:batch", json={"ids": ids, "accept": ["zstd"]})
                              .content)  # fmt: skip
        plain = decode_batch(c.post("/v1/clips:batch", json={"ids": ids}).content)
        with c.stream("GET", f"/v1/clips/{ids[0]}", headers={"accept-encoding": "zstd"}) as r:
            raw = b"".join(r.iter_raw())
            encoding = r.headers.get("content-encoding")
        identity = c.get(f"/v1/clips/{ids[0]}", headers={"accept-encoding": "identity"})
    assert [tensors.form(b) for _, b in packed] == ["zstd", "npy", "zstd", "npy"]
    assert [tensors.form(b) for _, b in plain] == ["npy"] * 4
    for (cid, a), (_, b) in zip(packed, plain, strict=True):
        assert np.array_equal(npy_array(tensors.npy_bytes(a)), truth[cid])
        assert np.array_equal(npy_array(b), truth[cid])
    assert encoding == "zstd" and tensors.form(raw) == "zstd"
    assert np.array_equal(npy_array(tensors.npy_bytes(raw)), truth[ids[0]])
    assert "content-encoding" not in identity.headers
    assert np.array_equal(npy_array(identity.content), truth[ids[0]])


def test_a_catalog_row_that_disagrees_with_its_object_gives_409(served: Served) -> None:
    cid = sorted(served.truth["cohort-a"])[0]  # stored zstd
    with served.site.catalog.session() as s:
        clip = s.get(Clip, cid)
        assert clip is not None and clip.tensor_nbytes
        clip.tensor_nbytes += 1
    try:
        with served.client("alice") as c:
            r = c.post("/v1/clips:batch", json={"ids": [cid], "accept": ["zstd"]})
        assert r.status_code == 409 and "catalog row says" in r.json()["detail"]
    finally:
        with served.site.catalog.session() as s:
            clip = s.get(Clip, cid)
            assert clip is not None and clip.tensor_nbytes
            clip.tensor_nbytes -= 1


def test_tenants_are_isolated_and_existence_does_not_leak(served: Served) -> None:
    b_clip = next(iter(served.truth["cohort-b"]))
    a_clip = next(iter(served.truth["cohort-a"]))
    start = head(served)
    with served.client("alice") as c:
        other = c.get("/v1/datasets/cohort-b/clips")
        absent = c.get("/v1/datasets/no-such-set/clips")
        assert other.status_code == absent.status_code == 404
        assert other.json()["detail"].replace("cohort-b", "X") == \
            absent.json()["detail"].replace("no-such-set", "X")  # fmt: skip
        assert c.get("/v1/datasets/cohort-b/splits").status_code == 404
        assert c.get(f"/v1/clips/{b_clip}").status_code == 404
        assert c.post("/v1/clips:batch", json={"ids": [a_clip, b_clip]}).status_code == 404
    with served.client("bob") as c:
        assert [d["name"] for d in c.get("/v1/datasets").json()["datasets"]] == ["cohort-b"]
        assert c.get(f"/v1/clips/{a_clip}").status_code == 404
    denied = [r for r in audit_since(served, start) if not r.allowed]
    assert {r.who for r in denied} == {"alice", "bob"}
    assert all(r.status == 404 and r.serial for r in denied)


def test_tenant_without_grant_sees_nothing_and_is_audited(served: Served) -> None:
    start = head(served)
    with served.client("carol") as c:
        assert c.get("/v1/datasets").json() == {"datasets": []}
        r = c.get(f"/v1/clips/{next(iter(served.truth['cohort-a']))}")
        assert r.status_code == 404
    recs = audit_since(served, start)
    assert [(r.who, r.allowed, r.status) for r in recs] == [("carol", True, 200),
                                                           ("carol", False, 404)]  # fmt: skip


def test_no_client_certificate_fails_tls_and_is_audited(served: Served) -> None:
    start = head(served)
    with served.anonymous() as c, pytest.raises(httpx.TransportError):
        c.get("/v1/datasets")
    assert handshake_refusals(served, start, "CERTIFICATE")


def test_certificate_from_another_ca_fails_tls_and_is_audited(served: Served) -> None:
    start = head(served)
    # the foreign identity trusts its own CA, so present it with the site CA as trust anchor
    import ssl

    ctx = ssl.create_default_context(cafile=str(served.ids["alice"] / "ca.crt"))
    f = served.ids["foreign"]
    ctx.load_cert_chain(str(f / "client.crt"), str(f / "client.key"))
    with httpx.Client(base_url=served.url, verify=ctx) as c, pytest.raises(httpx.TransportError):
        c.get("/v1/datasets")
    assert handshake_refusals(served, start, "VERIFY_FAILED")
    with pytest.raises(httpx.TransportError), served.client("foreign") as c:
        c.get("/v1/datasets")  # and it does not trust our server either


def test_revocation_applies_to_the_next_request_on_an_open_connection(served: Served) -> None:
    clip = next(iter(served.truth["cohort-a"]))
    with served.client("mallory") as c:
        assert c.get(f"/v1/clips/{clip}").status_code == 200
        start = head(served)
        pki.revoke(served.site, "mallory")
        r = c.get(f"/v1/clips/{clip}")
        assert r.status_code == 403 and "revoked" in r.json()["detail"]
        assert c.get("/v1/datasets").status_code == 403
    recs = [r for r in audit_since(served, start) if r.who == "mallory"]
    assert len(recs) == 2 and all(not r.allowed and r.detail == "certificate revoked" for r in recs)


@pytest.mark.parametrize("path", [
    "/v1/clips/%2e%2e",
    "/v1/clips/..%2f..%2fsite.json",
    "/v1/clips/%2e%2e%2fkeys%2fpseudonym.key",
    "/v1/clips/a%00b",
    "/v1/clips/" + "9" * 300,
    "/v1/datasets/..%2fcohort-b/clips",
    "/v1/datasets/%2e%2e/clips",
    "/v1/datasets/cohort-a/clips?split=../../etc",
    "/../../site.json",
    "/v1/objects/00",
])  # fmt: skip
def test_path_and_id_tricks_get_4xx(served: Served, path: str) -> None:
    with served.client("alice") as c:
        r = c.get(path)
    assert 400 <= r.status_code < 500, (path, r.status_code)
    assert r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(("body", "status"), [
    (b"not json", 400),
    (b'{"ids": "1.2"}', 400),
    (b'{"ids": []}', 400),
    (b'{"ids": ["../../x"]}', 400),
    (b'{"ids": ["1.2", "1.2"]}', 400),
    (b'{"ids": ["1.2"], "accept": "zstd"}', 400),
    (b'["1.2"]', 400),
    (json.dumps({"ids": [f"1.{i}" for i in range(9)]}).encode(), 413),  # max_batch is 8
    (json.dumps({"ids": ["1." + "2" * 100] * 50}).encode(), 413),  # body over 4096 bytes
])  # fmt: skip
def test_bad_batches_get_a_reason(served: Served, body: bytes, status: int) -> None:
    with served.client("alice") as c:
        r = c.post("/v1/clips:batch", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and r.json()["detail"]


def test_an_id_with_a_lone_surrogate_is_refused_and_audited(served: Served) -> None:
    start = head(served)
    body = b'{"ids": ["1.2\\ud800"]}'  # JSON for a lone surrogate
    with served.client("alice") as c:
        r = c.post("/v1/clips:batch", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed clip id" in r.json()["detail"]
    [rec] = audit_since(served, start)
    assert (rec.who, rec.status, rec.allowed) == ("alice", 400, False)
    assert AuditLog(served.site).verify() == []


def test_a_body_declared_over_the_limit_is_refused_before_it_is_sent(served: Served) -> None:
    import socket
    from urllib.parse import urlsplit

    from echoscreen.datasite.tls import client_context

    d, url = served.ids["alice"], urlsplit(served.url)
    ctx = client_context(str(d / "ca.crt"), str(d / "client.crt"), str(d / "client.key"))
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock, \
            ctx.wrap_socket(sock, server_hostname=url.hostname) as tls:  # fmt: skip
        tls.sendall(b"POST /v1/clips:batch HTTP/1.1\r\nHost: x\r\nContent-Type: "
                    b"application/json\r\nContent-Length: 1000000000\r\n\r\n{")  # fmt: skip
        answer = b""  # at once: the server waited for the gigabyte before
        while b"}" not in answer and (chunk := tls.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ") and b"request body over" in answer


def test_tampered_object_gives_409_never_pixels(served: Served) -> None:
    cid = sorted(served.truth["cohort-t"])[0]
    tamper(served.site, cid)
    start = head(served)
    with served.client("alice") as c:
        one = c.get(f"/v1/clips/{cid}")
        both = c.post("/v1/clips:batch", json={"ids": sorted(served.truth["cohort-t"])})
    for r in (one, both):
        assert r.status_code == 409 and "integrity" in r.json()["detail"]
        assert b"NUMPY" not in r.content
    assert [r.status for r in audit_since(served, start)] == [409, 409]


def test_rate_limit_gives_429_with_retry_after(served: Served) -> None:
    limits = Limits(max_batch=8, rate=0.5, burst=3)
    clip = next(iter(served.truth["cohort-a"]))
    with running(ServerConfig(served.site.path, port=0, limits=limits)) as url:
        served_slow = Served(url, served.site, served.root, served.ids, served.truth)
        with served_slow.client("alice") as c:
            codes = [c.get(f"/v1/clips/{clip}") for _ in range(5)]
    assert [r.status_code for r in codes[:3]] == [200, 200, 200]
    limited = codes[3]
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert "rate limit" in limited.json()["detail"]


def test_datasite_ls_lists_what_the_identity_may_read(served: Served) -> None:
    from tests.cli import ok

    text = ok("datasite", "ls", "--url", served.url, "--identity", str(served.ids["bob"]))
    assert "cohort-b" in text and "cohort-a" not in text and "bob" in text
    none = ok("datasite", "ls", "--url", served.url, "--identity", str(served.ids["carol"]))
    assert f"no dataset is granted to carol at {served.url}: the data site grants one with " \
           "`echoscreen site grant carol DATASET`" in none and "studies" not in none


@pytest.mark.parametrize(("raw", "status"), [
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
    # a head still incomplete after 32 KiB (two whole TLS records: nothing left unread)
    (b"GET /v1/session HTTP/1.1\r\nHost: x\r\nX-Big: ".ljust(32768, b"a"), 431),
    (b"GET /v1/\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400),
])  # fmt: skip
def test_malformed_http_gets_4xx_and_the_connection_closes(served: Served, raw: bytes,
                                                           status: int) -> None:  # fmt: skip
    import socket
    from urllib.parse import urlsplit

    from echoscreen.datasite.tls import client_context

    d, url = served.ids["alice"], urlsplit(served.url)
    ctx = client_context(str(d / "ca.crt"), str(d / "client.crt"), str(d / "client.key"))
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock, \
            ctx.wrap_socket(sock, server_hostname=url.hostname) as tls:  # fmt: skip
        tls.sendall(raw)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk  # the server closes after answering
    assert answer.startswith(b"HTTP/1.1 %d " % status) and b'"detail"' in answer


def test_the_audit_chain_of_everything_above_verifies(served: Served) -> None:
    log = AuditLog(served.site)
    assert log.verify() == []
    recs = log.records()
    assert {r.who for r in recs} >= {"alice", "bob", "carol", "mallory", "unauthenticated",
                                     "site-admin"}  # fmt: skip
    served_bytes = sum(r.nbytes for r in recs if r.allowed and r.action.startswith("GET /v1/clips"))
    assert served_bytes > 0
