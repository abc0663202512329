"""The model registry: immutable, checksummed screening packages on disk.

``publish(PublishConfig(...))`` turns a view run and an rhd run into
``REGISTRY/NAME/VERSION/`` (weights, ONNX exports checked against torch, configs,
preprocessing spec, operating point, metrics, model card, MANIFEST of sha256 sums);
``load_package(registry, "NAME:VERSION")`` verifies every checksum before anything is used.

Why a top-level package and not part of ``echoscreen.models``: a package joins the
outputs of ``train`` (weights, configs) and ``evaluate`` (metrics, operating point),
which sit *above* ``models`` in the dependency order; putting it in ``models`` would
make ``models`` import from its users. The screening code (``echoscreen.screen``) and
the later service read packages through this module only. See docs/registry.md.
"""

from __future__ import annotations

from echoscreen.registry.manifest import MANIFEST, sha256_file, verify_manifest, write_manifest
from echoscreen.registry.package import ModelPackage, load_package, package_dir, parse_ref
from echoscreen.registry.publish import REQUIRED_VIEWS, PublishConfig, publish

__all__ = [
    "MANIFEST",
    "REQUIRED_VIEWS",
    "ModelPackage",
    "PublishConfig",
    "load_package",
    "package_dir",
    "parse_ref",
    "publish",
    "sha256_file",
    "verify_manifest",
    "write_manifest",
]
