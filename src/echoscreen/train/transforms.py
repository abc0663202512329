"""Clip transforms: stored ``uint8 (3, T, S, S)`` clips to model input ``float (3, T', S', S')``.

Pure functions; randomness comes in as an explicit ``torch.Generator``. The
generator of one clip in one epoch is derived from ``(seed, epoch, clip id)``
(:func:`clip_generator`), so the augmentation a clip gets does not depend on the
batch it lands in, the number of processes, or whether the run was resumed.

No flips or rotations: they would change what view a clip shows.
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


def _augment(clips: torch.Tensor, frames: int, size: int,
             gens: list[torch.Generator]) -> torch.Tensor:  # fmt: skip
    """Random temporal offset and brightness/contrast jitter, one generator per clip."""
    hi = max_offset(clips.shape[2], frames)
    offsets: list[int | None] = [int(torch.randint(0, hi + 1, (1,), generator=g)) for g in gens]
    u = torch.stack([torch.rand(2, generator=g) for g in gens]) * 2 - 1  # (B, 2), CPU
    x = windows(clips, frames, size, offsets)  # a fresh tensor: jittered in place
    shape = (-1, 1, 1, 1, 1)
    contrast = (1 + CONTRAST * u[:, 0]).to(x.device).view(shape)
    brightness = (BRIGHTNESS * u[:, 1]).to(x.device).view(shape)
    mean = x.flatten(1).mean(dim=1).view(shape)
    # (x - mean) * contrast + mean + brightness, as one multiply and one add
    return x.mul_(contrast).add_(mean * (1 - contrast) + brightness).clamp_(0.0, 1.0)


def augment(clip: torch.Tensor, frames: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Training input of one stored clip: random temporal offset, brightness/contrast jitter.

    Args:
        clip: ``uint8 (3, T, S, S)``.
        frames: T'. size: S'.
        gen: the clip's generator (see :func:`clip_generator`).

    Returns:
        ``float32 (3, T', S', S')`` in [0, 1].
    """
    return _augment(clip[None], frames, size, [gen])[0]


def transform_batch(clips: torch.Tensor, keys: list[str], *, frames: int, size: int,
                    seed: int, epoch: int, train: bool) -> torch.Tensor:  # fmt: skip
    """Transform a batch of stored clips (on the device the batch is on).

    Args:
        clips: ``uint8 (B, 3, T, S, S)``.
        keys: one id per clip (seeds its augmentation).
        frames, size: model input T' and S'.
        seed, epoch: with the key, seed the augmentation.
        train: augment (else :func:`prepare` of each clip).

    Returns:
        ``float32 (B, 3, T', S', S')``.
    """
    if not train:
        return windows(clips, frames, size, [None] * len(clips))
    return _augment(clips, frames, size, [clip_generator(seed, epoch, k) for k in keys])
