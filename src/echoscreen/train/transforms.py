"""Clip transforms: stored ``uint8 (3, T, S, S)`` clips to model input ``float (3, T', S', S')``.

Pure functions; randomness comes in as an explicit ``torch.Generator``. The
generator of one clip in one epoch is derived from ``(seed, epoch, clip id)``
(:func:`clip_generator`), so the augmentation a clip gets does not depend on the
batch it lands in, the number of processes, or whether the run was resumed.

Geometric augmentation (training only) moves the imaging sector as scanners and
depth settings do: a random zoom and shift of every frame of a clip (one affine warp
per clip, the same for all its frames; :func:`affine` also rotates, off by default).
No flips: they would change what view a clip shows (an A4C mirrored is not an A4C).
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from echoscreen.data.dataset import stack
from echoscreen.models import to_input

#: brightness shift (added) and contrast factor (multiplied) ranges of the jitter
BRIGHTNESS = 0.08
CONTRAST = 0.15
#: geometric augmentation: zoom factor in [1 - SCALE, 1 + SCALE], shift up to SHIFT of the
#: frame side in x and y, rotation up to ROTATE degrees. No rotation: turning the frame
#: about its centre moves the left atrium sideways, the phantom's cue between A4C and A5C
#: (with 8 degrees the held-out errors became A4C read as A5C; see docs/train.md)
SCALE = 0.12
SHIFT = 0.06
ROTATE = 0.0


def clip_generator(seed: int, epoch: int, key: str) -> torch.Generator:
    """A generator seeded from ``(seed, epoch, key)`` (stable across processes and runs)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{key}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def frame_indices(total: int, frames: int, offset: int) -> torch.Tensor:
    """Indices of ``frames`` frames out of ``total`` at a constant stride.

    The stride is ``max(1, total // frames)``; a clip shorter than ``frames`` repeats
    its frames (nearest neighbour in time).

    Args:
        total: frames in the stored clip (T).
        frames: frames wanted (T').
        offset: first index (clamped so the window fits).

    Returns:
        (T',) long indices in ``[0, total)``.
    """
    if total < frames:
        return torch.linspace(0, total - 1, frames).round().long()
    stride = max(1, total // frames)
    span = (frames - 1) * stride + 1
    start = min(max(0, offset), total - span)
    return start + torch.arange(frames) * stride


def max_offset(total: int, frames: int) -> int:
    """Largest useful temporal offset for :func:`frame_indices`."""
    if total < frames:
        return 0
    stride = max(1, total // frames)
    return total - ((frames - 1) * stride + 1)


def windows(clips: torch.Tensor, frames: int, size: int,
            offsets: list[int | None]) -> torch.Tensor:  # fmt: skip
    """Model input of a batch of stored clips: each clip's temporal window, scaled and resized.

    One cast and one resize for the batch, on whatever device ``clips`` is on: training
    moves the uint8 batch to the GPU first and transforms it there.

    Args:
        clips: ``uint8 (B, 3, T, S, S)``.
        frames: T' frames to keep per clip.
        size: S' output side; bilinear (antialiased) resize when S' != S.
        offsets: per clip, the window's first frame (``None``: the centred window).

    Returns:
        ``float32 (B, 3, T', S', S')`` in [0, 1].
    """
    if clips.dim() != 5 or clips.shape[1] != 3:
        raise ValueError(f"expected (B, 3, T, S, S) clips, got shape {tuple(clips.shape)}")
    total = clips.shape[2]
    picked = [c.index_select(1, frame_indices(total, frames, max_offset(total, frames) // 2
                                              if o is None else o).to(clips.device))
              for c, o in zip(clips, offsets, strict=True)]  # fmt: skip
    x = to_input(stack(picked))  # (B, 3, T', S, S): contiguous frame copies, one cast
    if x.shape[-1] != size or x.shape[-2] != size:
        # every (channel, frame) plane is resized on its own: (B, 3 T', S, S) is a free view
        b, t = x.shape[0], x.shape[2]
        x = F.interpolate(x.reshape(b, 3 * t, x.shape[-2], x.shape[-1]), size=(size, size),
                          mode="bilinear", align_corners=False, antialias=True)  # fmt: skip
        x = x.reshape(b, 3, t, size, size)
    return x.contiguous()


def prepare(clip: torch.Tensor, frames: int, size: int, offset: int | None = None) -> torch.Tensor:
    """Deterministic model input of one stored clip (what evaluation and screening use).

    Args:
        clip: ``uint8 (3, T, S, S)``.
        frames: T' frames to keep (centred window unless ``offset`` is given).
        size: S' output side; bilinear resize when S' != S.
        offset: first frame of the window.

    Returns:
        ``float32 (3, T', S', S')`` in [0, 1].
    """
    if clip.dim() != 4 or clip.shape[0] != 3:
        raise ValueError(f"expected a (3, T, S, S) clip, got shape {tuple(clip.shape)}")
    return windows(clip[None], frames, size, [offset])[0]


def affine(x: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor,
           degrees: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Zoom, shift and rotate each clip of a batch about the frame centre (bilinear, zero fill).

    Args:
        x: ``float (B, C, T, S, S)``.
        zoom: ``(B,)`` factors (> 1 enlarges the picture).
        shift: ``(B, 2)`` content shift right and down, as fractions of the frame side.
        degrees: ``(B,)`` rotation, clockwise as displayed (rows down).

    Returns:
        ``float (B, C, T, S, S)`` on ``x``'s device, the same warp for every frame and
        channel of a clip; pixels mapped from outside the frame are 0 (the black
        surround of an ultrasound sector). Zoom 1, shift 0 and 0 degrees is the identity.
    """
    b, c, t, h, w = x.shape
    angle = torch.deg2rad(degrees)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # output -> input sampling coordinates, both in [-1, 1] (the side spans 2)
    theta = torch.stack([torch.stack([cos, sin, -2 * shift[:, 0]], dim=1),
                         torch.stack([-sin, cos, -2 * shift[:, 1]], dim=1)], dim=1)  # fmt: skip
    grid = F.affine_grid(theta.to(x.device, x.dtype), [b, c * t, h, w], align_corners=False)
    out = F.grid_sample(x.reshape(b, c * t, h, w), grid, mode="bilinear",
                        padding_mode="zeros", align_corners=False)  # fmt: skip
    return out.reshape(b, c, t, h, w)


def _augment(clips: torch.Tensor, frames: int, size: int, gens: list[torch.Generator],
             geometric: bool = True) -> torch.Tensor:  # fmt: skip
    """Random temporal offset, jitter and (optionally) an affine warp, one generator per clip."""
    hi = max_offset(clips.shape[2], frames)
    offsets: list[int | None] = [int(torch.randint(0, hi + 1, (1,), generator=g)) for g in gens]
    u = torch.stack([torch.rand(2, generator=g) for g in gens]) * 2 - 1  # (B, 2), CPU
    x = windows(clips, frames, size, offsets)  # a fresh tensor: jittered in place
    shape = (-1, 1, 1, 1, 1)
    contrast = (1 + CONTRAST * u[:, 0]).to(x.device).view(shape)
    brightness = (BRIGHTNESS * u[:, 1]).to(x.device).view(shape)
    mean = x.flatten(1).mean(dim=1).view(shape)
    # (x - mean) * contrast + mean + brightness, as one multiply and one add
    x = x.mul_(contrast).add_(mean * (1 - contrast) + brightness).clamp_(0.0, 1.0)
    if not geometric:
        return x
    # drawn after the jitter's numbers: the offset and jitter of a clip do not change
    g = torch.stack([torch.rand(4, generator=g) for g in gens]) * 2 - 1  # (B, 4), CPU
    return affine(x, 1 + SCALE * g[:, 0], SHIFT * g[:, 1:3], ROTATE * g[:, 3]).clamp_(0.0, 1.0)


def augment(clip: torch.Tensor, frames: int, size: int, gen: torch.Generator,
            geometric: bool = True) -> torch.Tensor:  # fmt: skip
    """Training input of one stored clip: temporal offset, jitter, zoom/shift/rotation.

    Args:
        clip: ``uint8 (3, T, S, S)``.
        frames: T'. size: S'.
        gen: the clip's generator (see :func:`clip_generator`).
        geometric: also warp the frames (:func:`affine`).

    Returns:
        ``float32 (3, T', S', S')`` in [0, 1].
    """
    return _augment(clip[None], frames, size, [gen], geometric)[0]


def transform_batch(clips: torch.Tensor, keys: list[str], *, frames: int, size: int,
                    seed: int, epoch: int, train: bool,
                    geometric: bool = True) -> torch.Tensor:  # fmt: skip
    """Transform a batch of stored clips (on the device the batch is on).

    Args:
        clips: ``uint8 (B, 3, T, S, S)``.
        keys: one id per clip (seeds its augmentation).
        frames, size: model input T' and S'.
        seed, epoch: with the key, seed the augmentation.
        train: augment (else :func:`prepare` of each clip).
        geometric: with ``train``, also zoom/shift/rotate (:func:`affine`).

    Returns:
        ``float32 (B, 3, T', S', S')``.
    """
    if not train:
        return windows(clips, frames, size, [None] * len(clips))
    gens = [clip_generator(seed, epoch, k) for k in keys]
    return _augment(clips, frames, size, gens, geometric)
