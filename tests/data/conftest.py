"""Fixtures of the clip-dataset tests (the data server of tests/datasite)."""

from tests.datasite.sitefix import served  # noqa: F401
