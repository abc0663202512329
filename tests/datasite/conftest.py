"""Fixtures of the data-server tests (a real mTLS server on loopback)."""

from tests.datasite.sitefix import served  # noqa: F401
