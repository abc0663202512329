"""The rhd model's evidence paths: what raises each detector's logit, before any training."""

from __future__ import annotations

import torch

from echoscreen.models.evidence import JetEvidence, MotionEvidence, soft_or, temporal_spread


def _clip(t: int = 16, s: int = 64) -> torch.Tensor:
    """A grey clip (1, 3, T, S, S) with mild speckle-like noise, fixed seed."""
    g = torch.Generator().manual_seed(0)
    base = 0.15 + 0.05 * torch.rand((1, 1, t, s, s), generator=g)
    return base.expand(1, 3, t, s, s).clone()


def _swinging_leaflet(brightness: float, width: int, swing: int) -> torch.Tensor:
    """A vertical bar of ``width`` px that moves ``swing`` px back and forth over the clip."""
    x = _clip()
    for i in range(x.shape[2]):
        col = 28 + round(swing * abs(((i % 8) - 4) / 4))
        x[0, :, i, 20:40, col : col + width] = brightness
    return x


def test_bright_thick_moving_leaflet_beats_a_normal_one() -> None:
    motion = MotionEvidence()
    with torch.no_grad():
        rheumatic = motion(_swinging_leaflet(0.9, 2, 6))
        normal = motion(_swinging_leaflet(0.45, 1, 6))
        still = motion(_swinging_leaflet(0.9, 2, 0))
    assert rheumatic.item() > 0 > normal.item()
    assert still.item() < 0  # a bright structure that does not move is no evidence
    assert temporal_spread(_clip()).item() < 0.05  # noise alone spreads little


def test_green_mosaic_raises_jet_evidence() -> None:
    jet = JetEvidence()
    grey = _clip()
    mosaic = grey.clone()
    mosaic[0, 1, :, 30:36, 30:36] = 0.8  # green-dominant pixels (the variance tag)
    mosaic[0, 0, :, 30:36, 30:36] = 0.2
    mosaic[0, 2, :, 30:36, 30:36] = 0.2
    with torch.no_grad():
        assert jet(mosaic).item() > jet(grey).item() + 2


def test_soft_or_is_high_when_either_is() -> None:
    a = torch.tensor([-5.0, 3.0, -5.0, 0.0])
    b = torch.tensor([-5.0, -5.0, 3.0, 0.0])
    out = soft_or(a, b)
    assert torch.allclose(out, torch.logaddexp(a, b))
    assert out[1] >= 3 and out[2] >= 3 and out[0] < -4
