"""`echoscreen site ...` end to end through the real console entry point (subprocesses)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli import fails, ok

from echoscreen.store.catalog import add_to_dataset
from echoscreen.store.schema import Clip, Study
from echoscreen.store.site import Site


def populate(path: Path, n_patients: int = 10) -> list[str]:
    """Studies with one stored clip each (DICOM and tensor objects), in dataset 'screen'."""
    oids = []
    with Site.open(path) as site, site.catalog.session() as s:
        for p in range(n_patients):
            sid = f"2.25.{1000 + p}"
            dicom = site.objects.put(f"dicom of {sid}".encode() * 20)
            tensor = site.objects.put(f"tensor of {sid}".encode() * 20)
            oids += [dicom, tensor]
            s.add(Study(id=sid, patient=f"PSEUDO{p}", label=("normal", "definite")[p % 2],
                        sex="M", age_years=10.0, n_clips=1, source_kind="folder"))  # fmt: skip
            s.add(Clip(id=f"{sid}.1", study_id=sid, view="PLAX", doppler=False, n_frames=16,
                       fps=30.0, rows=64, cols=64, transfer_syntax="1.2.840.10008.1.2.1",
                       dicom_object=dicom, tensor_object=tensor, tensor_shape="3x16x64x64",
                       findings="thickened AML"))  # fmt: skip
            s.flush()
            add_to_dataset(s, "screen", sid)
    return oids


def test_site_commands_end_to_end(tmp_path: Path) -> None:
    site = tmp_path / "site"
    assert "created site" in ok("site", "init", str(site))
    oids = populate(site)
    env = {"ECHOSCREEN_SITE": str(site)}
    listing = ok("site", "ls", env=env)
    assert "screen" in listing and "definite" in listing and "PLAX" in listing
    assert "train" in ok("site", "split", "screen", "--site", str(site), "--seed", "1")
    listing = ok("site", "ls", "--site", str(site))
    assert "screen" in listing
    shown = ok("site", "show", "2.25.1003", "--site", str(site))
    assert "PSEUDO3" in shown and "thickened AML" in shown and "screen" in shown
    assert "all objects decrypt" in ok("site", "verify", "--site", str(site))
    rotated = ok("site", "rotate-key", "--site", str(site))
    assert "re-wrapped 20 object(s)" in rotated
    assert "all objects decrypt" in ok("site", "verify", "--site", str(site))

    # tamper with one object and delete another that the catalog references
    victim = site / "objects" / oids[0][:2] / oids[0]
    blob = bytearray(victim.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    victim.write_bytes(bytes(blob))
    (site / "objects" / oids[3][:2] / oids[3]).unlink()
    out = fails("site", "verify", "--site", str(site), match="failed verification")
    assert oids[0] in out and "altered" in out and f"missing object {oids[3]}" in out


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("site", "ls", "--site", "{tmp}/nope"), "not an echoscreen site"),
        (("site", "verify", "--site", "{tmp}/nope"), "site init"),
        (("site", "init", "{tmp}/site"), "already exists"),
        (("site", "show", "9.9.9", "--site", "{tmp}/site"), "no study '9.9.9'"),
        (("site", "split", "x", "--site", "{tmp}/site", "--train", ".9"), "sum to 1"),
        (("site", "split", "x", "--site", "{tmp}/site"), "no dataset 'x'"),
        (("site", "split", "x", "--site", "{tmp}/site", "--seed", "-1"), "Invalid value"),
        (("site", "split", "../../evil", "--site", "{tmp}/site"), "is not a dataset name"),
        (("site", "grant", "alice", "a/b", "--site", "{tmp}/site"), "is not a dataset name"),
        (("site", "init", "{tmp}/other", "--catalog", "mysql://u@h/db"), "unsupported catalog"),
    ],
)
def test_bad_input_is_a_clean_error(tmp_path: Path, args: tuple[str, ...], match: str) -> None:
    if not (tmp_path / "site").exists():
        Site.init(tmp_path / "site").close()
    fails(*(a.format(tmp=tmp_path) for a in args), match=match)
    assert not (tmp_path / "other").exists()


def test_a_missing_catalog_is_refused_not_replaced(tmp_path: Path) -> None:
    Site.init(tmp_path / "site").close()
    (tmp_path / "site" / "catalog.db").unlink()
    for cmd in ("ls", "verify"):
        fails("site", cmd, "--site", str(tmp_path / "site"), match="catalog.db is missing")
    assert not (tmp_path / "site" / "catalog.db").exists()


def test_an_emptied_catalog_is_refused_not_rebuilt_empty(tmp_path: Path) -> None:
    """A catalog.db truncated to 0 bytes was filled with empty tables on the next open:
    site ls showed an empty site, split said 'no dataset', audit an empty log, exit 0."""
    Site.init(tmp_path / "site").close()
    (tmp_path / "site" / "catalog.db").write_bytes(b"")
    for args in (("ls",), ("audit",), ("split", "d", "--train", ".7", "--val", ".15",
                                       "--test", ".15")):  # fmt: skip
        fails("site", *args, "--site", str(tmp_path / "site"), match="holds no echoscreen tables")
    import sqlite3

    with sqlite3.connect(tmp_path / "site" / "catalog.db") as db:  # still without tables
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_environment_errors_are_one_line_not_tracebacks(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    fails("site", "init", str(tmp_path / "afile" / "sub"), match="Not a directory")
    Site.init(tmp_path / "site").close()
    (tmp_path / "site" / "catalog.db").write_bytes(b"this is not sqlite" * 100)
    fails("site", "ls", "--site", str(tmp_path / "site"), match="not a database")
