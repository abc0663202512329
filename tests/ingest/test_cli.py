"""`echoscreen ingest` and `listen` through the console entry: bad input is refused cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli import fails, ok

from echoscreen.store.site import Site


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
