"""ONNX export (opset 17) of every registered model matches torch under onnxruntime."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from echoscreen.errors import ConfigError
from echoscreen.models import MODEL_BUILDERS, ModelConfig, create_model
from echoscreen.models.onnx import OPSET, check_onnx, example_inputs, export_onnx, run_onnx

CFG = ModelConfig(size="small", frames=8, image=32)


@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_export_matches_torch_at_other_batch_and_clip_counts(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(name, CFG)
    # a few training steps' worth of BatchNorm statistics, so eval mode is not the identity
    with torch.no_grad():
        model(*example_inputs(name, CFG, batch=3, clips=2, seed=9))
    path = export_onnx(model, name, CFG, tmp_path / f"{name}.onnx")
    assert model.training  # export leaves the mode as it found it
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert any(o.domain in ("", "ai.onnx") and o.version == OPSET for o in proto.opset_import)
    for batch, clips, seed in [(1, 1, 1), (4, 5, 2)]:
        inputs = example_inputs(name, CFG, batch=batch, clips=clips, seed=seed)
        assert check_onnx(model, name, path, inputs) < 1e-4
    out = run_onnx(path, example_inputs(name, CFG, batch=4, clips=5, seed=2), name)
    assert next(iter(out.values())).shape[0] == 4


def test_export_of_unknown_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="view, rhd"):
        export_onnx(create_model("view", CFG), "vit", CFG, tmp_path / "x.onnx")
