"""`echoscreen ingest` and `listen` through the console entry: bad input is refused cleanly."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.cli import fails, ok

from echoscreen.store.site import Site

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


def _one_study(tmp_path: Path, us_files: dict[str, Path]) -> tuple[tuple[str, ...], Dataset]:
    """A new site and a folder of one real clip: the ingest command line, and its header."""
    import pydicom

    Site.init(tmp_path / "site").close()
    source = tmp_path / "in"
    source.mkdir()
    path = us_files["examples_ybr_color.dcm"]
    (source / "a.dcm").write_bytes(path.read_bytes())
    args = ("ingest", str(source), "--site", str(tmp_path / "site"))
    return args, pydicom.dcmread(path, stop_before_pixels=True)


@pytest.mark.parametrize("name", ["../../evil", "a/b", "x\ny"])
@pytest.mark.parametrize("command", ["ingest", "listen"])
def test_a_bad_dataset_name_is_refused(tmp_path: Path, command: str, name: str) -> None:
    Site.init(tmp_path / "site").close()
    (tmp_path / "in").mkdir()
    source = [str(tmp_path / "in")] if command == "ingest" else ["--port", "0"]
    fails(command, *source, "--site", str(tmp_path / "site"), "--dataset", name,
          match="is not a dataset name")  # fmt: skip
    with Site.open(tmp_path / "site") as site:
        assert site.summary()["datasets"] == {}


def test_a_source_without_dicom_files_is_an_error(tmp_path: Path) -> None:
    import zipfile

    Site.init(tmp_path / "site").close()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.csv").write_text("a side file, skipped\n")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w"):
        pass
    for source in (empty, tmp_path / "empty.zip"):  # both exited 0
        fails("ingest", str(source), "--site", str(tmp_path / "site"), match="found no DICOM files")
    with Site.open(tmp_path / "site") as site:
        assert site.summary()["studies"] == 0
    (empty / "bad.dcm").write_bytes(b"not DICOM at all" * 10)  # found, and quarantined: exit 0
    assert "quarantined" in ok("ingest", str(empty), "--site", str(tmp_path / "site"))


@pytest.mark.parametrize("kind", ["labels", "clips"])
def test_a_csv_that_gives_one_uid_two_values_is_refused(tmp_path: Path, us_files: dict[str, Path],
                                                        kind: str) -> None:  # fmt: skip
    """Which row is right cannot be told: the last one silently won (a wrong ground truth)."""
    import pydicom

    Site.init(tmp_path / "site").close()
    source = tmp_path / "in"
    source.mkdir()
    path = us_files["examples_ybr_color.dcm"]
    (source / "a.dcm").write_bytes(path.read_bytes())
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if kind == "labels":
        text = (f"study_instance_uid,label\n{ds.StudyInstanceUID},normal\n"
                f"{ds.StudyInstanceUID},normal\n{ds.StudyInstanceUID},definite\n")  # fmt: skip
    else:
        text = f"sop_instance_uid,view\n{ds.SOPInstanceUID},a4c\n{ds.SOPInstanceUID},plax\n"
    (tmp_path / "x.csv").write_text(text)
    line = 4 if kind == "labels" else 3
    fails("ingest", str(source), "--site", str(tmp_path / "site"), f"--{kind}",
          str(tmp_path / "x.csv"), match=f"line {line} repeats the")  # fmt: skip
    with Site.open(tmp_path / "site") as site:
        assert site.summary()["studies"] == 0
    if kind == "labels":  # the same row twice says one thing: accepted
        (tmp_path / "x.csv").write_text("\n".join(text.splitlines()[:3]) + "\n")
        ok("ingest", str(source), "--site", str(tmp_path / "site"), "--labels",
           str(tmp_path / "x.csv"))  # fmt: skip


def test_a_folder_that_cannot_be_listed_is_an_error_not_skipped(
    tmp_path: Path, us_files: dict[str, Path]
) -> None:
    """os.walk ignored it: the other studies were ingested with exit 0 and the report did
    not mention the folder; an unreadable source root said 'found no DICOM files'."""
    Site.init(tmp_path / "site").close()
    source = tmp_path / "in"
    for study in ("a", "b"):
        (source / study).mkdir(parents=True)
    (source / "a" / "IM1.dcm").write_bytes(us_files["examples_ybr_color.dcm"].read_bytes())
    (source / "b" / "IM1.dcm").write_bytes(us_files["US1_UNCR.dcm"].read_bytes())
    try:
        for locked in (source / "b", source):
            locked.chmod(0o000)
            fails("ingest", str(source), "--site", str(tmp_path / "site"), permissions=True,
                  match=f"cannot list folder {locked} (Permission denied)")  # fmt: skip
            locked.chmod(0o755)
    finally:
        for p in (source, source / "b"):
            p.chmod(0o755)
    with Site.open(tmp_path / "site") as site:
        assert site.summary()["studies"] == 0


def test_pipes_and_devices_are_never_opened(tmp_path: Path, us_files: dict[str, Path]) -> None:
    """A pipe in the folder blocked the walk forever when opened, a link to /dev/zero read
    for ever; as the source, a pipe was said not to exist."""
    import os

    Site.init(tmp_path / "site").close()
    source = tmp_path / "in"
    source.mkdir()
    (source / "IM1.dcm").write_bytes(us_files["examples_ybr_color.dcm"].read_bytes())
    os.mkfifo(source / "pipe")
    (source / "zero.dcm").symlink_to("/dev/zero")
    text = ok("ingest", str(source), "--site", str(tmp_path / "site"), "--workers", "1")
    assert "not a regular file" in text
    with Site.open(tmp_path / "site") as site:
        summary = site.summary()
        assert summary["studies"] == 1 and summary["quarantined"] == 2
    fails("ingest", str(source / "pipe"), "--site", str(tmp_path / "site"),
          match="is not a folder or a regular file")  # fmt: skip


@pytest.mark.parametrize("value", ["nan", "inf", "-40", "1e400"])
def test_a_labels_csv_number_that_is_not_a_measurement_is_refused(
    tmp_path: Path, us_files: dict[str, Path], value: str
) -> None:
    """nan was stored as NULL, inf and negative weights as given, with exit 0."""
    args, ds = _one_study(tmp_path, us_files)
    text = f"study_instance_uid,label,weight_kg\n{ds.StudyInstanceUID},normal,{value}\n"
    (tmp_path / "labels.csv").write_text(text)
    fails(*args, "--labels", str(tmp_path / "labels.csv"), match="is not a number >= 0")
    with Site.open(tmp_path / "site") as site:
        assert site.summary()["studies"] == 0


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_header_values_in_a_wrong_format_are_not_quoted_on_stderr(
    tmp_path: Path, us_files: dict[str, Path], workers: str
) -> None:
    """pydicom's read checks warned with the value itself (in the walk and in the spawned
    workers): an identifying value in a wrong format appeared on ingest's stderr."""
    import pydicom
    from tests.cli import run as run_cli

    Site.init(tmp_path / "site").close()
    source = tmp_path / "in"
    source.mkdir()
    ds = pydicom.dcmread(us_files["examples_ybr_color.dcm"])
    ds.PatientBirthDate = "1985-03-12"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.9.7777.0717"
    ds.save_as(source / "a.dcm")
    res = run_cli("ingest", str(source), "--site", str(tmp_path / "site"), "--workers", workers)
    assert res.returncode == 0, res.stderr
    for value in ("1985-03-12", "9.7777.0717"):
        assert value not in res.stdout + res.stderr


def test_a_clips_csv_view_that_is_not_a_view_name_is_refused(
    tmp_path: Path, us_files: dict[str, Path]
) -> None:
    """Any string was stored as the clip's view with exit 0, a view the view classifier has
    no class for; a case or spacing variant of a view name is that view."""
    from sqlalchemy import select

    from echoscreen.store.schema import Clip
    from echoscreen.vocab import VIEWS

    ingest, ds = _one_study(tmp_path, us_files)
    sop = ds.SOPInstanceUID
    clips = tmp_path / "clips.csv"
    clips.write_text(f"sop_instance_uid,view,doppler\n{sop},apical 4ch,1\n")
    args = (*ingest, "--clips", str(clips))
    text = fails(*args, match=f"{clips} line 2: view 'apical 4ch' is not one of "
                 f"{', '.join(VIEWS)} (or empty)")  # fmt: skip
    assert str(sop) not in text
    with Site.open(tmp_path / "site") as site:
        assert site.summary()["studies"] == 0
    clips.write_text(f"sop_instance_uid,view,doppler\n{sop},a4c,maybe\n")
    fails(*args, match=f"{clips} line 2: doppler 'maybe' is not 1/0, true/false, yes/no or y/n "
          "(or empty)")  # fmt: skip
    clips.write_text(f"sop_instance_uid,view,doppler\n{sop}, A4C ,1\n")
    ok(*args)
    with Site.open(tmp_path / "site") as site, site.catalog.session() as s:
        assert list(s.scalars(select(Clip.view))) == ["a4c"]


def test_csv_rows_that_match_nothing_ingested_are_reported_once(
    tmp_path: Path, us_files: dict[str, Path]
) -> None:
    """labels.csv and clips.csv rows that matched no study or clip were ignored without a
    word (exit 0): a typo in a UID left a study unlabelled. Exit 0 still (a labels file
    may cover more studies than one source); the rows are named by line, not by UID."""
    from tests.cli import run as run_cli

    ingest, ds = _one_study(tmp_path, us_files)
    typos = [f"1.2.826.0.1.3680043.9.{n}" for n in range(12)]
    labels, clips = tmp_path / "labels.csv", tmp_path / "clips.csv"
    labels.write_text("study_instance_uid,label\n" + f"{ds.StudyInstanceUID},definite\n"
                      + "".join(f"{uid},normal\n" for uid in typos) + ",normal\n")  # fmt: skip
    clips.write_text(f"sop_instance_uid,view\n{typos[0]},plax\n{ds.SOPInstanceUID},a4c\n")
    args = (*ingest, "--labels", str(labels), "--clips", str(clips), "--workers", "1")
    for run in ("first", "again: the study is skipped, its rows still match"):
        res = run_cli(*args)
        text = res.stdout + res.stderr
        assert res.returncode == 0 and "Traceback" not in text, (run, text)
        assert text.count(f"warning: 13 rows of {labels} match no study of this ingest: "
                          "lines 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 and 3 more") == 1, text
        assert text.count(f"warning: 1 row of {clips} matches no clip of this ingest: "
                          "line 2") == 1, text  # fmt: skip
        assert not any(uid in text for uid in typos)
    with Site.open(tmp_path / "site") as site:
        summary = site.summary()
        assert (summary["labels"], summary["views"]) == ({"definite": 1}, {"a4c": 1})
