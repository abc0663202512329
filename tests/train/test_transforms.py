"""Transforms: shapes, value range, determinism for a seed, and the temporal window."""

from __future__ import annotations

import pytest
import torch

from echoscreen.train.transforms import (
    ROTATE,
    SCALE,
    SHIFT,
    affine,
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


def test_affine_zooms_shifts_and_rotates_about_the_centre() -> None:
    x = torch.zeros(1, 3, 2, 8, 8)
    x[..., 1, 5] = 1.0  # one bright pixel at row 1, column 5 of every plane
    one, still, level = torch.ones(1), torch.zeros(1, 2), torch.zeros(1)
    assert torch.equal(affine(x, one, still, level), x)  # the identity
    moved = affine(x, one, torch.tensor([[0.25, 0.125]]), level)  # 2 px right, 1 px down
    assert torch.equal(moved, torch.roll(x, (1, 2), dims=(-2, -1)))
    turned = affine(x, one, still, torch.tensor([90.0]))  # clockwise as displayed
    assert torch.allclose(turned, torch.rot90(x, k=-1, dims=(-2, -1)), atol=1e-6)
    square = torch.zeros(1, 1, 1, 8, 8)
    square[..., 3:5, 3:5] = 1.0
    big = affine(square, torch.tensor([2.0]), still, level)[0, 0, 0]
    assert float(big.sum()) == pytest.approx(4 * float(square.sum()))  # area x zoom^2
    assert torch.equal(big, big.flip(0)) and torch.equal(big, big.flip(1))  # still centred
    assert float(big[0].sum()) == 0.0 and float(big[:, 0].sum()) == 0.0  # fits in the frame


def test_geometric_augmentation_is_drawn_after_the_jitter() -> None:
    """Turning the warp off leaves each clip's offset and jitter as they were."""
    clip = _clip()
    plain = augment(clip, 8, 32, clip_generator(0, 3, "a"), geometric=False)
    warped = augment(clip, 8, 32, clip_generator(0, 3, "a"))
    assert not torch.equal(plain, warped) and warped.shape == plain.shape
    assert float(warped.min()) >= 0.0 and float(warped.max()) <= 1.0
    gen = clip_generator(0, 3, "a")
    torch.randint(0, 2, (1,), generator=gen), torch.rand(2, generator=gen)  # offset, jitter
    u = torch.rand(4, generator=gen)[None] * 2 - 1  # then the warp's four numbers
    by_hand = affine(plain[None], 1 + SCALE * u[:, 0], SHIFT * u[:, 1:3], ROTATE * u[:, 3])
    assert torch.allclose(warped, by_hand[0].clamp(0, 1), atol=1e-6)
