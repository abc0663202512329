"""A phantom study screened for real, as the SR tests need it: the result and the files.

``stored_instance`` reads an instance back from the test Orthanc by SOP instance UID.

``screened_study`` (module scope) screens the first training study of the shared tiny
package with :class:`echoscreen.screen.Screener` and rewrites each clip's ``file`` into
``file_index`` (its position in the upload), as the service's engine does.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from tests.pacs import Orthanc
from tests.registry.pkgfix import Published


@dataclass
class Screened:
    """A screened study: the result document, the uploaded files and their headers."""

    folder: Path
    result: dict[str, Any]
    files: list[tuple[str, bytes]]

    def originals(self) -> list[Dataset]:
        """Headers of the files, in upload order."""
        return [pydicom.dcmread(io.BytesIO(d), stop_before_pixels=True) for _, d in self.files]


def screen_study(published: Published, folder: Path) -> Screened:
    """Screen ``folder`` with the tiny package; clips carry ``file_index`` like the engine's."""
    from echoscreen.screen import Screener

    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    names = [str(p.relative_to(folder)) for p in paths]
    result = Screener.open(published.registry, published.ref).screen_path(folder).to_json()
    for clip in result["clips"]:
        clip["file_index"] = names.index(clip.pop("file"))
    result["job"] = "0123456789abcdef0123456789abcdef"
    return Screened(
        folder, result, [(n, p.read_bytes()) for n, p in zip(names, paths, strict=True)]
    )


@pytest.fixture(scope="module")
def screened(published: Published) -> Screened:
    """The first training study of the shared package, screened."""
    return screen_study(published, published.train_study_folders()[0])


def stored_instance(orthanc: Orthanc, sop_uid: str) -> tuple[str, Dataset] | None:
    """Orthanc's id and the stored file of the instance with this SOP instance UID."""
    found = httpx.post(f"{orthanc.url}/tools/lookup", content=sop_uid, timeout=30).json()
    ids = [f["ID"] for f in found if f["Type"] == "Instance"]
    if not ids:
        return None
    data = httpx.get(f"{orthanc.url}/instances/{ids[0]}/file", timeout=30).content
    return ids[0], pydicom.dcmread(io.BytesIO(data))
