"""Fixtures of the ingest tests: real ultrasound files from pydicom/pydicom-data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.ingest.usfiles import US_FILES


@pytest.fixture(scope="session")
def us_files(pydicom_file: Callable[[str], Path]) -> dict[str, Path]:
    """Name -> path of the real ultrasound files in :data:`US_FILES`."""
    return {name: pydicom_file(name) for name in US_FILES}
