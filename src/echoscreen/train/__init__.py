"""Training: ``TrainConfig``, ``build_loaders``, ``train_one_epoch``, ``evaluate``, ``fit``.

``fit(cfg)`` runs in one process or, unchanged, as one rank under
``torchrun --nproc-per-node N -m echoscreen train ...`` (DistributedDataParallel,
gloo on CPU, NCCL on CUDA). See docs/train.md.
"""

from __future__ import annotations

from echoscreen.train.config import TrainConfig
from echoscreen.train.data import StudyDataset, build_loaders, select_clips
from echoscreen.train.fit import fit
from echoscreen.train.loop import Criterion, evaluate, train_one_epoch
from echoscreen.train.transforms import augment, prepare

__all__ = ["Criterion", "StudyDataset", "TrainConfig", "augment", "build_loaders", "evaluate",
           "fit", "prepare", "select_clips", "train_one_epoch"]  # fmt: skip
