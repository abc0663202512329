"""Inference backends: the ``Backend`` seam and its torch and ONNX Runtime implementations.

A backend runs a package's named models ("view", "rhd") on numpy inputs named as in
:data:`echoscreen.models.onnx.INPUT_NAMES` and returns the outputs named as in
:data:`~echoscreen.models.onnx.OUTPUT_NAMES` (the models' forward dict). The screening
service's batching and GPU backends implement the same protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from echoscreen.errors import ConfigError
from echoscreen.models.onnx import INPUT_NAMES, OUTPUT_NAMES
from echoscreen.registry.package import TASKS, ModelPackage, unloadable

#: backend names accepted by :func:`make_backend`
BACKENDS = ("onnx", "torch", "auto")


class Backend(Protocol):
    """Runs named models on numpy inputs."""

    #: short name reported with results ("onnx", "torch", ...)
    name: str

    def run(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run model ``name`` on ``inputs``.

        Args:
            name: "view" or "rhd".
            inputs: view: ``clips`` float32 (B, 3, T, S, S) in [0, 1]; rhd: ``clips``
                float32 (B, N, 3, T, S, S), ``mask`` bool (B, N), ``views`` int64 (B, N).

        Returns:
            view: ``view`` (B, 7) logits, ``doppler`` (B,) logit; rhd: ``screen`` (B,)
            logit, ``class3`` (B, 3) logits, ``clip_screen`` (B, N) logits,
            ``attention`` (B, N) weights.
        """
        ...


def _check(models: Mapping[str, Any], name: str) -> Any:
    if name not in models:
        raise ConfigError(f"this backend has no model {name!r}; it has {', '.join(models)}")
    return models[name]


class TorchBackend:
    """Eager torch (eval mode, inference mode) on the CPU or a CUDA device."""

    def __init__(self, models: Mapping[str, Any], device: str = "cpu") -> None:
        """Args: models: name -> torch module (put in eval mode on ``device`` here);
        device: "cpu", "cuda" or "cuda:N"."""
        self.device = device
        self.name = "torch" if device == "cpu" else "torch-cuda"
        self.models = {k: m.eval().to(device) for k, m in models.items()}

    @classmethod
    def from_package(cls, package: ModelPackage, device: str = "cpu") -> TorchBackend:
        """Both models of a verified package, loaded from their ``weights.pt``."""
        return cls({t: package.load_torch(t) for t in TASKS}, device)

    def run(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """See :meth:`Backend.run`."""
        import torch

        model = _check(self.models, name)
        args = [torch.from_numpy(np.ascontiguousarray(inputs[k])).to(self.device)
                for k in INPUT_NAMES[name]]  # fmt: skip
        with torch.inference_mode():
            out = model(*args)
        return {k: out[k].float().cpu().numpy() for k in OUTPUT_NAMES[name]}


class OnnxBackend:
    """ONNX Runtime sessions on the CPU execution provider."""

    name = "onnx"

    def __init__(self, paths: Mapping[str, Path], threads: int = 0) -> None:
        """Args: paths: name -> .onnx file; threads: intra-op threads (0: runtime default)."""
        import onnxruntime as ort  # type: ignore[import-untyped]

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        # idle pool threads sleep instead of spinning: the service runs decoding, torch
        # saliency and other requests beside the sessions on the same few cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sessions: dict[str, Any] = {}
        for k, p in paths.items():
            try:
                self.sessions[k] = ort.InferenceSession(
                    str(p), sess_options=opts, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # truncated or foreign: the runtime raises many kinds
                raise unloadable(p, "ONNX Runtime", exc) from exc

    @classmethod
    def from_package(cls, package: ModelPackage, threads: int = 0) -> OnnxBackend:
        """Both models of a verified package, from their ``model.onnx``."""
        return cls({t: package.path(t, "onnx") for t in TASKS}, threads)

    def run(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """See :meth:`Backend.run`."""
        session = _check(self.sessions, name)
        feed = {k: np.ascontiguousarray(inputs[k]) for k in INPUT_NAMES[name]}
        outs = session.run(list(OUTPUT_NAMES[name]), feed)
        return dict(zip(OUTPUT_NAMES[name], outs, strict=True))


def make_backend(package: ModelPackage, kind: str = "onnx", threads: int = 0) -> Backend:
    """The backend called ``kind`` for a package's models.

    Args:
        kind: "onnx" (ONNX Runtime, CPU), "torch" (eager torch on a GPU when torch sees
            one, else the CPU) or "auto" (torch on a GPU when there is one, else onnx).
        threads: ONNX Runtime's intra-op threads (0: its default).
    """
    if kind not in BACKENDS:
        raise ConfigError(f"unknown backend {kind!r}; use one of {', '.join(BACKENDS)}")
    if kind in ("auto", "torch"):
        import torch

        if torch.cuda.is_available():
            return TorchBackend.from_package(package, "cuda")
        if kind == "torch":
            return TorchBackend.from_package(package)
    return OnnxBackend.from_package(package, threads)
