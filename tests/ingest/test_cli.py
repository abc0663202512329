"""`echoscreen ingest` and `listen` through the console entry: bad input is refused cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli import fails

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
