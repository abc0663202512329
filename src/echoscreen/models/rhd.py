"""The RHD screening model: a (2+1)D clip encoder and attention pooling over a study's clips.

Each clip (RGB + colourfulness) goes through a residual (2+1)D video network whose
temporal convolutions see how long a jet lasts (pan-systolic vs a short early jet); the
clip embedding is layer-normalised and a (small) learned embedding of the clip's view is
added, and gated attention pooling (Ilse et al. 2018) over the study's real clips gives
the study embedding, read by a screen-positive head (1 logit) and a three-class head
(:data:`~echoscreen.models.config.LABELS`). A per-clip screen head feeds the mean / vote /
max baselines (:func:`aggregate`).
"""

from __future__ import annotations

import torch
from torch import nn

from echoscreen.models.config import VIEWS, ModelConfig
from echoscreen.models.layers import (
    MASKED_LOGIT,
    Conv2Plus1d,
    ResBlock2Plus1d,
    add_colourfulness,
    mean_max,
    norm3d,
)

#: view index used for clips whose view is unknown (index < 0 in ``views``)
UNKNOWN_VIEW = len(VIEWS)
#: initial standard deviation of the view embedding (the normalised clip embedding has 1)
VIEW_EMBED_STD = 0.1
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


class ClipEncoder(nn.Module):
    """(2+1)D residual video network: (M, 3, T, S, S) in [0, 1] -> (M, D) clip embeddings.

    Every stage halves S; stages from the third on also halve T. A temporal conv over the
    spatially pooled features, then mean and max over time, give the embedding; to it is
    added a projection of the max over time and space of the stem's and every stage's
    features, so that a small local finding (a jet's mosaic, a bright leaflet) reaches the
    embedding directly instead of being averaged away by the deep, coarse stages.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        arch = cfg.arch
        widths = arch.clip_widths
        self.stem = nn.Sequential(Conv2Plus1d(4, widths[0], s_stride=2), norm3d(widths[0]),
                                  nn.ReLU(inplace=True))  # fmt: skip
        stages: list[nn.Module] = []
        c_in = widths[0]
        for i, width in enumerate(widths):
            blocks: list[nn.Module] = []
            for j in range(arch.clip_depth):
                first = j == 0
                blocks.append(ResBlock2Plus1d(c_in, width, t_stride=2 if first and i >= 2 else 1,
                                              s_stride=2 if first else 1))  # fmt: skip
                c_in = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.peaks = nn.Linear(widths[0] + sum(widths), arch.embed)
        self.temporal = nn.Sequential(nn.Conv1d(2 * c_in, arch.embed, 3, padding=1),
                                      nn.ReLU(inplace=True))  # fmt: skip
        self.proj = nn.Linear(2 * arch.embed, arch.embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(M, 3, T, S, S) float clips -> (M, D) embeddings."""
        h = self.stem(add_colourfulness(x, dim=1))  # (M, C0, T, S/2, S/2)
        peaks = [h.amax(dim=(2, 3, 4))]
        for stage in self.stages:
            h = stage(h)  # (M, C, T', S', S')
            peaks.append(h.amax(dim=(2, 3, 4)))
        t = self.temporal(mean_max(h, dims=(3, 4)))  # (M, D, T')
        out: torch.Tensor = self.proj(mean_max(t, dims=(2,))) + self.peaks(torch.cat(peaks, 1))
        return out


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


def _default_temperature(module: nn.Module, state: dict[str, torch.Tensor], prefix: str,
                         *_: object) -> None:  # fmt: skip
    """Load weights saved before the temperature buffer existed as uncalibrated (T = 1)."""
    state.setdefault(prefix + "temperature", torch.ones(2))


class RHDNet(nn.Module):
    """Clip encoder + view embedding + masked gated-attention pooling; see the module docstring.

    Args:
        cfg: the model configuration (widths and depths from ``cfg.arch``).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.arch.embed
        self.encoder = ClipEncoder(cfg)
        self.view_embed = nn.Embedding(len(VIEWS) + 1, d)  # last row: unknown view
        # small view embeddings: N(0, 1) rows (torch's default) drowned the clip content,
        # every study (same views) got the same embedding and the same output
        nn.init.normal_(self.view_embed.weight, std=VIEW_EMBED_STD)
        self.norm = nn.LayerNorm(d)
        self.attn_v = nn.Linear(d, d // 2)
        self.attn_u = nn.Linear(d, d // 2)
        self.attn_w = nn.Linear(d // 2, 1)
        self.drop = nn.Dropout(cfg.dropout)
        self.clip_head = nn.Linear(d, 1)
        self.screen_head = nn.Linear(d, 1)
        self.class3_head = nn.Linear(d, 3)
        self.evidence = JetEvidence()
        # the three classes' slopes in the study's peak clip evidence (normal falls, others rise)
        self.class3_evidence = nn.Parameter(torch.tensor([-1.0, 0.5, 1.0]))
        # temperature scaling [screen, class3]: the study logits are divided by it; 1 until
        # fitted on validation after training (echoscreen.train.calibrate), then saved with
        # the weights, so every user of the model (ONNX, screening, saliency) gets it
        self.register_buffer("temperature", torch.ones(2))
        self.register_load_state_dict_pre_hook(_default_temperature)

    def encode(self, clips: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Embed the clips; in eager mode only real clips are computed.

        Args:
            clips: (B, N, 3, T, S, S) float clips in [0, 1].
            mask: (B, N) bool, True = real clip.

        Returns:
            (B, N, D) embeddings; rows of padding clips are zeros in eager mode (when
            tracing or exporting every clip is encoded, which gives the same study output).
        """
        flat = clips.flatten(0, 1)
        exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if exporting or torch.compiler.is_compiling() or bool(mask.all()):
            return self.encoder(flat).unflatten(0, (clips.shape[0], clips.shape[1]))
        keep = mask.flatten()
        real = self.encoder(flat[keep])
        h = real.new_zeros(flat.shape[0], real.shape[1])
        h = h.index_put((keep.nonzero().squeeze(1),), real)
        return h.unflatten(0, (clips.shape[0], clips.shape[1]))

    def forward(self, clips: torch.Tensor, mask: torch.Tensor,
                views: torch.Tensor) -> dict[str, torch.Tensor]:  # fmt: skip
        """Screen studies.

        Args:
            clips: (B, N, 3, T, S, S) float clips in [0, 1] (see :func:`to_input`).
            mask: (B, N) bool, True = real clip, False = padding (any N; a study needs
                at least one real clip for a meaningful output).
            views: (B, N) int64 index into VIEWS; negative = unknown view.

        Returns:
            {"screen": (B,) screen-positive logit, "class3": (B, 3) logits over LABELS
            (both divided by their fitted temperature, so sigmoid / softmax are calibrated),
            "clip_screen": (B, N) per-clip screen logits (meaningless at padding),
            "attention": (B, N) pooling weights (0 at padding, summing to 1 per study)}.
        """
        views = torch.where(views < 0, torch.full_like(views, UNKNOWN_VIEW), views)
        h = self.norm(self.encode(clips, mask)) + self.view_embed(views)  # (B, N, D)
        score = self.attn_w(torch.tanh(self.attn_v(h)) * torch.sigmoid(self.attn_u(h)))
        score = score.squeeze(2).masked_fill(~mask, MASKED_LOGIT)
        attention = torch.softmax(score, dim=1)  # (B, N)
        study = self.drop((attention.unsqueeze(2) * h).sum(dim=1))  # (B, D)
        evidence = self.evidence(clips.flatten(0, 1)).unflatten(0, mask.shape)  # (B, N)
        clip = self.clip_head(self.drop(h)).squeeze(2) + evidence
        peak = clip.masked_fill(~mask, MASKED_LOGIT).amax(dim=1)  # (B,) most positive clip
        screen = self.screen_head(study).squeeze(1) + peak
        class3 = self.class3_head(study) + self.class3_evidence * peak.unsqueeze(1)
        temperature = self.get_buffer("temperature")
        return {
            "screen": screen / temperature[0],
            "class3": class3 / temperature[1],
            "clip_screen": clip,
            "attention": attention,
        }
