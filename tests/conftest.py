"""Shared fixtures. Services the tests need are real; in CI a missing one fails the test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.pacs import orthanc  # noqa: F401  (session fixture: a real Orthanc PACS)
from tests.services import postgres_server, postgres_url  # noqa: F401  (real PostgreSQL)

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def need(condition: bool, what: str) -> None:
    """Skip locally, but fail in CI, when a service or tool the test needs is missing."""
    if condition:
        return
    message = f"{what} is missing (`make test` installs it)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def need_binary() -> Callable[[str], str]:
    """Return the path of an executable, failing in CI (skipping elsewhere) when it is absent."""

    def _need(name: str) -> str:
        path = shutil.which(name)
        need(path is not None, f"executable {name!r}")
        assert path is not None
        return path

    return _need


@pytest.fixture(scope="session")
def pydicom_file() -> Callable[[str], Path]:
    """Path of a file that pydicom or pydicom-data ships (real ultrasound among them)."""
    from pydicom.data import get_testdata_file

    def _get(name: str) -> Path:
        path = get_testdata_file(name)
        need(path is not None, f"pydicom test file {name} (from pydicom-data)")
        return Path(str(path))

    return _get
