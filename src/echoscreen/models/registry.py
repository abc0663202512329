"""The explicit registry of model builders: ``create_model(name, cfg)``.

A plain dict, filled where it is written (no import side effects, no decorators).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from echoscreen.errors import ConfigError
from echoscreen.models.config import ModelConfig
from echoscreen.models.rhd import RHDNet
from echoscreen.models.view import ViewNet

#: model name -> builder; "view" is the view classifier, "rhd" the RHD screening model
MODEL_BUILDERS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "view": ViewNet,
    "rhd": RHDNet,
}


def create_model(name: str, cfg: ModelConfig | None = None) -> nn.Module:
    """Build a freshly initialised model (weights from torch's current RNG state).

    Args:
        name: a key of :data:`MODEL_BUILDERS` ("view" or "rhd").
        cfg: the configuration; the default ``ModelConfig()`` is the small size.

    Returns:
        The model, in training mode.

    Raises:
        ConfigError: for an unknown name (the message lists the known ones).
    """
    builder = MODEL_BUILDERS.get(name)
    if builder is None:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(MODEL_BUILDERS)}")
    return builder(cfg if cfg is not None else ModelConfig())


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
