"""Envelope encryption and the object store: confidentiality, integrity, atomicity, rotation."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from echoscreen.errors import IntegrityError, StoreError
from echoscreen.store.crypto import parse_header
from echoscreen.store.keys import LocalKeyProvider
from echoscreen.store.site import Site

MARKER = b"DOE^JANE^RHD-SECRET-1234567"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site.init(tmp_path / "site")
    yield s
    s.close()


def _flip(path: Path, pos: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[pos] ^= 0x01
    path.write_bytes(bytes(blob))


def test_roundtrip_idempotent_and_keyed_ids(site: Site) -> None:
    data = os.urandom(50_000)
    oid = site.objects.put(data)
    path = site.objects.path(oid)
    first = path.read_bytes()
    assert site.objects.put(data) == oid  # same content, same id, no rewrite
    assert path.read_bytes() == first
    assert site.objects.get(oid) == data
    view = site.objects.read(oid)  # the in-place, no-copy training read path
    assert view.readonly and bytes(view) == data
    assert oid != hashlib.sha256(data).hexdigest()  # keyed, not a plain hash
    assert site.objects.exists(oid)
    assert list(site.objects.ids()) == [oid]
    site.objects.delete(oid)
    assert not site.objects.exists(oid)
    with pytest.raises(StoreError, match="no object"):
        site.objects.get(oid)
    with pytest.raises(StoreError, match="no object"):
        site.objects.read(oid)


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "A" * 64, "g" * 64, "/" + "a" * 63, "ab", "a" * 65, ""]
)
def test_malformed_ids_are_refused(site: Site, bad: str) -> None:
    with pytest.raises(StoreError, match="malformed object id"):
        site.objects.get(bad)
    assert not site.objects.exists(bad)


def test_nothing_in_the_site_is_plaintext(site: Site) -> None:
    """Recognisable plaintext (a name, a pixel pattern) appears in no file of the site."""
    pixels = np.tile(np.arange(256, dtype=np.uint8), 4096)  # a very recognisable ramp
    ids = [site.objects.put(MARKER * 200), site.objects.put(pixels.tobytes())]
    ids.append(site.objects.put(b"\x00" * 100_000))  # long runs of zeros as well
    needles = [MARKER, pixels[:64].tobytes(), MARKER.decode().encode("utf-16-le")]
    files = [p for p in site.path.rglob("*") if p.is_file()]
    assert len(files) >= 6  # keys, site.json, catalog, 3 objects
    for f in files:
        blob = f.read_bytes()
        for needle in needles:
            assert needle not in blob, f"plaintext found in {f}"
        if site.objects.root in f.parents:
            assert b"\x00" * 32 not in blob  # the zeros object is not stored as zeros
    assert all(site.objects.get(i) for i in ids)


def test_every_tampered_byte_is_detected(site: Site) -> None:
    data = MARKER * 100
    oid = site.objects.put(data)
    path = site.objects.path(oid)
    pristine = path.read_bytes()
    h = parse_header(pristine)
    klen = len(h.key_id)
    positions = {
        "magic": 0, "version": 4, "key id length": 5, "key id": 6 + klen // 2,
        "wrapped length": 7 + klen, "wrapped key": 8 + klen + 10, "nonce": h.body_offset - 3,
        "body start": h.body_offset, "body middle": (h.body_offset + len(pristine)) // 2,
        "tag": len(pristine) - 1,
    }  # fmt: skip
    for what, pos in positions.items():
        path.write_bytes(pristine)
        _flip(path, pos)
        with pytest.raises(IntegrityError):
            site.objects.get(oid)
        with pytest.raises(IntegrityError):
            site.objects.read(oid)
        failures = site.objects.verify()
        assert [f[0] for f in failures] == [oid], what
    for damaged in (pristine[:-1], pristine + b"x", pristine[:20]):
        path.write_bytes(damaged)
        for read in (site.objects.get, site.objects.read):
            with pytest.raises(IntegrityError):
                read(oid)
    path.write_bytes(pristine)
    assert site.objects.get(oid) == data and site.objects.verify() == []


def test_object_moved_to_another_id_fails(site: Site) -> None:
    a, b = site.objects.put(b"study A" * 50), site.objects.put(b"study B" * 50)
    site.objects.path(b).write_bytes(site.objects.path(a).read_bytes())
    with pytest.raises(IntegrityError, match="authentication"):
        site.objects.get(b)
    with pytest.raises(IntegrityError, match="authentication"):
        site.objects.read(b)


def test_wrapped_key_is_bound_to_its_kek_id(tmp_path: Path) -> None:
    keys = LocalKeyProvider.create(tmp_path / "keys")
    first = keys.active_key_id
    dek = os.urandom(32)
    kid, wrapped = keys.wrap(dek)
    assert keys.unwrap(kid, wrapped) == dek
    second = keys.rotate()
    assert keys.unwrap(first, wrapped) == dek  # old KEK still there until retired
    with pytest.raises(IntegrityError):
        keys.unwrap(second, wrapped)
    keys.retire(first)
    with pytest.raises(StoreError, match="retired or lost"):
        LocalKeyProvider(tmp_path / "keys").unwrap(first, wrapped)


def test_key_files_are_owner_only_and_checked(site: Site) -> None:
    key_dir = site.path / "keys"
    assert (key_dir.stat().st_mode & 0o777) == 0o700
    for f in key_dir.iterdir():
        assert (f.stat().st_mode & 0o777) == 0o600, f
    kek = key_dir / f"kek-{site.keys.active_key_id}.key"
    kek.chmod(0o644)
    with pytest.raises(StoreError, match="chmod 600"):
        Site.open(site.path)


def test_rotation_rewraps_headers_only_and_retires_old_kek(site: Site) -> None:
    blobs = {site.objects.put(os.urandom(10_000) + bytes([i])): b"" for i in range(5)}
    old_key = site.keys.active_key_id
    bodies = {}
    for oid in blobs:
        raw = site.objects.path(oid).read_bytes()
        blobs[oid] = raw
        bodies[oid] = raw[parse_header(raw).body_offset - 12 :]  # nonce + ciphertext + tag
    plain = {oid: site.objects.get(oid) for oid in blobs}
    rot = site.rotate_key()
    assert rot.rewrapped == 5 and rot.retired == [old_key] and rot.kept == []
    assert not (site.path / "keys" / f"kek-{old_key}.key").exists()
    for oid in blobs:
        raw = site.objects.path(oid).read_bytes()
        assert parse_header(raw).key_id == rot.new_key_id
        assert raw[parse_header(raw).body_offset - 12 :] == bodies[oid]  # data not re-encrypted
    with Site.open(site.path) as reopened:
        assert {oid: reopened.objects.get(oid) for oid in blobs} == plain
        assert reopened.verify() == []


def test_rotation_keeps_a_kek_a_damaged_object_still_names(site: Site) -> None:
    good, bad = site.objects.put(b"good" * 100), site.objects.put(b"bad" * 100)
    old_key = site.keys.active_key_id
    raw = site.objects.path(bad).read_bytes()
    _flip(site.objects.path(bad), 6 + len(old_key) + 2 + 5)  # inside the wrapped key
    rot = site.rotate_key()
    assert rot.rewrapped == 1 and rot.kept == [old_key] and rot.retired == []
    assert site.objects.get(good) == b"good" * 100
    assert [f[0] for f in site.verify()] == [bad]
    assert raw  # the damaged object was left as it was, for forensics


def test_leftover_tmp_files_are_ignored_and_cleaned(site: Site) -> None:
    oid = site.objects.put(b"complete" * 10)
    tmp = site.objects.path(oid).parent / ".tmp-deadbeef"
    tmp.write_bytes(b"half an obj")
    assert list(site.objects.ids()) == [oid]
    assert site.objects.verify() == []
    assert tmp.exists()  # too fresh: could belong to a put in progress
    old = time.time() - 7200
    os.utime(tmp, (old, old))
    assert site.objects.verify() == [] and not tmp.exists()


def test_kill_mid_put_leaves_only_complete_objects(site: Site) -> None:
    """A writer killed at an arbitrary point leaves no partial object visible."""
    child = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from echoscreen.store.site import Site
        s = Site.open(Path({str(site.path)!r}))
        for i in range(10_000):
            s.objects.put(os.urandom(400_000))
    """)
    proc = subprocess.Popen([sys.executable, "-c", child])
    try:
        while sum(1 for _ in site.objects.ids()) < 8 and proc.poll() is None:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ids = list(site.objects.ids())
    assert len(ids) >= 8
    assert site.objects.clean_tmp(older_than_s=-1) >= 0
    assert site.objects.verify() == []
    assert not list(site.objects.root.glob("*/.tmp-*"))


def test_verify_recomputes_content_ids(site: Site) -> None:
    """An object re-encrypted by a key holder with other content passes GCM but not verify."""
    from echoscreen.store.crypto import seal

    oid = site.objects.put(b"original clip" * 10)
    site.objects.path(oid).write_bytes(seal(b"substituted clip", oid, site.keys))
    assert site.objects.get(oid) == b"substituted clip"  # authentic ciphertext, wrong content
    with pytest.raises(IntegrityError, match="another id"):
        site.objects.get(oid, check_id=True)
    assert [f[0] for f in site.objects.verify()] == [oid]


def test_rotation_keeps_the_keks_while_a_catalogued_object_is_missing(site: Site) -> None:
    """An object away (deleted by mistake, to be restored from backup) may name any old
    KEK: rotation keeps them all, so the restored object still opens."""
    from echoscreen.store.schema import Clip, Study

    kept, away = site.objects.put(b"kept" * 100), site.objects.put(b"away" * 100)
    with site.catalog.session() as s:
        s.add(Study(id="1.2.3", patient="p", n_clips=1))
        s.flush()
        s.add(Clip(id="1.2.3.1", study_id="1.2.3", n_frames=1, fps=30.0, rows=8, cols=8,
                   transfer_syntax="x", dicom_object=kept, tensor_object=away,
                   tensor_shape="3x1x8x8"))  # fmt: skip
    old_key = site.keys.active_key_id
    backup = site.objects.path(away).read_bytes()
    site.objects.path(away).unlink()
    rot = site.rotate_key()
    assert rot.rewrapped == 1 and rot.kept == [old_key] and rot.retired == []
    site.objects.path(away).write_bytes(backup)  # restored from backup
    assert site.objects.get(away) == b"away" * 100
    assert site.rotate_key().retired == [old_key, rot.new_key_id]  # now nothing is missing
