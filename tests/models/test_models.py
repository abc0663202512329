"""Every registered model: forward + backward at the documented shapes, masking, determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from echoscreen.errors import ConfigError
from echoscreen.models import (
    LABELS,
    MODEL_BUILDERS,
    VIEWS,
    ModelConfig,
    count_parameters,
    create_model,
    to_input,
)
from echoscreen.models.onnx import example_inputs
from echoscreen.models.view import ViewNet

SMALL = ModelConfig(size="small", frames=8, image=32)
TINY_LARGE = ModelConfig(size="large", frames=4, image=16)


def expected_shapes(name: str, b: int, n: int) -> dict[str, tuple[int, ...]]:
    if name == "view":
        return {"view": (b, len(VIEWS)), "doppler": (b,)}
    return {"screen": (b,), "class3": (b, len(LABELS)), "clip_screen": (b, n), "attention": (b, n)}


def run(model: nn.Module, name: str, cfg: ModelConfig, b: int = 2, n: int = 3,
        seed: int = 0) -> dict[str, torch.Tensor]:  # fmt: skip
    out: dict[str, torch.Tensor] = model(*example_inputs(name, cfg, batch=b, clips=n, seed=seed))
    return out


@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_small_forward_backward_reaches_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, SMALL)
    out = run(model, name, SMALL)
    assert {k: tuple(v.shape) for k, v in out.items()} == expected_shapes(name, 2, 3)
    assert all(torch.isfinite(v).all() for v in out.values())
    loss = sum(v.float().pow(2).mean() for v in out.values())
    assert isinstance(loss, torch.Tensor)
    loss.backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_large_is_wider_and_runs_at_tiny_input(name: str) -> None:
    torch.manual_seed(0)
    large = create_model(name, TINY_LARGE).eval()
    with torch.no_grad():
        out = run(large, name, TINY_LARGE, b=2, n=2)
    assert {k: tuple(v.shape) for k, v in out.items()} == expected_shapes(name, 2, 2)
    assert count_parameters(large) > 5 * count_parameters(create_model(name, SMALL))


def test_rhd_padding_clips_do_not_change_the_study_output() -> None:
    torch.manual_seed(0)
    model = create_model("rhd", SMALL).eval()
    clips, _, views = example_inputs("rhd", SMALL, batch=2, clips=3, seed=1)
    mask = torch.ones(2, 3, dtype=torch.bool)
    # the same studies with 2 extra padding clips of noise and arbitrary views
    pad = torch.rand(2, 2, *clips.shape[2:]) * 3.0
    clips5 = torch.cat([clips, pad], dim=1)
    mask5 = torch.cat([mask, torch.zeros(2, 2, dtype=torch.bool)], dim=1)
    views5 = torch.cat([views, torch.tensor([[0, 6], [3, -1]])], dim=1)
    with torch.no_grad():
        a = model(clips, mask, views)
        b = model(clips5, mask5, views5)
    for key in ("screen", "class3"):
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a["clip_screen"], b["clip_screen"][:, :3], atol=1e-5, rtol=1e-5)
    assert (b["attention"][:, 3:] == 0).all()
    torch.testing.assert_close(b["attention"].sum(1), torch.ones(2))
    # and padding interleaved with real clips (not only at the end) is ignored as well
    order = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        c = model(clips5[:, order], mask5[:, order], views5[:, order])
    torch.testing.assert_close(a["screen"], c["screen"], atol=1e-5, rtol=1e-5)


def test_rhd_output_depends_on_the_view() -> None:
    torch.manual_seed(0)
    model = create_model("rhd", SMALL).eval()
    clips, mask, _ = example_inputs("rhd", SMALL, batch=1, clips=2, seed=3)
    with torch.no_grad():
        a = model(clips, mask, torch.tensor([[0, 0]]))["screen"]
        b = model(clips, mask, torch.tensor([[4, 4]]))["screen"]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_same_seed_same_model_and_output(name: str) -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = create_model(name, SMALL).eval()
        with torch.no_grad():
            outs.append(run(model, name, SMALL, seed=5))
    for key in outs[0]:
        assert torch.equal(outs[0][key], outs[1][key])
    torch.manual_seed(8)
    other = create_model(name, SMALL).eval()
    with torch.no_grad():
        first = next(iter(outs[0]))
        assert not torch.equal(run(other, name, SMALL, seed=5)[first], outs[0][first])


def test_view_net_accepts_other_clip_lengths_and_sizes() -> None:
    model = create_model("view", SMALL).eval()
    with torch.no_grad():
        out = model(torch.rand(3, 3, 5, 40, 40))
    assert out["view"].shape == (3, len(VIEWS))


def test_unknown_model_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="rhd") as err:
        create_model("resnet50", SMALL)
    assert "view" in str(err.value)


@pytest.mark.parametrize("kwargs", [{"size": "huge"}, {"frames": 0}, {"image": 4},
                                    {"dropout": 1.0}])  # fmt: skip
def test_bad_config_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ModelConfig(**kwargs)  # type: ignore[arg-type]


def test_to_input_scales_uint8_to_unit_range() -> None:
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1, 1)
    y = to_input(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.flatten(), torch.tensor([0.0, 0.2, 1.0]))
    assert to_input(y) is not None and torch.equal(to_input(y), y)
    with pytest.raises(ConfigError):
        to_input(torch.zeros(2, dtype=torch.int64))


def test_view_net_ignores_the_clips_gain_and_contrast() -> None:
    torch.manual_seed(0)
    model = create_model("view", SMALL).eval()
    assert isinstance(model, ViewNet)
    x = 0.1 + 0.5 * torch.rand(2, 3, 8, 32, 32)
    with torch.no_grad():
        ref = model.embed(x)
        dimmer = model.embed(0.6 * x + 0.05)  # another scanner gain: same clip, other levels
        other = model.embed(x.pow(3))  # another picture (not an affine change)
    scale = ref.abs().max()
    assert (ref - dimmer).abs().max() < 1e-2 * scale  # only the 1e-3 guard of the std differs
    assert (ref - other).abs().max() > 0.1 * scale


def test_view_weights_from_before_standardisation_do_not_load() -> None:
    state = create_model("view", SMALL).state_dict()
    del state["level"]  # what a package published before the buffer existed holds
    with pytest.raises(RuntimeError, match="level"):
        create_model("view", SMALL).load_state_dict(state)
