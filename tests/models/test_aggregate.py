"""Study aggregation baselines: mean probability, majority vote, max; padding ignored."""

from __future__ import annotations

import math

import pytest
import torch

from echoscreen.errors import ConfigError
from echoscreen.models import aggregate

P = torch.tensor([[0.2, 0.9, 0.6, 0.99], [0.1, 0.3, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
MASK = torch.tensor([[True, True, True, False], [True, True, False, False],
                     [False, False, False, False]])  # fmt: skip


def test_mean_ignores_padding() -> None:
    out = aggregate(P, MASK, "mean")
    torch.testing.assert_close(out[:2], torch.tensor([(0.2 + 0.9 + 0.6) / 3, 0.2]))


def test_vote_is_the_fraction_of_positive_clips() -> None:
    out = aggregate(P, MASK, "vote")
    torch.testing.assert_close(out[:2], torch.tensor([2 / 3, 0.0]))


def test_max_ignores_padding() -> None:
    out = aggregate(P, MASK, "max")
    torch.testing.assert_close(out[:2], torch.tensor([0.9, 0.3]))


@pytest.mark.parametrize("method", ["mean", "vote", "max"])
def test_study_without_clips_is_nan(method: str) -> None:
    assert math.isnan(float(aggregate(P, MASK, method)[2]))


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ConfigError, match="mean, vote, max"):
        aggregate(P, MASK, "median")
