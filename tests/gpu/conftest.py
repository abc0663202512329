"""Fixtures of the GPU tests: the training tests' tiny site and the shared tiny package."""

from tests.registry.pkgfix import published
from tests.train.conftest import tiny_cfg, tiny_site

__all__ = ["published", "tiny_cfg", "tiny_site"]
