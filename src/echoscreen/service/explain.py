"""Where the model looked: saliency key frames of the evidence clips that drove a decision.

For the top ``k`` evidence clips by attention weight, the gradient of the rhd model's
screen-positive logit with respect to its input clips (vanilla gradient saliency, eager
torch on the CPU, the package's ``weights.pt``) is taken; a clip's *key frame* is the
stored-clip frame whose model-input frame holds the most saliency. Each explanation is a
PNG of that frame (the stored clip's size, S x S, RGB) with the saliency above 20 % of the
clip's maximum blended in as a red-to-yellow heat overlay.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from echoscreen.models import VIEWS
from echoscreen.registry.package import ModelPackage
from echoscreen.screen.screener import ClipResult

#: saliency below this fraction of the clip's maximum is not drawn
FLOOR = 0.2
#: opacity of the overlay at maximum saliency
ALPHA = 0.6


@dataclass(frozen=True)
class Explanation:
    """One key frame.

    Attributes:
        clip: the clip's index in the result document.
        frame: the key frame's index in the stored clip (0-based, of T frames).
        png: the frame with the saliency overlay, PNG bytes.
    """

    clip: int
    frame: int
    png: bytes


def saliency(model: Any, package: ModelPackage,
             evidence: list[ClipResult]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """|d screen logit / d input| of one study's evidence clips.

    Args:
        model: the package's rhd model (``package.load_torch("rhd")``, eval mode).
        package: the package (input shape).
        evidence: the evidence clips, in the order the model saw them (views set).

    Returns:
        ``(maps, indices)``: saliency ``float32 (N, T', S', S')`` (max over colour
        channels) and, per model-input frame, its stored-clip frame ``int (N, T')``.
    """
    import torch

    from echoscreen.train.transforms import frame_indices, max_offset, windows

    frames, size = package.input_shape("rhd")
    batch = torch.from_numpy(np.stack([c.pixels for c in evidence]))
    x = windows(batch, frames, size, [None] * len(evidence))[None]
    x.requires_grad_(True)
    mask = torch.ones((1, len(evidence)), dtype=torch.bool)
    views = torch.tensor([[VIEWS.index(c.view) for c in evidence]], dtype=torch.int64)
    with torch.enable_grad():
        out = model(x, mask, views)
        (grad,) = torch.autograd.grad(out["screen"].sum(), x)
    maps = grad[0].abs().amax(dim=1).numpy()
    idx = []
    for c in evidence:
        total = int(c.pixels.shape[1])
        idx.append(frame_indices(total, frames, max_offset(total, frames) // 2).numpy())
    return maps.astype(np.float32), np.stack(idx)


def overlay(frame: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Blend a heat map onto a frame.

    Args:
        frame: ``uint8 (3, S, S)`` RGB.
        heat: ``float (S', S')`` saliency, any scale (resized to S x S).

    Returns:
        ``uint8 (S, S, 3)``: the frame where the saliency is below :data:`FLOOR` of its
        maximum, red to yellow blended in above it.
    """
    from PIL import Image

    rgb = np.ascontiguousarray(frame.transpose(1, 2, 0)).astype(np.float32)
    side = rgb.shape[0]
    h = heat / heat.max() if heat.max() > 0 else np.zeros_like(heat)
    h = np.asarray(Image.fromarray(h.astype(np.float32), mode="F")
                   .resize((rgb.shape[1], side), Image.Resampling.BILINEAR))  # fmt: skip
    a = ALPHA * np.clip((h - FLOOR) / (1 - FLOOR), 0.0, 1.0)[..., None]
    colour = np.stack([np.full_like(h, 255.0), 255.0 * h, np.zeros_like(h)], axis=-1)
    return np.asarray(np.clip(rgb * (1 - a) + colour * a, 0, 255).round(), dtype=np.uint8)


def explain(package: ModelPackage, result: dict[str, Any], clips: list[ClipResult], *,
            k: int = 3, model: Any = None) -> list[Explanation]:  # fmt: skip
    """Key frames of the ``k`` evidence clips with the largest attention.

    Args:
        package: the served package.
        result: the result document (``clips`` with ``index``, ``view``, ``evidence``,
            ``attention``).
        clips: the study's clips with their pixels (``uint8 (3, T, S, S)``).
        k: most explanations.
        model: the rhd model to use (default: loaded from the package).

    Returns:
        Up to ``k`` explanations, largest attention first (empty without evidence).
    """
    from PIL import Image

    docs = [c for c in result["clips"] if c.get("evidence")]
    if not docs:
        return []
    by_index = {c.index: c for c in clips}
    evidence = [by_index[int(c["index"])] for c in docs]
    for clip, doc in zip(evidence, docs, strict=True):
        clip.view = str(doc["view"])
    if model is None:
        model = package.load_torch("rhd")
    maps, idx = saliency(model, package, evidence)
    order = sorted(range(len(docs)), key=lambda j: -float(docs[j]["attention"] or 0.0))[:k]
    out = []
    for j in order:
        t = int(np.argmax(maps[j].sum(axis=(1, 2))))
        frame = int(idx[j][t])
        buf = io.BytesIO()
        Image.fromarray(overlay(evidence[j].pixels[:, frame], maps[j][t])).save(buf, "PNG")
        out.append(Explanation(clip=evidence[j].index, frame=frame, png=buf.getvalue()))
    return out
