"""Loaders: clip choice per study, study batches (padding, mask, views), catalog splits."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from echoscreen.data import ClipInfo
from echoscreen.models import RHD_VIEWS, VIEWS
from echoscreen.train import StudyDataset, TrainConfig, build_loaders, select_clips


def _info(i: int, view: str | None, doppler: bool) -> ClipInfo:
    shape = (3, 16, 64, 64)
    return ClipInfo(f"c{i:02d}", "s1", "train", "definite", view, doppler, 16, 30.0, shape)


def test_select_clips_filters_prefers_doppler_and_covers_views() -> None:
    clips = [_info(0, "rvin", True), _info(1, "other", True), _info(2, None, True),
             _info(3, "plax", False), _info(4, "plax", True), _info(5, "plax", True),
             _info(6, "a4c", False), _info(7, "psax_mv", True)]  # fmt: skip
    chosen = select_clips(clips, 3, seed=0)
    assert [c.view for c in chosen] == ["plax", "psax_mv", "a4c"]  # one per view first
    assert chosen[0].doppler  # Doppler plax preferred over B-mode plax
    assert select_clips(clips, 3, seed=0) == chosen
    every = select_clips(clips, 10, seed=0)
    assert {c.id for c in every} == {"c03", "c04", "c05", "c06", "c07"}
    seeds = {select_clips(clips, 1, seed=s)[0].id for s in range(20)}
    assert seeds == {"c04", "c05"}  # the seed breaks ties among Doppler plax clips only


def test_study_batches(tiny_cfg: TrainConfig) -> None:
    cfg = replace(tiny_cfg, task="rhd", batch_size=2)
    loaders = build_loaders(cfg)
    try:
        train = loaders.train_set
        assert isinstance(train, StudyDataset) and len(train) >= 2
        batch = next(iter(loaders.train))
        clips, mask, views = batch["clips"], batch["mask"], batch["views"]
        assert clips.shape == (2, 3, 3, 16, 64, 64) and clips.dtype == torch.uint8
        assert mask.shape == views.shape == (2, 3) and mask.dtype == torch.bool
        assert bool(mask.any(1).all())
        assert all(VIEWS[int(v)] in RHD_VIEWS for v in views[mask])
        assert int(clips[~mask].abs().sum()) == 0  # padding is zeros
        by_id = {c.id: c for c in loaders.datasets["train"].clips}
        for study, ids in zip(batch["study"], batch["clip_ids"], strict=True):
            assert {by_id[i].study for i in ids} == {study}
            assert all(by_id[i].view in RHD_VIEWS for i in ids)
        assert set(batch["label_index"].tolist()) <= {0, 1, 2}
    finally:
        loaders.close()


def test_splits_are_the_catalogs(tiny_cfg: TrainConfig, tiny_site: Path) -> None:
    loaders = build_loaders(tiny_cfg)
    try:
        studies = {s: {c.study for c in d.clips} for s, d in loaders.datasets.items()}
        assert studies["train"] and studies["val"] and studies["test"]
        assert not (studies["train"] & studies["val"]) and not (studies["train"] & studies["test"])
        x, meta = next(iter(loaders.train))
        assert x.shape == (4, 3, 16, 64, 64) and set(meta["split"]) == {"train"}
    finally:
        loaders.close()


def test_studies_are_padded_to_the_clips_they_have_not_to_an_absurd_max_clips(
    tiny_cfg: TrainConfig,
) -> None:
    """--max-clips 100000 padded every study to 100000 clips (19 GB each): the kernel killed it."""
    loaders = build_loaders(replace(tiny_cfg, task="rhd", max_clips=1000))
    try:
        studies = loaders.train_set
        assert isinstance(studies, StudyDataset)
        most = max(len(e.clip_indices) for e in studies.studies)
        assert most < 1000
        item = studies[0]
        assert item["clips"].shape[0] == item["mask"].shape[0] == item["views"].shape[0] == most
        assert int(item["mask"].sum()) == len(studies.studies[0].clip_indices)
    finally:
        loaders.close()
