"""Checkpoints of a run, written atomically (temp file, fsync, rename).

``RUN/checkpoint.pt`` holds ``model``, ``optimizer``, ``scheduler``, ``scaler``
(state dicts), ``epoch`` (epochs completed), ``config`` (the run's
:meth:`TrainConfig.to_json`), ``best`` (best validation score so far) and ``rng``
(torch CPU / CUDA / numpy / python generator states). ``RUN/best.pt`` holds ``model``,
``config``, ``epoch`` and ``score`` of the best epoch.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echoscreen.errors import ConfigError


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` so that a reader sees either the old or the new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    """The global generators' states (torch CPU, every CUDA device's, numpy, python).

    Dropout and augmentation on a GPU draw from the CUDA generators: without their states a
    resumed GPU run would not repeat the run it continues.
    """
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda, "numpy": np.random.get_state(),
            "python": random.getstate()}  # fmt: skip


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state` output."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda", [])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint (tensors onto the CPU).

    Raises:
        ConfigError: the file is missing or unreadable.
    """
    try:
        ckpt: dict[str, Any] = torch.load(Path(path), map_location="cpu", weights_only=False)
    except FileNotFoundError as exc:
        raise ConfigError(f"no checkpoint {path}; start the run without --resume") from exc
    except Exception as exc:  # a truncated or foreign file
        raise ConfigError(f"cannot read checkpoint {path} ({exc}); start a new run") from exc
    return ckpt
