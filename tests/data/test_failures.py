"""How the compute side fails when the data server is gone, silent, or refuses the identity.

Real mTLS on loopback: the real data server (stopped under a dataset in use), a real
socket that accepts and never answers (before TLS, and after a TLS handshake with the
site's own certificate), and identities the server refuses (an expired certificate of
this site's CA, a certificate of another site's CA). Each failure is one
``DatasiteError`` line that names the server and says what to do.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tests.datasite.sitefix import Served, make_site

from echoscreen.data import ClipDataset, RemoteSite
from echoscreen.datasite import pki
from echoscreen.datasite.limits import Limits
from echoscreen.datasite.schema import IssuedCert
from echoscreen.datasite.server import ServerConfig, free_port, running
from echoscreen.datasite.tls import server_context
from echoscreen.errors import DatasiteError


def test_a_server_stopped_under_a_dataset_in_use_is_named_with_what_to_do(
    tmp_path: Path,
) -> None:
    site, ids, truth = make_site(tmp_path)
    cfg = ServerConfig(site.path, port=free_port(), limits=Limits(max_batch=8))
    url = f"https://127.0.0.1:{cfg.port}"
    refused = rf"nothing is listening at {url} \(connection refused\): .*start it"
    try:
        with running(cfg):
            ds = ClipDataset(RemoteSite(url, ids["alice"]), "cohort-a", None, cache_bytes=0)
            x, meta = ds[0]
            assert np.array_equal(x.numpy(), truth["cohort-a"][meta["clip"]])
        with ds:  # the pooled socket is dead and nothing listens: one clear error
            with pytest.raises(DatasiteError, match=refused):
                ds[1]
            with pytest.raises(DatasiteError, match=refused):
                ds.source.datasets()
    finally:
        site.close()


def _both_pools_raise(remote: RemoteSite, expect: str) -> None:
    """A JSON request (httpx) and a clip batch (the batch socket pool) both raise
    ``expect``; closes ``remote``."""
    try:
        with pytest.raises(DatasiteError, match=expect):
            remote.datasets()
        remote._session = {"limits": {"max_batch": 8}}  # straight to the batch socket pool
        with pytest.raises(DatasiteError, match=expect):
            remote.fetch(["1.2.826.0.1.1.1.1"])
    finally:
        remote.close()


def _accepting(handle: Callable[[socket.socket], object]) -> tuple[str, socket.socket]:
    """A loopback listener whose accept loop (a daemon thread, ended by closing the
    listener) hands each connection to ``handle``; returns its URL and the listener."""
    listener = socket.create_server(("127.0.0.1", 0))

    def loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                handle(conn)
            except (OSError, ssl.SSLError):
                conn.close()

    threading.Thread(target=loop, daemon=True).start()
    return f"https://127.0.0.1:{listener.getsockname()[1]}", listener


@pytest.fixture(params=["before TLS", "after TLS"])
def silent(request: pytest.FixtureRequest, served: Served) -> Iterator[str]:
    """A listener that accepts every connection and never answers: before TLS (a bare
    TCP accept), or after completing the TLS handshake with the site's certificate."""
    tls = request.param == "after TLS"
    ctx = server_context(pki.require_pki(served.site.path))
    held: list[socket.socket] = []
    url, listener = _accepting(
        lambda conn: held.append(ctx.wrap_socket(conn, server_side=True) if tls else conn))
    yield url
    listener.close()
    for s in held:
        s.close()


def test_a_server_that_never_answers_times_out_with_a_clear_line(
    served: Served, silent: str
) -> None:
    late = rf"the data server at {silent} did not answer within 1 s: check that it is running"
    start = time.monotonic()
    _both_pools_raise(RemoteSite(silent, served.ids["alice"], timeout_s=1), late)
    assert time.monotonic() - start < 10


def test_a_server_that_does_not_speak_tls_1_3_is_not_blamed_on_the_identity(
    served: Served,
) -> None:
    """A TLS 1.2 server (the site's certificate): not an echoscreen data server, so the
    URL is wrong; its protocol alert is no refusal of the identity's certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    paths = pki.require_pki(served.site.path)
    ctx.load_cert_chain(str(paths.server_cert), str(paths.server_key))
    url, listener = _accepting(lambda conn: ctx.wrap_socket(conn, server_side=True).close())
    try:
        _both_pools_raise(RemoteSite(url, served.ids["alice"]), rf"the server at {url} does not "
                          r"speak TLS 1\.3 \(.*PROTOCOL_VERSION.*\): it is not")  # fmt: skip
    finally:
        listener.close()


def _identity(served: Served, out: Path, not_after: datetime) -> Path:
    """An identity of alice signed by the site's CA and on record, valid until
    ``not_after`` (from 400 days ago)."""
    paths = pki.pki_paths(served.site.path)
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key, now = ec.generate_private_key(ec.SECP256R1()), datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
        .issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=400)).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    der = cert.public_bytes(serialization.Encoding.DER)
    with served.site.catalog.session() as s:
        s.add(IssuedCert(serial=pki.cert_serial(cert), tenant="alice",
                         fingerprint=hashlib.sha256(der).hexdigest(),
                         not_after=cert.not_valid_after_utc))  # fmt: skip
    out.mkdir()
    (out / "client.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    (out / "client.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    shutil.copy(paths.ca_cert, out / "ca.crt")
    return out


def test_an_identity_the_server_refuses_at_tls_is_named_with_what_to_do(
    served: Served, tmp_path: Path
) -> None:
    expired = _identity(served, tmp_path / "expired", datetime.now(UTC) - timedelta(days=35))
    day = (datetime.now(UTC) - timedelta(days=35)).strftime("%Y-%m-%d")
    mixed = tmp_path / "mixed"  # another site's certificate and key beside this site's CA
    shutil.copytree(served.ids["foreign"], mixed)
    shutil.copy(served.ids["alice"] / "ca.crt", mixed / "ca.crt")
    cases = {
        expired: rf"refused the identity in {expired}: its certificate expired on {day}; "
                 r"ask the data site for a new one \(`echoscreen pki issue",
        mixed: rf"refused the certificate of the identity in {mixed} \(.*UNKNOWN_CA.*\): it is "
               "not one this site issued",
        served.ids["foreign"]: rf"the server at {served.url} is not one the identity in "
                               rf"{served.ids['foreign']} trusts \(.*\): the identity is from "
                               "another site",
    }  # fmt: skip
    for identity, expect in cases.items():
        _both_pools_raise(RemoteSite(served.url, identity), expect)


def test_a_certificate_that_expires_while_a_run_reads_is_refused_on_its_open_connection(
    served: Served, tmp_path: Path
) -> None:
    """TLS checks expiry at the handshake only; a keep-alive connection of a long run
    outlives it. The server refuses the next request on that same connection (403), as
    it does a revocation, and the client says to ask for a new identity."""
    for window in (3, 15, 60):  # a loaded machine may need longer than 3 s to read one clip
        until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=window)
        identity = _identity(served, tmp_path / f"short-{window}", until)
        source, ds = RemoteSite(served.url, identity), None
        try:
            ds = ClipDataset(source, "cohort-a", None, cache_bytes=0)
            x, meta = ds[0]
        except DatasiteError:
            ds.close() if ds is not None else source.close()
            if datetime.now(UTC) < until:
                raise
            continue  # it expired before its first connection: try a longer window
        break
    else:
        pytest.fail("no window let a clip be read before the certificate expired")
    assert ds is not None
    with ds:
        assert np.array_equal(x.numpy(), served.truth["cohort-a"][meta["clip"]])
        pooled = list(ds.source.blocks._idle)
        time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1.0)
        with pytest.raises(DatasiteError, match=(
                rf"refused POST /v1/clips:batch \(403\): certificate expired on "
                rf"{until:%Y-%m-%d %H:%M:%S} UTC; this identity is no longer accepted: ask the "
                r"data site for a new one")):  # fmt: skip
            ds[1]
        assert pooled and ds.source.blocks._idle == pooled  # refused on the open connection


def test_a_server_certificate_the_client_cannot_accept_is_named(tmp_path: Path) -> None:
    """The URL's host is not one the server's certificate names, and the server's own
    certificate has expired: each says so, not that the identity is another site's."""
    site, ids, _ = make_site(tmp_path)
    try:
        with running(ServerConfig(site.path, host="127.0.0.2", port=0)) as url:
            assert url.startswith("https://127.0.0.2:")
            with pytest.raises(DatasiteError, match=(
                    rf"the certificate of the data server at {url} is not issued for the host "
                    r"name in the URL \(.*\): use a host name it names")):  # fmt: skip
                RemoteSite(url, ids["alice"]).datasets()
        paths = pki.pki_paths(site.path)
        ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        old = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        now = datetime.now(UTC)
        expired = (
            x509.CertificateBuilder().subject_name(old.subject).issuer_name(ca.subject)
            .public_key(old.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=900)).not_valid_after(now - timedelta(days=1))
            .add_extension(old.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value, critical=False)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        paths.server_cert.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
        with running(ServerConfig(site.path, port=0)) as url, pytest.raises(
                DatasiteError, match=rf"the certificate of the data server at {url} expired: "
                "the data site must renew"):  # fmt: skip
            RemoteSite(url, ids["alice"]).datasets()
    finally:
        site.close()


def test_ranks_starved_by_the_rate_limit_give_up_with_what_to_do(tmp_path: Path) -> None:
    """Two readers of one tenant (DDP ranks): one keeps taking small batches as tokens
    come back, so the other's larger batch never finds enough and its retries run out."""
    site, ids, truth = make_site(tmp_path)
    limits = Limits(max_batch=8, rate=4, burst=8)
    cids = sorted(truth["cohort-a"])
    stop, going = threading.Event(), threading.Event()
    try:
        with running(ServerConfig(site.path, port=0, limits=limits)) as url:
            greedy = RemoteSite(url, ids["alice"], retries=1000)

            def take() -> None:
                while not stop.is_set():
                    greedy.fetch(cids[:2])
                    going.set()

            thread = threading.Thread(target=take, daemon=True)
            thread.start()
            assert going.wait(10)
            starved = RemoteSite(url, ids["alice"], retries=2)
            try:
                start = time.monotonic()
                gave_up = (rf"the data server at {url} still refused POST /v1/clips:batch over "
                           r"the tenant's rate limit \(rate limit: 4 clips/s per tenant\) after 2 "
                           r"retries over \d+ s: .*fewer ranks.*`datasite serve --rate`")
                with pytest.raises(DatasiteError, match=gave_up):
                    starved.fetch(cids)
                assert time.monotonic() - start < 15
            finally:
                stop.set()
                thread.join(10)
                starved.close()
                greedy.close()
    finally:
        site.close()


@pytest.mark.parametrize("locked", ["client.key", "client.crt", "ca.crt"])
def test_an_identity_file_that_cannot_be_read_is_named(served: Served, tmp_path: Path,
                                                       locked: str) -> None:  # fmt: skip
    """``train`` from a data server, with permissions applying (the CLI runs without
    root's file capabilities): the one line names the file that cannot be read, not a
    bare errno. (A folder that cannot be read is refused by the --identity option.)"""
    from tests.cli import fails

    bundle = tmp_path / "id"
    shutil.copytree(served.ids["alice"], bundle)
    (bundle / locked).chmod(0)
    want = (f"cannot read {bundle / locked} of the identity in {bundle} (Permission denied): "
            "make the bundle's files readable")
    fails("train", "view", "--data", served.url, "--identity", str(bundle), "--dataset",
          "cohort-a", "--run", str(tmp_path / "run"), match=want, permissions=True)


def test_grant_or_identity_revoked_while_a_run_reads_says_what_to_do(served: Served) -> None:
    """A dataset in use whose grant is revoked (404 for clips listed at the start), and
    one whose identity is revoked (403), each fail in one line naming the server, the
    refusal and what to ask the data site for; nothing of the refused clips is handed out."""
    from echoscreen.datasite import access

    cases = {
        "bob": (lambda: access.revoke_grant(served.site, "bob", "cohort-b"), "cohort-b",
                rf"the data server at {served.url} refused POST /v1/clips:batch \(404\): no "
                r"clip '.*' in the datasets granted to you; clips listed when this run started "
                r"are no longer granted .*`echoscreen site grant TENANT DATASET`"),
        "mallory": (lambda: pki.revoke(served.site, "mallory"), "cohort-a",
                    rf"the data server at {served.url} refused POST /v1/clips:batch \(403\): "
                    r"certificate revoked; this identity is no longer accepted: ask the data "
                    r"site for a new one \(`echoscreen pki issue"),
    }  # fmt: skip
    try:
        for who, (revoke, dataset, expect) in cases.items():
            with ClipDataset(RemoteSite(served.url, served.ids[who]), dataset, None,
                             cache_bytes=0) as ds:  # fmt: skip
                x, meta = ds[0]
                assert np.array_equal(x.numpy(), served.truth[dataset][meta["clip"]])
                revoke()
                with pytest.raises(DatasiteError, match=expect):
                    ds.__getitems__([1, 2])
    finally:
        access.grant(served.site, "bob", "cohort-b")


def test_a_ddp_rank_refused_by_the_data_server_stops_every_rank_in_one_line_each(
    tmp_path: Path,
) -> None:
    """torchrun with 2 CPU ranks reading from the data server; one training clip fails
    its integrity check at the site (409), so the rank whose shard holds it stops with
    the server's reason, and the other, whose next collective finds its peer gone, says
    so in one line instead of gloo's traceback."""
    import os
    import subprocess
    import sys

    from tests.datasite.sitefix import tamper
    from tests.train.sitefix import make_site as make_phantom_site

    from echoscreen.data import LocalSite
    from echoscreen.datasite import access
    from echoscreen.store.site import Site

    path = make_phantom_site(tmp_path, 8)
    with Site.open(path) as site:
        pki.init_pki(site.path)
        identity = pki.issue(site, "trainer", tmp_path / "id").folder
        access.grant(site, "trainer", "ph")
        tamper(site, LocalSite(path).clips("ph", "train")[0].id)
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    with running(ServerConfig(path, port=0, limits=Limits(max_batch=8))) as url:
        res = subprocess.run(
            [torchrun, "--nproc-per-node", "2", "--standalone", "-m", "echoscreen", "train",
             "view", "--data", url, "--identity", str(identity), "--dataset", "ph", "--run-dir",
             str(tmp_path / "run"), "--epochs", "1", "--batch-size", "2", "--frames", "8",
             "--size", "32", "--no-progress"],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert re.search(rf"error: (the data server at {url} refused POST /v1/clips:batch \(409\)"
                     rf"|the data server at {url} cut its answer short)", out), out  # fmt: skip
    assert "error: rank 1 of 2 stopped because another rank" in out or \
        "error: rank 0 of 2 stopped because another rank" in out, out  # fmt: skip
    assert not re.search(r"\[rank\d\]: Traceback", out), out
