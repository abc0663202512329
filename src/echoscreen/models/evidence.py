"""Evidence paths of the RHD model: small detectors of the two kinds of WHF findings.

Each maps clips (M, 3, T, S, S) in [0, 1] to one logit per clip, with few parameters
and a hand-set initial state, so that the local finding counts from the first step
instead of having to be discovered by a deep network from a few dozen studies:

- :class:`JetEvidence`: regurgitant jets in colour Doppler (the turbulence mosaic).
- :class:`MotionEvidence`: leaflet morphology in B-mode (thickened, echo-bright leaflets
  swinging through the blood pool), for studies that are screen-positive without a jet.
"""

from __future__ import annotations

import torch
from torch import nn

from echoscreen.models.layers import add_colourfulness

#: hidden channels of the per-pixel jet detector
EVIDENCE_HIDDEN = 8
#: initial slope of the clip logit in the log of the detector's peak pixel share
EVIDENCE_SCALE = 2.0
#: initial pixel logit of the jet detector (sigmoid 0.0025: ~10 of 4096 pixels)
EVIDENCE_PIXEL_BIAS = -6.0
#: gain on the detector's pixel logits (the detector must move them by ~10 to separate
#: colours; at gain 1, AdamW's steps of ~lr per parameter take hundreds of steps to get there)
EVIDENCE_GAIN = 10.0
#: added to the share before the log (a significant jet covers ~0.1-1% of a 64 px frame)
EVIDENCE_EPS = 1e-3
#: log share at which the clip logit is the bias (about twice the initial share)
EVIDENCE_LOG0 = -5.5


#: side of the box blur before the temporal spread (2 px at 64 px: averages speckle, keeps a
#: 1-2 px leaflet)
MOTION_BLUR = 2
#: fraction of the frame whose temporal spread is averaged (8 of 4096 pixels at 64 px)
MOTION_TOP = 8 / 4096
#: spread (brightness units, 0-1) at which the motion logit is 0: about the 90th percentile
#: of normal studies' largest clip spread in the demo's training cohort (seed 2026)
MOTION_CENTER = 0.215
#: initial slope of the motion logit in the spread (+-2 over the normal-to-rheumatic range)
MOTION_SCALE = 30.0


def colour_features(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel colour features: (M, 3, T, S, S) RGB -> (M, 7, T, S, S).

    R, G, B, colourfulness (max - min), and each channel's dominance (the channel minus the
    larger of the other two). Dominances are 0 on grey pixels (most of an echo), so only
    colour-Doppler pixels move a detector's weights on them.
    """
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    dom = torch.cat([r - torch.maximum(g, b), g - torch.maximum(r, b), b - torch.maximum(r, g)], 1)
    return torch.cat([add_colourfulness(x, dim=1), dom], dim=1)


def _init_green_tag(first: nn.Conv3d, second: nn.Conv3d) -> None:
    """Start the detector as "green-dominant pixel": the colour Doppler variance tag.

    Hidden unit 0 reads the green dominance (relu(dG - 0.1)) and alone feeds the pixel
    logit, which is EVIDENCE_PIXEL_BIAS on other pixels and about +4 at dG = 0.3. The other
    hidden units start silent (zero output weights) and learn what else counts. Learning
    this colour rule from scratch through a max over frames and clips took far more steps
    than a 2-core budget gives (measured: no separation after 30 full-batch steps).
    """
    assert first.bias is not None and second.bias is not None  # built with bias=True
    with torch.no_grad():
        first.weight[0].zero_()
        first.weight[0, 5] = 1.0  # channel 5 of colour_features: green dominance
        first.bias[0] = -0.1
        second.weight.zero_()
        second.weight[0, 0] = 10.0 / (EVIDENCE_GAIN * 0.2)
        second.bias.fill_(EVIDENCE_PIXEL_BIAS / EVIDENCE_GAIN)


class JetEvidence(nn.Module):
    """A small per-pixel detector of colour-Doppler findings: (M, 3, T, S, S) -> (M,) logits.

    A per-pixel two-layer perceptron (1x1 convolutions) on RGB + colourfulness gives the
    probability that a pixel shows the finding's colour (the turbulence mosaic); its mean
    over space is the share of the frame the finding covers, and its max over time the
    clip's peak share. The clip logit is affine in the log of that share (a significant jet
    covers well under 1% of a 64 px frame, so the log spreads small shares apart).
    With few parameters and no view of the study's other clips it cannot memorise
    studies, and it reads the local evidence (a broad turbulent jet) that the deep encoder
    averages away.
    """

    def __init__(self, hidden: int = EVIDENCE_HIDDEN) -> None:
        super().__init__()
        first, second = nn.Conv3d(7, hidden, 1), nn.Conv3d(hidden, 1, 1)
        _init_green_tag(first, second)
        self.pixel = nn.Sequential(first, nn.ReLU(inplace=True), second)
        self.scale = nn.Parameter(torch.tensor(EVIDENCE_SCALE))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(M, 3, T, S, S) float clips in [0, 1] -> (M,) clip evidence logits."""
        p = torch.sigmoid(EVIDENCE_GAIN * self.pixel(colour_features(x)))  # (M, 1, T, S, S)
        share = p.mean(dim=(1, 3, 4)).amax(dim=1)  # (M,) peak share of a frame
        log_share = torch.log(share + EVIDENCE_EPS) - EVIDENCE_LOG0
        out: torch.Tensor = self.scale * log_share + self.bias
        return out


def temporal_spread(
    x: torch.Tensor, blur: int = MOTION_BLUR, top: float = MOTION_TOP
) -> torch.Tensor:
    """Brightness spread over time of a clip's most changing pixels: (M, 3, T, S, S) -> (M,).

    Brightness (the RGB mean) is box-blurred over ``blur`` x ``blur`` pixels, its standard
    deviation over time taken per pixel, and the mean of the largest ``top`` fraction of
    those returned. A bright leaflet that opens and closes moves the most brightness.
    """
    m, t, s = x.shape[0], x.shape[2], x.shape[3]
    lum = x.mean(dim=1).reshape(m * t, 1, s, x.shape[4])
    lum = nn.functional.avg_pool2d(lum, blur, stride=1)
    lum = lum.reshape(m, t, -1)  # (M, T, P)
    var = (lum - lum.mean(dim=1, keepdim=True)).square().mean(dim=1)  # (M, P)
    k = max(1, round(top * int(var.shape[1])))  # a constant when traced for ONNX
    return (var.topk(k, dim=1).values + 1e-8).sqrt().mean(dim=1)


class MotionEvidence(nn.Module):
    """Leaflet-morphology evidence from B-mode motion: (M, 3, T, S, S) -> (M,) logits.

    Rheumatic leaflets are thickened and echo-bright (WHF morphological features), so the
    pixels they sweep through as the valve opens and closes change brightness more than
    anywhere in a normal heart; restricted and excessive tip motion change where and how
    far. The logit is affine in :func:`temporal_spread` (learnable slope and centre).
    Colour clips pass too: their B-mode background carries the same signal, and their
    colour changes less per pixel than a bright leaflet.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(MOTION_SCALE))
        self.center = nn.Parameter(torch.tensor(MOTION_CENTER))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(M, 3, T, S, S) float clips in [0, 1] -> (M,) clip motion logits."""
        out: torch.Tensor = self.scale * (temporal_spread(x) - self.center)
        return out


def soft_or(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(exp(a) + exp(b)), elementwise: high when either logit is (ONNX-friendly ops)."""
    top = torch.maximum(a, b)
    return top + torch.log1p(torch.exp(-(a - b).abs()))
