"""Transforms: shapes, value range, determinism for a seed, and the temporal window."""

from __future__ import annotations

import torch

from echoscreen.train.transforms import (
    augment,
    clip_generator,
    frame_indices,
    prepare,
    transform_batch,
)


def _clip(t: int = 16, s: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (3, t, s, s), dtype=torch.uint8, generator=gen)


def test_prepare_shapes_and_range() -> None:
    clip = _clip()
    x = prepare(clip, 8, 32)
    assert x.shape == (3, 8, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    same = prepare(clip, 16, 64)
    assert torch.equal(same, clip.float() / 255)  # no resize, every frame: just scaled
    assert torch.equal(prepare(clip, 8, 32), x)


def test_frame_indices() -> None:
    assert frame_indices(16, 8, 0).tolist() == [0, 2, 4, 6, 8, 10, 12, 14]
    assert frame_indices(16, 8, 5).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]  # clamped to fit
    assert frame_indices(4, 8, 0).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # short clip repeats


def test_augment_is_a_function_of_its_generator() -> None:
    clip = _clip()
    a = augment(clip, 8, 32, clip_generator(0, 3, "clip-a"))
    b = augment(clip, 8, 32, clip_generator(0, 3, "clip-a"))
    assert torch.equal(a, b) and a.shape == (3, 8, 32, 32)
    others = [augment(clip, 8, 32, clip_generator(s, e, k))
              for s, e, k in ((1, 3, "clip-a"), (0, 4, "clip-a"), (0, 3, "clip-b"))]  # fmt: skip
    assert all(not torch.equal(a, o) for o in others)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_batch_transform_does_not_depend_on_batching() -> None:
    clips = torch.stack([_clip(), _clip().flip(0)])
    kw = {"frames": 8, "size": 32, "seed": 0, "epoch": 1, "train": True}
    whole = transform_batch(clips, ["a", "b"], **kw)  # type: ignore[arg-type]
    part = transform_batch(clips[1:], ["b"], **kw)  # type: ignore[arg-type]
    assert torch.equal(whole[1], part[0])
    plain = transform_batch(clips, ["a", "b"], **{**kw, "train": False})  # type: ignore[arg-type]
    assert torch.equal(plain[0], prepare(clips[0], 8, 32))
