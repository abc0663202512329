"""Building blocks shared by the view classifier and the RHD model.

Shapes follow the data package: clips are ``(B, 3, T, S, S)`` (channels, time, height,
width). Every block is plain torch and exports to ONNX (opset 17).
"""

from __future__ import annotations

import torch
from torch import nn

from echoscreen.errors import ConfigError

#: logit given to padding positions before a softmax (exp underflows to exactly 0 in fp32,
#: and -1e4 stays finite in fp16 under autocast)
MASKED_LOGIT = -1.0e4


def to_input(x: torch.Tensor) -> torch.Tensor:
    """Turn stored clip pixels into network input.

    Args:
        x: uint8 clips of any shape, typically (B, 3, T, S, S) or (B, N, 3, T, S, S);
            a floating tensor is taken as already scaled to [0, 1] and only cast.

    Returns:
        float32 tensor of the same shape with values in [0, 1] (pixel / 255).

    Raises:
        ConfigError: for an integer dtype other than uint8 (not stored clip pixels).
    """
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if x.is_floating_point():
        return x.to(torch.float32)
    raise ConfigError(
        f"model input has dtype {x.dtype}; pass uint8 clip pixels or floats in [0, 1]"
    )


def add_colourfulness(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Append a colourfulness channel, max - min over RGB (0 on grey pixels, high on Doppler).

    Args:
        x: float tensor with the 3 RGB channels along ``dim``.
        dim: the channel dimension.

    Returns:
        The tensor with 4 channels along ``dim``: R, G, B, max(RGB) - min(RGB).
    """
    chroma = x.amax(dim=dim, keepdim=True) - x.amin(dim=dim, keepdim=True)
    return torch.cat([x, chroma], dim=dim)


def standardise_clips(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Give every clip the same brightness and contrast (per clip, over all its pixels).

    ``level + level[1] * (x - mean) / (std + 1e-3)`` with one mean and standard deviation
    per clip, over channels, frames and pixels: the gain and contrast a scanner or
    operator chose no longer reach the network; the layout does.

    Args:
        x: (B, C, T, S, S) float clips.
        level: (2,) ``[mean, scale]`` of the output (e.g. ``[0.2, 0.2]``: the phantom's
            typical clip mean and standard deviation, so the output stays near [0, 1]).

    Returns:
        (B, C, T, S, S) standardised clips.
    """
    dims = tuple(range(1, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    std = (x - mean).pow(2).mean(dim=dims, keepdim=True).sqrt()
    return level[0] + level[1] * (x - mean) / (std + 1e-3)


def norm2d(channels: int) -> nn.Module:
    """BatchNorm for the frame-level CNN (batches hold B*T frames, plenty for statistics)."""
    return nn.BatchNorm2d(channels)


def norm3d(channels: int) -> nn.Module:
    """GroupNorm for video blocks: per clip, so padding clips never touch real clips' statistics."""
    groups = 8 if channels % 8 == 0 else 1
    return nn.GroupNorm(groups, channels)


class ConvBlock2d(nn.Module):
    """``depth`` x (3x3 conv, norm, ReLU); the first conv has stride 2 (halves S).

    Shapes: (M, C_in, S, S) -> (M, C_out, ceil(S/2), ceil(S/2)).
    """

    def __init__(self, c_in: int, c_out: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [
                nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, stride=2 if i == 0 else 1,
                          padding=1, bias=False),
                norm2d(c_out),
                nn.ReLU(inplace=True),
            ]  # fmt: skip
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(M, C_in, S, S) -> (M, C_out, S/2, S/2)."""
        out: torch.Tensor = self.body(x)
        return out


class Conv2Plus1d(nn.Module):
    """A factorised 3D conv: (1,3,3) spatial, norm, ReLU, then (3,1,1) temporal.

    Shapes: (M, C_in, T, S, S) -> (M, C_out, T/st, S/ss, S/ss) for strides ``st``, ``ss``.
    """

    def __init__(self, c_in: int, c_out: int, t_stride: int = 1, s_stride: int = 1) -> None:
        super().__init__()
        self.spatial = nn.Conv3d(c_in, c_out, (1, 3, 3), stride=(1, s_stride, s_stride),
                                 padding=(0, 1, 1), bias=False)  # fmt: skip
        self.norm = norm3d(c_out)
        self.act = nn.ReLU(inplace=True)
        self.temporal = nn.Conv3d(c_out, c_out, (3, 1, 1), stride=(t_stride, 1, 1),
                                  padding=(1, 0, 0), bias=False)  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(M, C_in, T, S, S) -> (M, C_out, T', S', S')."""
        out: torch.Tensor = self.temporal(self.act(self.norm(self.spatial(x))))
        return out


class ResBlock2Plus1d(nn.Module):
    """A residual (2+1)D block (R(2+1)D, Tran et al. 2018) with GroupNorm.

    Shapes: (M, C_in, T, S, S) -> (M, C_out, T/st, S/ss, S/ss).
    """

    def __init__(self, c_in: int, c_out: int, t_stride: int = 1, s_stride: int = 1) -> None:
        super().__init__()
        self.conv1 = Conv2Plus1d(c_in, c_out, t_stride, s_stride)
        self.norm1 = norm3d(c_out)
        self.conv2 = Conv2Plus1d(c_out, c_out)
        self.norm2 = norm3d(c_out)
        self.act = nn.ReLU(inplace=True)
        self.skip: nn.Module = nn.Identity()
        if c_in != c_out or t_stride != 1 or s_stride != 1:
            self.skip = nn.Sequential(
                nn.Conv3d(c_in, c_out, 1, stride=(t_stride, s_stride, s_stride), bias=False),
                norm3d(c_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(M, C_in, T, S, S) -> (M, C_out, T', S', S')."""
        h = self.act(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        out: torch.Tensor = self.act(h + self.skip(x))
        return out


def mean_max(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Concatenate the mean and the max over ``dims`` along dim 1 (feature width doubles).

    Args:
        x: (M, C, ...) features.
        dims: the dimensions (all >= 2) to pool away.

    Returns:
        (M, 2C, ...remaining dims) features: [mean, max].
    """
    mean = x.mean(dim=dims)
    peak = x.amax(dim=dims)
    return torch.cat([mean, peak], dim=1)
