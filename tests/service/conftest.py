"""Fixtures of the service tests: the shared tiny package (see tests/registry/pkgfix.py)."""

from tests.registry.pkgfix import published

__all__ = ["published"]
