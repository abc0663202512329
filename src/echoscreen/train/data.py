"""Loaders of a training run: clip batches (view task) and study batches (rhd task).

Splits are the catalog's patient-level ``train``/``val``/``test`` (``site split``).
The training loader samples with a ``DistributedSampler`` in every case (one
replica when not distributed), so the order of epoch ``e`` is a function of
``(seed, e)`` alone: a resumed run sees the same batches, and N processes with
batch B see together what one process with batch N*B sees.

A study batch is a dict: ``clips`` uint8 ``(B, N, 3, T, S, S)`` (zero padded),
``mask`` bool ``(B, N)`` (True = real clip), ``views`` long ``(B, N)`` (index in
``VIEWS``), ``label_index`` long ``(B,)``, and lists ``study``, ``sex``,
``age_years``, ``clip_ids``. Its clips are fetched through the
:class:`~echoscreen.data.ClipDataset`, so remote prefetching and caching apply.
"""

from __future__ import annotations

import random
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler

from echoscreen.data import ClipDataset, ClipInfo, LocalSite, PrefetchBatchSampler, RemoteSite
from echoscreen.data.dataset import collate_clips, stack
from echoscreen.data.sources import SiteSource
from echoscreen.errors import ConfigError
from echoscreen.models import RHD_VIEWS, VIEWS
from echoscreen.train.config import TrainConfig

SPLITS = ("train", "val", "test")


def select_clips(clips: Sequence[ClipInfo], max_clips: int, seed: int) -> list[ClipInfo]:
    """The clips of one study the rhd model reads (deterministic for a seed).

    Keeps clips whose view is in ``RHD_VIEWS``; orders each view's clips colour
    Doppler first (ties shuffled by ``seed`` and the study), then takes them round
    robin over the views so that as many views as possible are covered.

    Args:
        clips: one study's clips.
        max_clips: most clips to keep.
        seed: seed of the tie-breaking shuffle.

    Returns:
        up to ``max_clips`` clips, in view order.
    """
    by_view: dict[str, list[ClipInfo]] = {v: [] for v in RHD_VIEWS}
    for c in sorted(clips, key=lambda c: c.id):
        if c.view in by_view:
            by_view[c.view].append(c)
    for view, group in by_view.items():
        study = group[0].study if group else ""
        random.Random(f"{seed}:{study}:{view}").shuffle(group)
        group.sort(key=lambda c: not c.doppler)  # stable: Doppler first, shuffled within
    chosen: list[ClipInfo] = []
    rank = 0
    while len(chosen) < max_clips and any(len(g) > rank for g in by_view.values()):
        for view in RHD_VIEWS:
            if rank < len(by_view[view]) and len(chosen) < max_clips:
                chosen.append(by_view[view][rank])
        rank += 1
    return chosen


@dataclass(frozen=True)
class StudyEntry:
    """One study of a :class:`StudyDataset`: its chosen clips (indices into the ClipDataset)."""

    study: str
    label_index: int
    sex: str
    age_years: float
    clip_indices: tuple[int, ...]
    views: tuple[int, ...]


class StudyDataset(Dataset[dict[str, Any]]):
    """Studies of a split, each as up to ``max_clips`` RHD-view clips, padded (with a mask)
    to :attr:`pad`: ``max_clips``, or fewer when no study of the split has that many (a
    ``max_clips`` of 100000 padded every study to 100000 clips, 19 GB each at 16 x 64 px).

    Studies without a label or without any clip of an RHD view are left out
    (:attr:`skipped` counts them).

    Args:
        clips: the split's clips.
        max_clips: the most clips read per study.
        seed: seed of the clip choice (see :func:`select_clips`).
    """

    def __init__(self, clips: ClipDataset, max_clips: int, seed: int) -> None:
        self.clips, self.max_clips = clips, max_clips
        index = {c.id: i for i, c in enumerate(clips.clips)}
        groups: dict[str, list[ClipInfo]] = {}
        for c in clips.clips:
            groups.setdefault(c.study, []).append(c)
        self.studies: list[StudyEntry] = []
        self.skipped = 0
        for study in sorted(groups):
            members = groups[study]
            chosen = select_clips(members, max_clips, seed)
            first = members[0]
            label = LABELS_INDEX.get(first.label or "", -1)
            if not chosen or label < 0:
                self.skipped += 1
                continue
            self.studies.append(StudyEntry(
                study, label, first.sex or "",
                float("nan") if first.age_years is None else float(first.age_years),
                tuple(index[c.id] for c in chosen), tuple(VIEWS.index(str(c.view)) for c in chosen),
            ))  # fmt: skip
        #: N, the padded clip count of every item
        self.pad = max((len(e.clip_indices) for e in self.studies), default=1)

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]

    def prefetch(self, indices: Sequence[int]) -> None:
        """Start fetching the clips of these studies."""
        self.clips.prefetch([j for i in indices for j in self.studies[int(i)].clip_indices])

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Study items for many indices, their clips fetched in one request."""
        entries = [self.studies[int(i)] for i in indices]
        flat = [j for e in entries for j in e.clip_indices]
        tensors = iter([t for t, _ in self.clips.__getitems__(flat)])
        out = []
        for e in entries:
            real = [next(tensors) for _ in e.clip_indices]
            n = len(real)
            clips = torch.zeros((self.pad, *real[0].shape), dtype=torch.uint8)
            clips[:n] = stack(real)
            mask = torch.zeros(self.pad, dtype=torch.bool)
            mask[:n] = True
            views = torch.zeros(self.pad, dtype=torch.long)
            views[:n] = torch.tensor(e.views)
            ids = [self.clips.clips[j].id for j in e.clip_indices]
            out.append({"clips": clips, "mask": mask, "views": views, "study": e.study,
                        "label_index": e.label_index, "sex": e.sex, "age_years": e.age_years,
                        "clip_ids": ids})  # fmt: skip
        return out


LABELS_INDEX = {"normal": 0, "borderline": 1, "definite": 2}


def collate_studies(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack study items into a batch (see the module docstring)."""
    return {
        "clips": stack([it["clips"] for it in items]),
        "mask": stack([it["mask"] for it in items]),
        "views": stack([it["views"] for it in items]),
        "label_index": torch.tensor([it["label_index"] for it in items], dtype=torch.long),
        **{k: [it[k] for it in items] for k in ("study", "sex", "age_years", "clip_ids")},
    }


@dataclass
class Loaders:
    """The three loaders of a run and what the loss weights are computed from.

    Attributes:
        train, val, test: loaders (val/test in catalog order, not sharded).
        sampler: the training sampler (call ``set_epoch`` each epoch).
        train_set: the training Dataset (ClipDataset or StudyDataset).
        datasets: the ClipDatasets by split (closed by :meth:`close`).
    """

    train: DataLoader[Any]
    val: DataLoader[Any]
    test: DataLoader[Any]
    sampler: DistributedSampler[Any]
    train_set: Dataset[Any]
    datasets: dict[str, ClipDataset]

    def stored_clips(self) -> dict[str, Any]:
        """What the run's clips are, as stored at the site (``clips.json`` of the run):
        ``{"shape": [3, T, S, S] or None, "reader": str or None, "readers": {reader: n}}``.

        ``shape`` and ``reader`` are ``None`` unless every clip has the same one (a
        reader not recorded at ingest counts as ``"unknown"`` in ``readers``);
        ``echoscreen publish`` copies them into the package, and screening refuses a
        package whose reader is not the one it reads with.
        """
        clips = [c for ds in self.datasets.values() for c in ds.clips]
        shapes = {tuple(c.shape) for c in clips}
        readers: dict[str, int] = {}
        for c in clips:
            readers[c.reader or "unknown"] = readers.get(c.reader or "unknown", 0) + 1
        one = next(iter(readers)) if len(readers) == 1 else None
        return {"shape": list(shapes.pop()) if len(shapes) == 1 else None,
                "reader": None if one == "unknown" else one, "readers": readers}  # fmt: skip

    def close(self) -> None:
        """Stop fetching threads and close the source."""
        for ds in self.datasets.values():
            ds.close()


def open_source(cfg: TrainConfig) -> SiteSource:
    """The site source of ``cfg.data``: a LocalSite or a RemoteSite."""
    if cfg.remote:
        assert cfg.identity is not None  # validated by TrainConfig
        return cast(SiteSource, RemoteSite(cfg.data, cfg.identity))
    return cast(SiteSource, LocalSite(Path(cfg.data)))


class StudyPrefetch(Sampler[list[int]]):
    """Batches of study indices; the clips of the next ``depth`` batches are fetched ahead.

    Args:
        batches: a batch sampler over a :class:`StudyDataset`.
        dataset: the studies (its :meth:`StudyDataset.prefetch` is called ahead).
        depth: batches fetched ahead of the one being consumed.
    """

    def __init__(self, batches: BatchSampler, dataset: StudyDataset, depth: int = 2) -> None:
        self.batches, self.dataset, self.depth = batches, dataset, depth

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        ahead: list[list[int]] = []
        for batch in self.batches:
            ahead.append(list(batch))
            self.dataset.prefetch(ahead[-1])
            if len(ahead) > self.depth:
                yield ahead.pop(0)
        yield from ahead


def _loader(ds: Dataset[Any], batch_size: int, sampler: Sampler[int]) -> DataLoader[Any]:
    batches = BatchSampler(sampler, batch_size, False)
    if isinstance(ds, StudyDataset):
        return DataLoader(ds, batch_sampler=StudyPrefetch(batches, ds), num_workers=0,
                          collate_fn=collate_studies)  # fmt: skip
    assert isinstance(ds, ClipDataset)
    return DataLoader(ds, batch_sampler=PrefetchBatchSampler(batches, ds), num_workers=0,
                      collate_fn=collate_clips)  # fmt: skip


def _check_input(cfg: TrainConfig, datasets: dict[str, ClipDataset]) -> None:
    """Refuse a model input larger than the stored clips: more frames than the longest clip
    would only repeat frames, a larger side only upsample, at the cost of compute and memory
    (``--frames 100000`` asked for 39 GB and ended in a traceback).

    Raises:
        ConfigError: ``cfg.frames`` or ``cfg.size`` exceeds every stored clip's.
    """
    shapes = [c.shape for ds in datasets.values() for c in ds.clips]
    if not shapes:
        return  # no clips: the split check below says so
    frames, side = max(int(s[1]) for s in shapes), max(int(s[2]) for s in shapes)
    for flag, value, stored, unit, waste in (
        ("--frames", cfg.frames, frames, "frames", "repeated frames"),
        ("--size", cfg.size, side, "px", "an upsampled image"),
    ):
        if value > stored:
            raise ConfigError(
                f"{flag} {value} is more than the stored clips' {stored} {unit} (the model "
                f"would see nothing more, only {waste}); give {flag} {stored} or less"
            )


def build_loaders(cfg: TrainConfig, rank: int = 0, world: int = 1) -> Loaders:
    """Datasets and loaders of the run's three splits.

    Args:
        cfg: the run config (``data``, ``dataset``, ``task``, ``batch_size``, ``seed``, ...).
        rank, world: this process's place in a distributed run.

    Raises:
        ConfigError: the dataset has no training data (or no val data) for the task.
        DatasiteError: the source cannot list or read the dataset.
    """
    cfg.check_data()
    source = open_source(cfg)
    datasets = {s: ClipDataset(source, cfg.dataset, s) for s in SPLITS}
    sets: dict[str, Dataset[Any]] = dict(datasets)
    if cfg.task == "rhd":
        sets = {s: StudyDataset(d, cfg.max_clips, cfg.seed) for s, d in datasets.items()}
    try:
        _check_input(cfg, datasets)
    except ConfigError:
        for ds in datasets.values():
            ds.close()
        raise
    for split in ("train", "val"):
        if len(sets[split]) == 0:  # type: ignore[arg-type]
            for ds in datasets.values():
                ds.close()
            where = "at the data site, " if cfg.remote else ""
            site = "SITE" if cfg.remote else shlex.quote(cfg.data)
            raise ConfigError(
                f"dataset {cfg.dataset!r} has no usable {split} "
                f"{'studies' if cfg.task == 'rhd' else 'clips'}; split it {where}with "
                f"`echoscreen site split {shlex.quote(cfg.dataset)} --site {site}` "
                "(and check its labels/views)"
            )
    sampler: DistributedSampler[Any] = DistributedSampler(
        sets["train"], num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed
    )
    seq = {s: torch.utils.data.SequentialSampler(sets[s]) for s in ("val", "test")}  # type: ignore[arg-type]
    return Loaders(
        train=_loader(sets["train"], cfg.batch_size, sampler),
        val=_loader(sets["val"], cfg.batch_size, seq["val"]),
        test=_loader(sets["test"], cfg.batch_size, seq["test"]),
        sampler=sampler, train_set=sets["train"], datasets=datasets,
    )  # fmt: skip
