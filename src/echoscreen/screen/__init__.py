"""Offline screening of one study with a published package (``echoscreen screen``).

A library, not only a command: the screening service reuses :class:`Screener` and the
:class:`Backend` seam (``run(name, inputs) -> outputs``; :class:`OnnxBackend`, the
default, and :class:`TorchBackend`). Nothing is written: files are de-identified and
decoded in memory. See docs/registry.md.
"""

from __future__ import annotations

from echoscreen.screen.backends import BACKENDS, Backend, OnnxBackend, TorchBackend, make_backend
from echoscreen.screen.inputs import iter_study
from echoscreen.screen.screener import SCHEMA, ClipResult, Screener, ScreenResult

__all__ = ["BACKENDS", "SCHEMA", "Backend", "ClipResult", "OnnxBackend", "ScreenResult",
           "Screener", "TorchBackend", "iter_study", "make_backend"]  # fmt: skip
