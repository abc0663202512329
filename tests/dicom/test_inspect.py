"""`echoscreen inspect`: one row per file, non-zero exit when any fails, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from echoscreen.dicom import inspect_file


def run_inspect(*paths: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "echoscreen", "inspect", *map(str, paths)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_inspect_file_reports_instead_of_raising(
    pydicom_file: Callable[[str], Path], tmp_path: Path
) -> None:
    good = inspect_file(pydicom_file("examples_ybr_color.dcm"))
    assert good.ok and good.error is None
    assert (good.modality, good.frames, good.rows, good.cols) == ("US", 30, 240, 320)
    assert good.transfer_syntax == "JPEG Baseline (Process 1)" and good.n_regions == 1
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 10)
    bad = inspect_file(junk)
    assert not bad.ok and bad.error is not None and "not DICOM" in bad.error


def test_cli_good_and_bad_files(pydicom_file: Callable[[str], Path], tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.dcm"
    data = pydicom_file("US1_UNCR.dcm").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.dcm"
    text.write_text("not an image\n")
    good = pydicom_file("examples_ybr_color.dcm")
    proc = run_inspect(good, pydicom_file("examples_palette.dcm"), truncated, text)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "2 of 4 files failed" in proc.stderr
    assert "YBR_FULL_422" in proc.stdout and "PALETTE COLOR" in proc.stdout
    assert "truncated" in proc.stdout and "not DICOM" in proc.stdout


def test_cli_folder_all_good(pydicom_file: Callable[[str], Path], tmp_path: Path) -> None:
    (tmp_path / "study" / "series").mkdir(parents=True)
    shutil.copy(pydicom_file("examples_ybr_color.dcm"), tmp_path / "study" / "series" / "a.dcm")
    shutil.copy(pydicom_file("US1_UNCR.dcm"), tmp_path / "study" / "b")
    (tmp_path / "study" / "labels.csv").write_text("study,label\n")  # side file, skipped
    proc = run_inspect(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(" ok ") == 2 and "Traceback" not in proc.stderr


def test_cli_says_which_folders_it_cannot_read(
    pydicom_file: Callable[[str], Path], tmp_path: Path
) -> None:
    """A folder it could not list was skipped without a word: exit 0 with the files of the
    others, and 'no files found' when it could read none."""
    from tests.cli import fails, run

    study = tmp_path / "study"
    for name in ("a", "b"):
        (study / name).mkdir(parents=True)
        shutil.copy(pydicom_file("examples_ybr_color.dcm"), study / name / "IM1")
    try:
        (study / "b").chmod(0o000)
        proc = run("inspect", str(study), permissions=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout.count(" ok ") == 1
        assert (f"warning: cannot read folder {study / 'b'} (Permission denied): its files are "
                "not inspected") in proc.stderr  # fmt: skip
        (study / "a").chmod(0o000)  # nothing at all could be read: an error
        text = fails("inspect", str(study), permissions=True,
                     match="no file could be read: 2 folders could not be read")  # fmt: skip
        assert f"warning: cannot read folder {study / 'a'} (Permission denied)" in text
        study.chmod(0o000)  # a named folder is checked by the command line parser
        fails("inspect", str(study), permissions=True, match=f"'{study}' is not readable")
    finally:
        for path in (study, study / "a", study / "b"):
            path.chmod(0o755)
