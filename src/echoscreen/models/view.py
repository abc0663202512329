"""The view classifier: a frame-level 2D CNN pooled over time.

Each clip is first standardised (one brightness and contrast for every clip, so the
scanner's gain does not matter); every frame then goes through the same small CNN
(input RGB + colourfulness) whose last stage sees the whole frame; the frame features
are pooled over space and then over time (mean and max), and two heads give the view
(7 logits, :data:`~echoscreen.models.config.VIEWS`) and B-mode vs colour Doppler
(1 logit, positive = Doppler).
"""

from __future__ import annotations

import torch
from torch import nn

from echoscreen.models.config import VIEWS, ModelConfig
from echoscreen.models.layers import ConvBlock2d, add_colourfulness, mean_max, standardise_clips

#: mean and scale of a standardised clip (about the phantom's mean and standard deviation)
CLIP_LEVEL = (0.2, 0.2)


class ViewNet(nn.Module):
    """Frame-level CNN + temporal pooling; see the module docstring.

    Args:
        cfg: the model configuration (widths and depths from ``cfg.arch``).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        arch = cfg.arch
        widths = arch.view_widths
        stages: list[nn.Module] = []
        c_in = 4  # RGB + colourfulness
        for width in widths:
            stages.append(ConvBlock2d(c_in, width, arch.view_depth))
            c_in = width
        self.frames = nn.Sequential(*stages)
        # a buffer, so weights saved before standardisation existed fail to load (not
        # silently run on unstandardised input)
        self.level: torch.Tensor
        self.register_buffer("level", torch.tensor(CLIP_LEVEL))
        feat = 4 * widths[-1]  # [mean, max] over space, then [mean, max] over time
        self.drop = nn.Dropout(cfg.dropout)
        self.view_head = nn.Linear(feat, len(VIEWS))
        self.doppler_head = nn.Linear(feat, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clip features.

        Args:
            x: (B, 3, T, S, S) float clips in [0, 1] (see :func:`to_input`).

        Returns:
            (B, 4 * widths[-1]) features.
        """
        b = x.shape[0]
        x = add_colourfulness(standardise_clips(x, self.level), dim=1)  # (B, 4, T, S, S)
        frames = x.transpose(1, 2).flatten(0, 1)  # (B*T, 4, S, S)
        f = mean_max(self.frames(frames), dims=(2, 3))  # (B*T, 2C)
        f = f.unflatten(0, (b, -1)).transpose(1, 2)  # (B, 2C, T)
        return mean_max(f, dims=(2,))  # (B, 4C)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Classify clips.

        Args:
            x: (B, 3, T, S, S) float clips in [0, 1].

        Returns:
            {"view": (B, 7) logits over VIEWS, "doppler": (B,) logit of colour Doppler}.
        """
        h = self.drop(self.embed(x))
        return {"view": self.view_head(h), "doppler": self.doppler_head(h).squeeze(1)}
