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

from collections.abc import Callable

import torch
from torch import nn

from echoscreen.models.config import VIEWS, ModelConfig
from echoscreen.models.evidence import JetEvidence, MotionEvidence, soft_or
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
        # no bias: the softmax over a study's clips ignores a shift shared by all of them,
        # so a bias would get no gradient and never train
        self.attn_w = nn.Linear(d // 2, 1, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.clip_head = nn.Linear(d, 1)
        self.screen_head = nn.Linear(d, 1)
        self.class3_head = nn.Linear(d, 3)
        self.evidence = JetEvidence()
        self.motion = MotionEvidence()
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
        return _real_clips(self.encoder, clips, mask)

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
        evidence = _real_clips(lambda x: soft_or(self.evidence(x), self.motion(x)), clips, mask)
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


def _real_clips(fn: Callable[[torch.Tensor], torch.Tensor], clips: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """``fn`` over the clips of ``(B, N, ...)`` as one ``(B*N, ...)`` batch, shaped back to
    ``(B, N, ...)``. In eager mode only the real clips (``mask``) go through ``fn`` and
    padding rows are zeros; when tracing, exporting or compiling, every clip does (the
    graph has no data-dependent shapes), which leaves the study outputs the same."""
    flat = clips.flatten(0, 1)
    exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    if exporting or torch.compiler.is_compiling() or bool(mask.all()):
        return fn(flat).unflatten(0, (clips.shape[0], clips.shape[1]))
    keep = mask.flatten()
    real = fn(flat[keep])
    out = real.new_zeros(flat.shape[0], *real.shape[1:])
    out = out.index_put((keep.nonzero().squeeze(1),), real)
    return out.unflatten(0, (clips.shape[0], clips.shape[1]))
