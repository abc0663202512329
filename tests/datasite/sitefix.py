"""A populated data site with a PKI, identities and a real mTLS server on loopback.

Shared by ``tests/datasite`` and ``tests/data`` (their conftest files import the
fixtures). The site is filled through the store's own APIs with random uint8 clip
tensors (3, 16, 64, 64), stored encrypted exactly as ingest stores them
(:func:`echoscreen.store.tensors.put`), so every pixel a test receives can be compared
with truth. Even clips are black outside a sector, as echo frames are, and so are
stored zstd-compressed; odd clips are random throughout and stay ``.npy``: every
batch of two or more holds both forms.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from echoscreen.datasite import access, pki
from echoscreen.datasite.limits import Limits
from echoscreen.datasite.server import ServerConfig, running
from echoscreen.datasite.tls import client_context
from echoscreen.store import tensors
from echoscreen.store.catalog import add_to_dataset
from echoscreen.store.schema import Clip, Study
from echoscreen.store.site import Site

SHAPE = (3, 16, 64, 64)
_YY, _XX = np.mgrid[:64, :64]
#: a 60-degree image sector with its apex at the top, as echo frames have
SECTOR = (_YY > 2) & (np.abs(_XX - 32) < _YY * np.tan(np.pi / 6))


def populate(site: Site, dataset: str, prefix: str, n_studies: int, clips_per_study: int,
             rng: np.random.Generator) -> dict[str, np.ndarray]:  # fmt: skip
    """Add studies with random clip tensors to ``dataset``; returns clip id -> tensor."""
    truth: dict[str, np.ndarray] = {}
    labels = ("normal", "borderline", "definite", None)
    with site.catalog.session() as s:
        for i in range(n_studies):
            sid = f"{prefix}.{i + 1}"
            s.add(Study(id=sid, patient=f"{prefix}-p{i}", label=labels[i % 4], sex="F",
                        age_years=10.0 + i, n_clips=clips_per_study))  # fmt: skip
            s.flush()
            for j in range(clips_per_study):
                arr = rng.integers(0, 256, SHAPE, dtype=np.uint8)
                if j % 2 == 0:
                    arr[..., ~SECTOR] = 0
                stored = tensors.put(site.objects, arr)
                cid = f"{sid}.{j + 1}"
                s.add(Clip(id=cid, study_id=sid, view=("PLAX", "A4C")[j % 2],
                           doppler=bool(j % 2), n_frames=SHAPE[1], fps=30.0, rows=64, cols=64,
                           transfer_syntax="1.2.840.10008.1.2.1",
                           dicom_object=stored["tensor_object"], **stored))  # fmt: skip
                truth[cid] = arr
            add_to_dataset(s, dataset, sid)
    return truth


def tamper(site: Site, cid: str) -> None:
    """Flip one bit in the middle of clip ``cid``'s stored (encrypted) tensor object."""
    with site.catalog.session() as s:
        oid = s.get(Clip, cid).tensor_object  # type: ignore[union-attr]
    path = site.objects.path(oid)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))


@dataclass
class Served:
    """A running data server and everything the tests need around it."""

    url: str
    site: Site
    root: Path
    ids: dict[str, Path]  # tenant -> identity folder (also "foreign": another CA)
    truth: dict[str, dict[str, np.ndarray]]  # dataset -> clip id -> tensor

    def client(self, who: str) -> httpx.Client:
        """An HTTPS client presenting ``who``'s identity."""
        d = self.ids[who]
        ctx = client_context(str(d / "ca.crt"), str(d / "client.crt"), str(d / "client.key"))
        return httpx.Client(base_url=self.url, verify=ctx, timeout=30)

    def anonymous(self) -> httpx.Client:
        """An HTTPS client that trusts the site CA but presents no certificate."""
        ctx = ssl.create_default_context(cafile=str(self.ids["alice"] / "ca.crt"))
        return httpx.Client(base_url=self.url, verify=ctx, timeout=30)


def make_site(root: Path) -> tuple[Site, dict[str, Path], dict[str, dict[str, np.ndarray]]]:
    """Site with datasets cohort-a (alice), cohort-b (bob), cohort-t (alice, for tampering);
    tenants carol (no grant) and mallory (revoked later by a test); a foreign-CA identity."""
    rng = np.random.default_rng(7)
    site = Site.init(root / "site")
    truth = {
        "cohort-a": populate(site, "cohort-a", "1.2.826.0.1.1", 4, 2, rng),
        "cohort-b": populate(site, "cohort-b", "1.2.826.0.1.2", 2, 2, rng),
        "cohort-t": populate(site, "cohort-t", "1.2.826.0.1.3", 1, 2, rng),
    }
    pki.init_pki(site.path)
    ids = {t: pki.issue(site, t, root / "ids" / t).folder
           for t in ("alice", "bob", "carol", "mallory")}  # fmt: skip
    for tenant, ds in (("alice", "cohort-a"), ("bob", "cohort-b"), ("alice", "cohort-t"),
                       ("mallory", "cohort-a")):  # fmt: skip
        access.grant(site, tenant, ds)
    other = Site.init(root / "other-site")
    pki.init_pki(other.path)
    ids["foreign"] = pki.issue(other, "alice", root / "ids" / "foreign").folder
    other.close()
    return site, ids, truth


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A real mTLS data server on a free loopback port over a freshly made site."""
    root = tmp_path_factory.mktemp("datasite")
    site, ids, truth = make_site(root)
    limits = Limits(max_batch=8, rate=10_000, burst=10_000, max_body=4096)
    with running(ServerConfig(site.path, port=0, limits=limits)) as url:
        yield Served(url, site, root, ids, truth)
    site.close()
