"""Label vocabularies and the model configuration shared by every builder.

One code path builds both sizes: :class:`ModelConfig` picks the stage widths and
depths from :data:`ARCHS`; nothing else differs between "small" and "large".
"""

from __future__ import annotations

from dataclasses import dataclass

from echoscreen.errors import ConfigError
from echoscreen.vocab import LABELS, RHD_VIEWS, VIEWS

__all__ = ["ARCHS", "LABELS", "RHD_VIEWS", "VIEWS", "Arch", "ModelConfig"]


@dataclass(frozen=True)
class Arch:
    """Widths and depths of one model size.

    Attributes:
        view_widths: channels of each stage of the frame-level 2D CNN (each stage halves S).
        view_depth: conv layers per stage of the 2D CNN.
        clip_widths: channels of each (2+1)D stage of the RHD clip encoder.
        clip_depth: (2+1)D blocks per stage.
        embed: clip and study embedding width D of the RHD model.
    """

    view_widths: tuple[int, ...]
    view_depth: int
    clip_widths: tuple[int, ...]
    clip_depth: int
    embed: int


#: the two sizes; "small" trains on 2 CPU cores in minutes, "large" is meant for a GPU.
#: The view CNN's stages set its receptive field: 3 stages (15 px) gave held-out view
#: accuracy 0.83 on a 40-study phantom run, 4 (31 px, half a 64 px frame) 0.94; a 5th
#: (63 px: the whole heart, so a4c and a5c differ by layout) 0.92 -> 0.945 (docs/models.md).
ARCHS: dict[str, Arch] = {
    "small": Arch(view_widths=(16, 32, 64, 128, 128), view_depth=1, clip_widths=(16, 32, 64),
                  clip_depth=1, embed=64),
    "large": Arch(view_widths=(32, 64, 128, 256, 256), view_depth=2,
                  clip_widths=(32, 64, 128, 256), clip_depth=2, embed=256),
}  # fmt: skip


@dataclass(frozen=True)
class ModelConfig:
    """How to build a model.

    Attributes:
        size: "small" (2 CPU cores, minutes) or "large" (GPU); picks an :class:`Arch`.
        frames: input frame count T the network is built for (used for example inputs
            and the ONNX export; the networks themselves accept any T >= 1).
        image: input side S in pixels the network is built for (any S >= 8 works).
        dropout: dropout probability before the heads.
    """

    size: str = "small"
    frames: int = 16
    image: int = 64
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.size not in ARCHS:
            raise ConfigError(
                f"unknown model size {self.size!r}; use one of {', '.join(sorted(ARCHS))}"
            )
        if self.frames < 1 or self.image < 8:
            raise ConfigError(
                f"model input {self.frames} frames x {self.image} px is too small; "
                "use frames >= 1 and image >= 8"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout {self.dropout} must lie in [0, 1)")

    @property
    def arch(self) -> Arch:
        """The widths and depths of this size."""
        return ARCHS[self.size]
