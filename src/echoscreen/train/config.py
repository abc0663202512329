"""``TrainConfig``: the one typed configuration of a training run, saved as ``RUN/config.json``.

The CLI builds it from its options (or, with ``--resume``, reloads it from the run
folder); :func:`echoscreen.train.fit` takes nothing else.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from echoscreen.errors import ConfigError

TASKS = ("view", "rhd")
SCHEDULES = ("cosine", "onecycle")
MODEL_SIZES = ("small", "large")
#: fields that do not change what a run computes (a resumed run may differ in them; a run
#: folder that was moved or copied holds a config naming its old place)
_NOT_IDENTITY = ("resume", "run")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on.

    Attributes:
        task: ``view`` (clip view + Doppler classifier) or ``rhd`` (study-level screening).
        data: a site folder (local read) or an ``https://`` data server URL (remote read).
        dataset: dataset name in the site's catalog (split with ``site split``).
        run: the run folder (config, metrics, checkpoints, predictions).
        identity: client identity folder for a remote ``data`` (from ``pki issue``).
        epochs: passes over the training split.
        batch_size: clips (view) or studies (rhd) per step *per process*.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        schedule: ``cosine`` (linear warm-up then cosine) or ``onecycle``.
        frames: frames T fed to the model (temporal subsample of the stored clip).
        size: side S in pixels fed to the model (bilinear resize of the stored clip).
        seed: seed of weights, sampling order and augmentation.
        model_size: ``small`` (CPU) or ``large`` (GPU).
        dropout: dropout before the heads.
        max_clips: most clips per study (rhd).
        augment: brightness/contrast jitter and random temporal offset in training.
        geometric: with ``augment``, also a random zoom, shift and small rotation.
        grad_clip: max gradient norm (0: no clipping).
        aux_weight: weight of the per-clip auxiliary loss (rhd).
        resume: continue the run in ``run`` from its last checkpoint.
    """

    task: str
    data: str
    dataset: str
    run: Path
    identity: Path | None = None
    epochs: int = 5
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    schedule: str = "cosine"
    frames: int = 16
    size: int = 64
    seed: int = 0
    model_size: str = "small"
    dropout: float = 0.1
    max_clips: int = 8
    augment: bool = True
    geometric: bool = True
    grad_clip: float = 1.0
    aux_weight: float = 0.2
    resume: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", Path(self.run))
        if self.identity is not None:
            object.__setattr__(self, "identity", Path(self.identity))
        self.validate()

    @property
    def remote(self) -> bool:
        """Whether ``data`` is a data server URL."""
        return self.data.startswith(("https://", "http://"))

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a hint if a setting is unusable."""
        _choice("task", self.task, TASKS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("model size", self.model_size, MODEL_SIZES)
        for name, value, low in (("epochs", self.epochs, 1), ("batch size", self.batch_size, 1),
                                 ("frames", self.frames, 1), ("size", self.size, 8),
                                 ("max clips", self.max_clips, 1),
                                 ("seed", self.seed, 0)):  # fmt: skip
            if value < low:
                raise ConfigError(f"{name} must be >= {low}, got {value}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate must be a positive number, got {self.lr}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout}")
        if not self.data.strip():  # Path("") is the current folder: not what anyone means
            raise ConfigError("--data is empty: give a site folder or an https:// data server "
                              "URL")  # fmt: skip
        if not self.dataset:
            raise ConfigError("give the dataset to train on (--dataset NAME, see `site ls`)")
        if self.remote and self.identity is None:
            raise ConfigError(
                f"{self.data} is a data server: pass --identity DIR (a folder from `pki issue`)"
            )

    def check_data(self) -> None:
        """Raise :class:`ConfigError` unless ``data`` is a URL or an existing folder, and
        ``run`` can be a folder (neither it nor a folder above it is a file).

        Separate from :meth:`validate` so that a saved config (e.g. in a published
        model) can be read where the site is not.
        """
        if not self.remote and not Path(self.data).is_dir():
            raise ConfigError(
                f"--data {self.data!r} is neither a site folder nor an https:// data server URL"
            )
        check_folder(self.run, "--run")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings)."""
        d = asdict(self)
        d["run"] = str(self.run)
        d["identity"] = None if self.identity is None else str(self.identity)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_json` output (unknown keys are an error)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training settings {unknown}; known: {sorted(known)}")
        return cls(**d)

    def identity_dict(self) -> dict[str, Any]:
        """The settings that decide what the run computes (for 'same run?' checks)."""
        d = self.to_json()
        for k in _NOT_IDENTITY:
            d.pop(k)
        return d

    def save(self, path: Path) -> None:
        """Write as pretty JSON to ``path`` atomically (other ranks may be reading it)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """Read a config written by :meth:`save`.

        Raises:
            ConfigError: missing or malformed file.
        """
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"no {path}: is this a run folder? (start one without --resume)") \
                from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc}); restore it or start a new run") \
                from exc
        return cls.from_json(d)

    def with_resume(self) -> TrainConfig:
        """A copy with ``resume=True``."""
        return replace(self, resume=True)

    @classmethod
    def resumed(cls, run: Path) -> TrainConfig:
        """The config saved in ``run/config.json``, to continue that run in ``run``.

        ``run`` replaces the folder the file names: a run folder that was moved or copied
        still names its old place, and resuming must neither read nor write there.

        Raises:
            ConfigError: missing or malformed file.
        """
        return replace(cls.load(Path(run) / "config.json"), run=Path(run), resume=True)


def check_folder(path: Path, flag: str) -> None:
    """Raise :class:`ConfigError` if ``path`` or a folder above it is a file, naming it.

    Without this, making the folder failed with the OS's bare 'File exists' or 'Not a
    directory', which does not say which part of the path is in the way.
    """
    for p in [Path(path), *Path(path).parents]:
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                raise ConfigError(f"{flag} {path}: {p} is a file, not a folder; give a folder")
            return


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")
