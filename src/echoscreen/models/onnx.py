"""ONNX export of the registered models, and a check of the export against torch.

The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``, opset 17) is
used: it needs nothing beyond torch and onnx, and gives dynamic batch (and, for "rhd",
dynamic clip count N) axes. Inputs are float clips in [0, 1] (apply :func:`to_input`
first); outputs are the model's dict entries, in :data:`OUTPUT_NAMES` order.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from echoscreen.errors import ConfigError
from echoscreen.models.config import VIEWS, ModelConfig

#: ONNX opset of every export
OPSET = 17
#: ONNX input names per model
INPUT_NAMES: dict[str, tuple[str, ...]] = {"view": ("clips",), "rhd": ("clips", "mask", "views")}
#: ONNX output names per model (the forward dict's keys, in this order)
OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    "view": ("view", "doppler"),
    "rhd": ("screen", "class3", "clip_screen", "attention"),
}


class _TupleOutputs(nn.Module):
    """Wrap a model whose forward returns a dict so it returns a tuple (ONNX needs one)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(*inputs)
        return tuple(out[k] for k in self.names)


def example_inputs(name: str, cfg: ModelConfig, batch: int = 2, clips: int = 3,
                   seed: int = 0) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """Random inputs of the documented shapes (T = cfg.frames, S = cfg.image).

    Args:
        name: "view" or "rhd".
        cfg: the configuration the model was built with.
        batch: B.
        clips: N (rhd only); the last clip of the first study is padding.
        seed: seed of a private generator (the global RNG is not touched).

    Returns:
        view: (clips (B, 3, T, S, S) float,); rhd: (clips (B, N, 3, T, S, S) float,
        mask (B, N) bool, views (B, N) int64).
    """
    _check_name(name)
    g = torch.Generator().manual_seed(seed)
    shape = (3, cfg.frames, cfg.image, cfg.image)
    if name == "view":
        return (torch.rand((batch, *shape), generator=g),)
    mask = torch.ones(batch, clips, dtype=torch.bool)
    if clips > 1:
        mask[0, -1] = False
    views = torch.randint(-1, len(VIEWS), (batch, clips), generator=g)
    return torch.rand((batch, clips, *shape), generator=g), mask, views


def export_onnx(model: nn.Module, name: str, cfg: ModelConfig, path: Path) -> Path:
    """Write ``model`` to ``path`` as ONNX (opset 17, dynamic B, and N for "rhd").

    The model is exported in eval mode (dropout off, BatchNorm running statistics) and
    left in the mode it was in.

    Args:
        model: a model built by ``create_model(name, cfg)``.
        name: "view" or "rhd" (fixes the input and output names).
        cfg: its configuration (T and S of the example input traced).
        path: the .onnx file to write (its folder must exist).

    Returns:
        ``path``.
    """
    _check_name(name)
    inputs = example_inputs(name, cfg)
    dynamic: dict[str, dict[int, str]] = {k: {0: "batch"} for k in INPUT_NAMES[name]}
    dynamic.update({k: {0: "batch"} for k in OUTPUT_NAMES[name]})
    if name == "rhd":
        for k in ("clips", "mask", "views", "clip_screen", "attention"):
            dynamic[k][1] = "clips"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript exporter deprecation / tracer notes
            torch.onnx.export(
                _TupleOutputs(model, OUTPUT_NAMES[name]), inputs, str(path), dynamo=False,
                opset_version=OPSET, input_names=list(INPUT_NAMES[name]),
                output_names=list(OUTPUT_NAMES[name]), dynamic_axes=dynamic,
            )  # fmt: skip
    finally:
        model.train(was_training)
    return path


def run_onnx(path: Path, inputs: tuple[torch.Tensor, ...], name: str) -> dict[str, np.ndarray]:
    """Run an exported model with onnxruntime (CPU).

    Args:
        path: the .onnx file.
        inputs: the model's inputs as for torch (see :func:`example_inputs`).
        name: "view" or "rhd".

    Returns:
        Output name -> numpy array, shapes as the torch forward documents.
    """
    import onnxruntime as ort  # type: ignore[import-untyped]

    _check_name(name)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {k: v.numpy() for k, v in zip(INPUT_NAMES[name], inputs, strict=True)}
    outs = session.run(list(OUTPUT_NAMES[name]), feed)
    return dict(zip(OUTPUT_NAMES[name], outs, strict=True))


def check_onnx(model: nn.Module, name: str, path: Path,
               inputs: tuple[torch.Tensor, ...]) -> float:  # fmt: skip
    """Largest absolute difference between torch (eval mode) and onnxruntime outputs.

    Only real-clip positions of "clip_screen" are compared (padding positions are
    meaningless and computed differently in eager mode).

    Args:
        model: the torch model that was exported.
        name: "view" or "rhd".
        path: the exported file.
        inputs: inputs to run both on.

    Returns:
        max |torch - onnx| over all outputs.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = model(*inputs)
    finally:
        model.train(was_training)
    got = run_onnx(path, inputs, name)
    worst = 0.0
    for key in OUTPUT_NAMES[name]:
        a, b = ref[key].numpy(), got[key]
        if key == "clip_screen":
            real = inputs[1].numpy()
            a, b = a[real], b[real]
        worst = max(worst, float(np.abs(a - b).max()))
    return worst


def _check_name(name: str) -> None:
    if name not in INPUT_NAMES:
        raise ConfigError(f"no ONNX export for model {name!r}; known: {', '.join(INPUT_NAMES)}")
