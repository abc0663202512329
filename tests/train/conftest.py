"""A tiny phantom site shared by the training tests (8 studies, 3x16x64x64 clips, split)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.train.sitefix import make_site

from echoscreen.train import TrainConfig


@pytest.fixture(scope="package")
def tiny_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The site folder of an 8-study phantom cohort (dataset ``ph``, split)."""
    yield make_site(tmp_path_factory.mktemp("train-site"), 8)


@pytest.fixture
def tiny_cfg(tiny_site: Path, tmp_path: Path) -> TrainConfig:
    """A fast view config on the tiny site (8 frames x 32 px, 1 epoch) in a fresh run folder."""
    return TrainConfig(task="view", data=str(tiny_site), dataset="ph", run=tmp_path / "run",
                       epochs=1, batch_size=4, frames=8, size=32, max_clips=3, seed=0)  # fmt: skip


@pytest.fixture(autouse=True, scope="package")
def one_thread() -> Iterator[None]:
    """One intra-op thread, as torchrun gives each rank: on the shared 2-core test machine two
    spinning OpenMP threads made a tiny epoch ~30x slower (13 s instead of 0.4 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
