"""FolderSource and ZipSource on real ultrasound files, junk, and hostile archives."""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.ingest.usfiles import expected_groups

from echoscreen.errors import IngestError
from echoscreen.ingest import (
    UNREADABLE_KEY,
    DicomWebSource,
    FolderSource,
    StudyBatch,
    ZipSource,
    open_source,
)


@pytest.fixture
def mixed_folder(
    tmp_path: Path, us_files: dict[str, Path], pydicom_file: Callable[[str], Path]
) -> Path:
    """Real US files under odd names and nested folders, a DICOMDIR, and junk."""
    root = tmp_path / "export"
    listing = []
    for i, (name, path) in enumerate(sorted(us_files.items())):
        origin = f"series{i % 2}/" + (f"IM{i:04d}" if i % 2 else name)  # with and without .dcm
        (root / origin).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, root / origin)
        listing.append(f"{origin} {name}\n")
    (root / "originals.txt").write_text("".join(listing))
    shutil.copyfile(pydicom_file("DICOMDIR"), root / "DICOMDIR")
    shutil.copyfile(pydicom_file("DICOMDIR"), root / "series0" / "index.dir")
    (root / "junk").mkdir()
    (root / "junk" / "report.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 4)
    (root / "junk" / "empty").write_bytes(b"")
    ybr = us_files["examples_ybr_color.dcm"].read_bytes()
    (root / "junk" / "cut.dcm").write_bytes(ybr[:200])
    return root


def _names_from_listing(root: Path) -> dict[str, str]:
    """Origin (path inside the folder) -> original pydicom file name."""
    pairs = (line.split() for line in (root / "originals.txt").read_text().splitlines())
    return {origin: name for origin, name in pairs}


def _check_batches(
    batches: list[StudyBatch], origin_to_name: dict[str, str], us_files: dict[str, Path]
) -> list[tuple[str, str]]:
    """Assert studies are grouped right and byte-exact; return (origin, reason) of junk."""
    studies = [b for b in batches if b.key != UNREADABLE_KEY]
    got = {b.key: {origin_to_name[i.origin] for i in b.instances} for b in studies}
    assert got == expected_groups(list(us_files))
    assert len(studies) == len(got), "a study was yielded twice"
    for batch in studies:
        assert not batch.unreadable
        for inst in batch.instances:
            assert inst.data == us_files[origin_to_name[inst.origin]].read_bytes()
    junk = [(i.origin, reason) for b in batches for i, reason in b.unreadable]
    assert all(reason for _, reason in junk)
    return junk


def test_folder_groups_real_us_files_by_study_and_reports_junk(
    mixed_folder: Path, us_files: dict[str, Path]
) -> None:
    source = FolderSource(mixed_folder)
    batches = list(source.studies())
    junk = dict(_check_batches(batches, _names_from_listing(mixed_folder), us_files))
    assert set(junk) == {"junk/report.pdf", "junk/empty", "junk/cut.dcm", "originals.txt"}
    assert "no 'DICM' marker" in junk["junk/report.pdf"]
    assert junk["junk/empty"] == "empty file"
    # cut inside its header: it was 'DICOM object without a StudyInstanceUID'
    assert junk["junk/cut.dcm"].startswith("the file is truncated: it ends inside its DICOM header")
    # the DICOMDIR is skipped whatever its name
    assert not any("DICOMDIR" in o or "index.dir" in o for o in junk)
    assert source.count_hint() == len(batches)
    assert str(mixed_folder) in source.describe()


def test_zip_groups_like_the_folder(
    mixed_folder: Path, us_files: dict[str, Path], tmp_path: Path
) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(mixed_folder.rglob("*")):
            zf.write(path, path.relative_to(mixed_folder).as_posix())
        zf.writestr("__MACOSX/._IM0001", b"\x00\x05\x16\x07 apple double")
    source = ZipSource(archive)
    batches = list(source.studies())
    junk = dict(_check_batches(batches, _names_from_listing(mixed_folder), us_files))
    assert set(junk) == {"junk/report.pdf", "junk/empty", "junk/cut.dcm", "originals.txt"}
    assert "is truncated" in junk["junk/cut.dcm"]
    assert source.count_hint() == len(batches)


def test_folder_and_zip_skip_litter_by_one_rule(us_files: dict[str, Path], tmp_path: Path) -> None:
    # real DICOM under dot folders and __MACOSX (a Time Machine copy, a git checkout, a
    # macOS resource fork) is litter, not part of the export: both walks skip it
    real = sorted(us_files.values())[0]
    root = tmp_path / "export"
    for rel in ("a/IM1", ".snapshots/IM1", "a/.git/objects/IM1", "__MACOSX/IM1", "a/.IM1"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real, root / rel)
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(root).as_posix())
    for source in (FolderSource(root), ZipSource(archive)):
        origins = [i.origin for b in source.studies() for i in b.instances]
        assert origins == ["a/IM1"], source.describe()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return path


@pytest.mark.parametrize(
    "name", ["../escape.dcm", "/etc/passwd", "a/../../b.dcm", "C:\\win.dcm", "dir\\..\\x.dcm"]
)
def test_zip_with_unsafe_member_names_is_refused(tmp_path: Path, name: str) -> None:
    archive = _zip(tmp_path / "evil.zip", {"ok.dcm": b"x", name: b"y"})
    with pytest.raises(IngestError, match="unsafe path"):
        ZipSource(archive)


def test_zip_bomb_is_refused_by_ratio_and_by_total_size(tmp_path: Path) -> None:
    bomb = _zip(tmp_path / "bomb.zip", {"zeros.dcm": bytes(16 * 1024**2)})
    assert bomb.stat().st_size < 100_000
    with pytest.raises(IngestError, match="zip bomb"):
        ZipSource(bomb)
    modest = _zip(tmp_path / "big.zip", {f"f{i}.dcm": bytes(range(256)) * 64 for i in range(8)})
    with pytest.raises(IngestError, match="more than the limit"):
        ZipSource(modest, max_total_bytes=100_000)


def test_zip_with_too_many_members_is_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "many.zip", {f"f{i}": b"x" for i in range(20)})
    with pytest.raises(IngestError, match="20 members"):
        ZipSource(archive, max_members=10)


def test_zip_with_duplicate_names_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "dup.zip"
    with zipfile.ZipFile(archive, "w") as zf, pytest.warns(UserWarning, match="Duplicate"):
        zf.writestr("a.dcm", b"first")
        zf.writestr("a.dcm", b"second")
    with pytest.raises(IngestError, match="same member name twice"):
        ZipSource(archive)


def test_broken_zip_gives_a_clear_error(tmp_path: Path, us_files: dict[str, Path]) -> None:
    good = _zip(tmp_path / "good.zip", {"a.dcm": us_files["US1_UNCR.dcm"].read_bytes()})
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(IngestError, match="not a readable zip archive"):
        ZipSource(truncated)
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"this is not a zip at all")
    with pytest.raises(IngestError, match="not a readable zip archive"):
        ZipSource(fake)
    with pytest.raises(IngestError, match="not a zip archive"):
        open_source(str(fake))


def test_zip_member_with_corrupt_data_is_unreadable_not_fatal(
    tmp_path: Path, us_files: dict[str, Path]
) -> None:
    data = us_files["US1_UNCR.dcm"].read_bytes()
    archive = tmp_path / "stored.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.dcm", data)
        zf.writestr("b.dcm", us_files["examples_jpeg2k.dcm"].read_bytes())
    raw = bytearray(archive.read_bytes())
    at = raw.find(data[-5000:-4000])  # flip bytes in a.dcm's pixel data: its CRC no longer holds
    raw[at : at + 16] = bytes(b ^ 0xFF for b in raw[at : at + 16])
    archive.write_bytes(bytes(raw))
    (batch,) = list(ZipSource(archive).studies())
    assert [i.origin for i in batch.instances] == ["b.dcm"]
    assert [(i.origin, reason) for i, reason in batch.unreadable] == [
        ("a.dcm", "zip member cannot be read (BadZipFile)")
    ]


def test_open_source_picks_the_source_from_the_spec(mixed_folder: Path, tmp_path: Path) -> None:
    assert isinstance(open_source(str(mixed_folder)), FolderSource)
    archive = _zip(tmp_path / "a.zip", {"x": b"y"})
    assert isinstance(open_source(str(archive)), ZipSource)
    web = open_source("http://127.0.0.1:1/dicom-web/")
    assert isinstance(web, DicomWebSource)
    assert web.describe() == "DICOMweb http://127.0.0.1:1/dicom-web"
    with pytest.raises(IngestError, match="does not exist"):
        open_source(str(tmp_path / "nowhere"))
    with pytest.raises(IngestError, match="unsupported source URL scheme"):
        open_source("ftp://pacs/studies")
