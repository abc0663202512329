"""Offline screening of phantom studies with the shared tiny package."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from tests.cli import fails, ok
from tests.cli import run as run_cli
from tests.registry.pkgfix import Published

from echoscreen.models import LABELS, VIEWS
from echoscreen.screen import OnnxBackend, Screener, TorchBackend

DECISIONS = {"screen-positive", "normal", "inconclusive"}


@pytest.fixture(scope="module")
def screener(published: Published) -> Screener:
    return Screener.open(published.registry, published.ref)


def _check_doc(doc: dict, n_files: int) -> None:
    assert doc["schema"] == "echoscreen.screen/1" and doc["model"] == "tiny:1"
    assert len(doc["clips"]) + len(doc["skipped"]) == n_files
    assert doc["decision"] in DECISIONS
    for c in doc["clips"]:
        assert c["view"] in VIEWS and 0 <= c["confidence"] <= 1
        assert abs(sum(c["p_view"].values()) - 1) < 1e-4 and isinstance(c["doppler"], bool)
    if doc["decision"] == "inconclusive":
        assert doc["reason"] and doc["p_screen"] is None and doc["p3"] is None
    else:
        assert 0 <= doc["p_screen"] <= 1 and list(doc["p3"]) == list(LABELS)
        assert (doc["p_screen"] >= doc["threshold"]) == (doc["decision"] == "screen-positive")
        assert all(doc["evidence"]["required"].values()) and doc["evidence"]["clips"]


def test_training_studies_get_views_and_a_decision(published: Published,
                                                    screener: Screener) -> None:  # fmt: skip
    truth = {r["path"]: r["view"] for r in published.clips()}
    decided, right, total = 0, 0, 0
    for folder in published.train_study_folders():
        doc = screener.screen_path(folder).to_json()
        _check_doc(doc, len(list(folder.iterdir())))
        decided += doc["decision"] != "inconclusive"
        rel = folder.relative_to(published.cohort).as_posix()
        for c in doc["clips"]:
            right += c["view"] == truth[f"{rel}/{c['file']}"]
            total += 1
    assert decided >= 1
    assert right / total >= 0.9  # the view model memorised its training clips


def test_only_other_and_rvin_clips_is_inconclusive(published: Published, screener: Screener,
                                                   tmp_path: Path) -> None:  # fmt: skip
    folder = published.train_study_folders()[0]
    rel = folder.relative_to(published.cohort).as_posix()
    study = tmp_path / "study"
    study.mkdir()
    for r in published.clips():
        if r["path"].startswith(rel + "/") and r["view"] in ("other", "rvin"):
            shutil.copy(published.cohort / r["path"], study)
    doc = screener.screen_path(study).to_json()
    _check_doc(doc, len(list(study.iterdir())))
    assert doc["clips"] and doc["decision"] == "inconclusive"
    assert "no clip of an RHD view" in doc["reason"] and doc["evidence"]["clips"] == []


def test_junk_files_are_reported_not_fatal(published: Published, screener: Screener,
                                           tmp_path: Path) -> None:  # fmt: skip
    study = tmp_path / "study"
    shutil.copytree(published.train_study_folders()[0], study)
    (study / "notes.txt").write_text("not dicom")
    (study / "IM9999.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")  # truncated
    doc = screener.screen_path(study).to_json()
    _check_doc(doc, len(list(study.iterdir())))
    assert {s["file"] for s in doc["skipped"]} == {"notes.txt", "IM9999.dcm"}
    assert all(s["reason"] for s in doc["skipped"])
    junk_only = tmp_path / "junk"
    junk_only.mkdir()
    (junk_only / "a.txt").write_text("x")
    doc = screener.screen_path(junk_only).to_json()
    assert doc["decision"] == "inconclusive" and doc["reason"] == "no readable clip in the study"


def test_file_names_are_printed_as_they_are_and_warnings_on_one_line(
        published: Published, tmp_path: Path) -> None:  # fmt: skip
    study = tmp_path / "study"
    study.mkdir()
    first, second = (sorted(f.iterdir())[0] for f in published.train_study_folders()[:2])
    shutil.copy(first, study / "[bold]IM1.dcm")
    shutil.copy(second, study / "IM2.dcm")  # another study: the CLI warns
    (study / "[red]notes.txt").write_text("not dicom")
    res = run_cli("screen", str(study), "--registry", str(published.registry), "--model",
                  "tiny:1")  # fmt: skip
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stdout + res.stderr
    assert "[bold]IM1.dcm" in res.stdout and "[red]notes.txt" in res.stdout
    assert "warning: the files belong to 2 different studies; screen one study at a time\n" \
        in res.stdout + res.stderr


def test_zip_and_single_file(published: Published, screener: Screener, tmp_path: Path) -> None:
    folder = published.train_study_folders()[0]
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, p.name)
    from_zip = screener.screen_path(archive).to_json()
    from_dir = screener.screen_path(folder).to_json()
    assert [c["view"] for c in from_zip["clips"]] == [c["view"] for c in from_dir["clips"]]
    assert from_zip["p_screen"] == from_dir["p_screen"]
    one = screener.screen_path(sorted(folder.iterdir())[0]).to_json()
    assert len(one["clips"]) == 1 and one["decision"] in DECISIONS


def test_torch_and_onnx_backends_agree(published: Published, screener: Screener) -> None:
    pkg = screener.package
    torch_s = Screener(pkg, TorchBackend.from_package(pkg))
    assert isinstance(screener.backend, OnnxBackend)
    for folder in published.train_study_folders()[:2]:
        a, b = screener.screen_path(folder), torch_s.screen_path(folder)
        assert [c.view for c in a.clips] == [c.view for c in b.clips]
        assert np.allclose([c.p_view for c in a.clips], [c.p_view for c in b.clips], atol=1e-4)
        assert a.decision == b.decision
        if a.p_screen is not None and b.p_screen is not None:
            assert abs(a.p_screen - b.p_screen) < 1e-4


def test_cli_output_holds_no_identifying_value_and_nothing_is_written(
    published: Published, screener: Screener, tmp_path: Path
) -> None:
    import pydicom

    study = tmp_path / "study"
    shutil.copytree(published.train_study_folders()[0], study)
    secrets: set[str] = set()
    for p in study.iterdir():
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        for kw in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID",
                   "SeriesInstanceUID", "SOPInstanceUID", "AccessionNumber", "StudyDate",
                   "InstitutionName", "ReferringPhysicianName", "StudyID"):  # fmt: skip
            value = str(ds.get(kw, "") or "")
            if len(value) >= 4:
                secrets.add(value)
    assert len(secrets) >= 5
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    reg = ("--registry", str(published.registry), "--model", "tiny:1")
    text = ok("screen", str(study), *reg, "--json")
    doc = json.loads(text)
    _check_doc(doc, len(list(study.iterdir())))
    table = ok("screen", str(study), *reg)
    assert "decision:" in table and doc["clips"][0]["file"] in table
    for s in secrets:
        assert s not in text and s not in table
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not any(s in json.dumps(screener.screen_path(study).to_json()) for s in secrets)
    fails("screen", str(study / "nope"), *reg, match="does not exist")


def test_folder_litter_is_skipped_in_folders_and_zips(tmp_path: Path) -> None:
    """Dot files and macOS resource forks are never read as part of a study."""
    from echoscreen.screen import iter_study

    folder = tmp_path / "study"
    (folder / "__MACOSX").mkdir(parents=True)
    (folder / ".cache").mkdir()
    for name in ("a/IM1.dcm", "IM2.dcm", ".DS_Store", "__MACOSX/._IM2.dcm", ".cache/x"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    for path in (folder, archive):
        assert [name for name, _ in iter_study(path)] == ["IM2.dcm", "a/IM1.dcm"]


def test_a_study_folder_that_cannot_be_listed_is_not_screened_in_part(
    published: Published, tmp_path: Path
) -> None:
    """rglob skipped it: the study got a decision from the clips it could read, exit 0."""
    study = tmp_path / "study"
    shutil.copytree(published.train_study_folders()[0], study / "a")
    shutil.copytree(published.train_study_folders()[0], study / "b")
    reg = ("--registry", str(published.registry), "--model", "tiny:1")
    (study / "b").chmod(0o000)
    try:
        fails("screen", str(study), *reg, permissions=True,
              match=f"cannot list folder {study / 'b'} (Permission denied)")  # fmt: skip
    finally:
        (study / "b").chmod(0o755)


def test_a_pipe_or_device_as_the_study_is_refused(published: Published, tmp_path: Path) -> None:
    """screen waited for ever to open a pipe, and read /dev/zero until memory ran out."""
    import os

    os.mkfifo(tmp_path / "pipe")
    reg = ("--registry", str(published.registry), "--model", "tiny:1")
    for path in (tmp_path / "pipe", Path("/dev/zero")):
        fails("screen", str(path), *reg, match="is not a folder or a regular file")


def test_a_zip_with_a_damaged_member_is_a_clear_error(published: Published,
                                                      tmp_path: Path) -> None:  # fmt: skip
    """A member failing its CRC (or inflate) was a zipfile.BadZipFile traceback."""
    folder = published.train_study_folders()[0]
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        archive = tmp_path / f"study-{method}.zip"
        with zipfile.ZipFile(archive, "w", method) as zf:
            for p in sorted(folder.iterdir()):
                zf.write(p, p.name)
        data = bytearray(archive.read_bytes())
        data[200:260] = bytes(60)  # inside the first member's data
        archive.write_bytes(bytes(data))
        fails("screen", str(archive), "--registry", str(published.registry), "--model", "tiny:1",
              match="is damaged: member")  # fmt: skip


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_header_values_in_a_wrong_format_are_not_quoted_on_stderr(
    published: Published, tmp_path: Path
) -> None:
    """pydicom's read checks warned with the value itself: a UID with a leading-zero
    component or a birth date written 1985-03-12 appeared on screen's stderr."""
    import pydicom

    study = tmp_path / "study"
    study.mkdir()
    for i, src in enumerate(sorted(published.train_study_folders()[0].iterdir())[:2]):
        ds = pydicom.dcmread(src)
        ds.PatientBirthDate = "1985-03-12"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.9.7777.0{i}7"
        ds.save_as(study / src.name)
    res = run_cli("screen", str(study), "--registry", str(published.registry), "--model",
                  "tiny:1", "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    for value in ("1985-03-12", "9.7777.0"):
        assert value not in res.stdout + res.stderr


@pytest.mark.parametrize("name", ["../IM9999.dcm", "/tmp/IM9999.dcm", "a\\..\\IM9999.dcm"])
def test_a_zip_with_a_member_named_as_an_unsafe_path_is_refused(
    published: Published, tmp_path: Path, name: str
) -> None:
    """A member named ``../x.dcm`` was dropped without a word (its '..' part read as a
    dot folder) and one named ``/x.dcm`` was screened: now the zip is refused whole, as
    ingest and the service refuse it."""
    folder = published.train_study_folders()[0]
    files = sorted(folder.iterdir())
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in files[1:]:
            zf.write(p, p.name)
        zf.writestr(zipfile.ZipInfo(name), files[0].read_bytes())
    out = fails("screen", str(archive), "--registry", str(published.registry), "--model",
                "tiny:1", match="named with an unsafe path")  # fmt: skip
    assert repr(name) in out and "the whole zip is refused" in out
