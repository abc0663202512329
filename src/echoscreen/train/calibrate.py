"""Temperature scaling of the rhd model on the validation split (Guo et al. 2017).

After training, the study logits of the best weights on the validation studies are
collected with the model's temperatures at 1; one temperature for the screen logit
(binary NLL) and one for the three-class logits (cross-entropy) are fitted, and written
into the model's ``temperature`` buffer, which its forward divides those logits by.
Ranking (AUROC) is unchanged; only how confident the probabilities are.

The fit minimises the mean NLL plus a weak log-normal prior on T (``log T ~ N(0, 1)``,
weighted as one study) over a bounded grid of ``log T`` that includes T = 1: a
validation split of a few studies that the model separates perfectly would otherwise
drive T to its lower bound (probabilities of 0 and 1). Because the penalty is 0 at
T = 1, the fitted T never raises the validation NLL above that of T = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from echoscreen.train.config import TrainConfig
from echoscreen.train.loop import autocast, inputs

#: T is searched in [1 / TEMPERATURE_MAX, TEMPERATURE_MAX]
TEMPERATURE_MAX = 20.0
#: grid points of log T (odd, so that T = 1 is on the grid)
GRID = 1201
#: standard deviation of the prior on log T
PRIOR_STD = 1.0

Logits = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def screen_nll(logits: torch.Tensor, positive: torch.Tensor, temperature: float) -> float:
    """Mean binary NLL of screen logits (B,) at a temperature; ``positive`` (B,) in {0, 1}."""
    return float(F.binary_cross_entropy_with_logits(logits / temperature, positive.float()))


def class3_nll(logits: torch.Tensor, label: torch.Tensor, temperature: float) -> float:
    """Mean cross-entropy of three-class logits (B, 3) at a temperature; ``label`` (B,) long."""
    return float(F.cross_entropy(logits / temperature, label))


def fit_temperature(nll: Callable[[float], float], n: int) -> float:
    """The temperature minimising ``nll(T) + (log T)^2 / (2 PRIOR_STD^2 n)`` on a bounded grid.

    Args:
        nll: mean NLL over the ``n`` validation examples at temperature T.
        n: number of examples (the prior weighs as one of them).

    Returns:
        T in [1 / TEMPERATURE_MAX, TEMPERATURE_MAX]; 1.0 when ``n`` is 0.
    """
    if n == 0:
        return 1.0
    top = math.log(TEMPERATURE_MAX)
    best, best_t = math.inf, 1.0
    for i in range(GRID):
        u = -top + 2 * top * i / (GRID - 1)
        t = 1.0 if i == GRID // 2 else math.exp(u)
        value = nll(t) + u * u / (2 * PRIOR_STD**2 * n)
        if value < best:
            best, best_t = value, t
    return best_t


@torch.no_grad()
def study_logits(model: nn.Module, loader: Any, cfg: TrainConfig, device: torch.device) -> Logits:
    """Screen logits (B,), class3 logits (B, 3) and labels (B,) of a split's labelled studies."""
    model.eval()
    screen, class3, labels = [], [], []
    for batch in loader:
        args, targets = inputs(batch, cfg, 0, False, device)
        with autocast(device):
            out = model(*args)
        screen.append(out["screen"].float().cpu())
        class3.append(out["class3"].float().cpu())
        labels.append(targets["target"].cpu())
    y = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    known = y >= 0
    if not screen:
        return torch.zeros(0), torch.zeros(0, 3), y
    return torch.cat(screen)[known], torch.cat(class3)[known], y[known]


def calibrate(model: nn.Module, loader: Any, cfg: TrainConfig,
              device: torch.device) -> dict[str, Any]:  # fmt: skip
    """Fit the rhd model's temperatures on ``loader``'s studies and store them in the model.

    Args:
        model: an :class:`~echoscreen.models.RHDNet` (its ``temperature`` buffer is set).
        loader: the validation study loader.
        cfg: the run configuration (input transform).
        device: where the model is.

    Returns:
        ``{"method", "split", "n", "screen": {"temperature", "nll_before", "nll_after"},
        "class3": {...}}`` (NLLs are means over the validation studies).
    """
    buffer = model.get_buffer("temperature")
    buffer.fill_(1.0)
    screen, class3, y = study_logits(model, loader, cfg, device)
    n = int(y.numel())
    report: dict[str, Any] = {"method": "temperature scaling (min NLL, log-normal prior, bounded)",
                              "split": "val", "n": n}  # fmt: skip
    fits: list[tuple[str, Callable[[float], float]]] = [
        ("screen", lambda t: screen_nll(screen, (y > 0).long(), t)),
        ("class3", lambda t: class3_nll(class3, y, t)),
    ]
    for i, (name, nll) in enumerate(fits):
        t = fit_temperature(nll, n)
        buffer[i] = t
        report[name] = {"temperature": t, "nll_before": nll(1.0) if n else None,
                        "nll_after": nll(t) if n else None}  # fmt: skip
    return report
