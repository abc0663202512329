"""Study-level aggregation baselines over per-clip probabilities (as published RHD work does).

The RHD model's learned attention pooling is compared against these three.
"""

from __future__ import annotations

import torch

from echoscreen.errors import ConfigError

#: the aggregation methods :func:`aggregate` knows
AGGREGATIONS: tuple[str, ...] = ("mean", "vote", "max")


def aggregate(clip_probs: torch.Tensor, mask: torch.Tensor, method: str) -> torch.Tensor:
    """Combine per-clip screen-positive probabilities into one score per study.

    Args:
        clip_probs: (B, N) probabilities in [0, 1] (e.g. ``sigmoid(out["clip_screen"])``).
        mask: (B, N) bool, True = real clip; padding is ignored.
        method: "mean" (mean probability), "vote" (fraction of real clips with p >= 0.5;
            a majority vote decides positive when it exceeds 0.5), or "max".

    Returns:
        (B,) float scores in [0, 1]; NaN for a study without real clips.

    Raises:
        ConfigError: for an unknown method.
    """
    if method not in AGGREGATIONS:
        raise ConfigError(f"unknown aggregation {method!r}; use one of {', '.join(AGGREGATIONS)}")
    p = clip_probs.to(torch.float32)
    real = mask.to(torch.bool)
    count = real.sum(dim=1).to(torch.float32)
    empty = count == 0
    if method == "max":
        out = p.masked_fill(~real, float("-inf")).amax(dim=1)
    else:
        values = (p >= 0.5).to(torch.float32) if method == "vote" else p
        out = (values * real).sum(dim=1) / count.clamp(min=1.0)
    return out.masked_fill(empty, float("nan"))
