"""Fixtures of the screen tests: the shared tiny package (see pkgfix)."""

from tests.registry.pkgfix import published

__all__ = ["published"]
