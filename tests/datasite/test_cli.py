"""`echoscreen pki ...`, `site grant/revoke-grant`, `datasite serve` through the console entry."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from sqlalchemy import select
from tests.cli import fails, ok
from tests.datasite.sitefix import SHAPE, populate

from echoscreen.datasite import pki
from echoscreen.datasite.access import grants
from echoscreen.datasite.schema import IssuedCert, Tenant
from echoscreen.datasite.tls import client_context
from echoscreen.store.site import Site


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_pki_and_grants_end_to_end(tmp_path: Path) -> None:
    import numpy as np

    site = tmp_path / "site"
    ok("site", "init", str(site))
    with Site.open(site) as s:
        populate(s, "cohort", "1.2.9", 2, 1, np.random.default_rng(0))
    fails("datasite", "serve", "--site", str(site), "--port", "1", match="pki init")
    fails("datasite", "serve", "--site", str(tmp_path / "nosite"), match="site init")
    fails("pki", "issue", "alice", "--site", str(site), "--out", str(tmp_path / "a"),
          match="pki init")  # fmt: skip
    ok("pki", "init", "--site", str(site), "--san", "data.hospital.example")
    fails("pki", "init", "--site", str(site), match="never overwritten")
    assert _mode(site / "pki" / "ca.key") == 0o600 and _mode(site / "pki" / "server.key") == 0o600
    srv = x509.load_pem_x509_certificate((site / "pki" / "server.crt").read_bytes())
    sans = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "data.hospital.example" in sans.get_values_for_type(x509.DNSName)
    fails("pki", "issue", "Alice/..", "--site", str(site), "--out", str(tmp_path / "x"),
          match="invalid tenant name")  # fmt: skip
    ok("pki", "issue", "alice", "--site", str(site), "--out", str(tmp_path / "a"))
    assert _mode(tmp_path / "a" / "client.key") == 0o600
    cert = x509.load_pem_x509_certificate((tmp_path / "a" / "client.crt").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=alice"
    fails("site", "grant", "alice", "nope", "--site", str(site), match="no dataset")
    fails("site", "grant", "zed", "cohort", "--site", str(site), match="no tenant")
    ok("site", "grant", "alice", "cohort", "--site", str(site))
    # a typo'd revocation is refused, not reported as done while the real grant stays
    fails("site", "revoke-grant", "alcie", "cohort", "--site", str(site), match="no tenant")
    fails("site", "revoke-grant", "alice", "cohrot", "--site", str(site), match="no dataset")
    with Site.open(site) as s:
        assert grants(s) == [("alice", "cohort")]
    proc = subprocess.Popen([sys.executable, "-m", "echoscreen", "datasite", "serve", "--site",
                             str(site), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    watchdog = threading.Timer(120, proc.kill)  # a server that never says where it is
    watchdog.start()
    try:
        assert proc.stderr is not None  # the CLI's messages go to stderr
        line = proc.stderr.readline()  # printed once the port is bound: the one bound
        watchdog.cancel()
        found = re.search(r"data server on https://127\.0\.0\.1:(\d+) ", line)
        assert found and int(found.group(1)) > 0, line
        port = int(found.group(1))
        a = tmp_path / "a"
        ctx = client_context(str(a / "ca.crt"), str(a / "client.crt"), str(a / "client.key"))
        with httpx.Client(base_url=f"https://localhost:{port}", verify=ctx) as c:
            for _ in range(100):
                try:
                    r = c.get("/v1/datasets/cohort/clips")
                    break
                except httpx.ConnectError:
                    time.sleep(0.1)
            assert [x["shape"] for x in r.json()["clips"]] == [list(SHAPE)] * 2
            # a second server on the same port, or on an address not this machine's
            fails("datasite", "serve", "--site", str(site), "--port", str(port),
                  match=f"error: cannot listen on 127.0.0.1:{port}: the port is in use (is "
                        "another server running there?); stop it, or choose another --port "
                        "(0: any free one)")  # fmt: skip
            fails("datasite", "serve", "--site", str(site), "--host", "256.1.1.1",
                  match="cannot listen on 256.1.1.1:8443: 256.1.1.1 is not an address of this "
                        "machine; use 127.0.0.1")  # fmt: skip
            ok("site", "revoke-grant", "alice", "cohort", "--site", str(site))
            assert c.get("/v1/datasets/cohort/clips").status_code == 404
            ok("pki", "revoke", "alice", "--site", str(site))
            assert c.get("/v1/datasets").status_code == 403
    finally:
        watchdog.cancel()
        proc.terminate()
        proc.wait(timeout=20)
    text = ok("site", "audit", "--site", str(site), "--verify", "--last", "0")
    for action in ("pki-issue", "grant", "revoke-grant", "pki-revoke", "GET /v1/datasets"):
        assert action in text


def test_pki_issue_that_cannot_write_its_bundle_records_nothing(tmp_path: Path) -> None:
    with Site.init(tmp_path / "site") as site:
        pki.init_pki(site.path)
        out = tmp_path / "id"
        (out / "ca.crt").mkdir(parents=True)  # the last file of the bundle cannot be written
        with pytest.raises(OSError):
            pki.issue(site, "carol", out)
        assert sorted(p.name for p in out.iterdir()) == ["ca.crt"]  # key and cert removed
        with site.catalog.session() as s:
            assert s.scalars(select(IssuedCert.serial)).all() == []
            assert s.get(Tenant, "carol") is None


def test_pki_issue_never_overwrites_a_bundle(tmp_path: Path) -> None:
    site = tmp_path / "site"
    ok("site", "init", str(site))
    ok("pki", "init", "--site", str(site))
    other = tmp_path / "other-site-id"
    other.mkdir()
    (other / "ca.crt").write_text("the CA of another site")  # ca.crt alone was overwritten
    fails("pki", "issue", "alice", "--site", str(site), "--out", str(other),
          match="already holds ca.crt")  # fmt: skip
    assert (other / "ca.crt").read_text() == "the CA of another site"
    assert sorted(p.name for p in other.iterdir()) == ["ca.crt"]
    ok("pki", "issue", "alice", "--site", str(site), "--out", str(tmp_path / "a"))
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    fails("pki", "issue", "bob", "--site", str(site), "--out", str(tmp_path / "a"),
          match="already holds client.crt, client.key, ca.crt")  # fmt: skip
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == before
    assert "pki-issue" in ok("site", "audit", "--site", str(site))
    assert "bob" not in ok("site", "audit", "--site", str(site), "--last", "0")
