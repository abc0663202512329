"""``DemoConfig``: every knob of one demo run (the CLI builds it; the stages read it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from echoscreen.dicom import PreprocessSpec
from echoscreen.errors import ConfigError


def _demo_spec() -> PreprocessSpec:
    return PreprocessSpec(size=64, frames=32)


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run.

    Attributes:
        workdir: folder for everything the demo writes; its demo sub-folders are replaced.
        studies: phantom studies to generate (one patient each; split 65/20/15). 56
            rather than 48: a validation split of ~11 studies (~5 positive) to choose
            the operating point and the best epoch on, and ~36 training studies.
        seed: seed of the phantom cohort (and of training).
        frames: frames per generated clip.
        cohort_size: ``(rows, cols)`` of generated clips; None: each simulated scanner's size.
        dataset: name of the dataset the cohort is ingested into.
        spec: preprocessing at ingest (stored clips ``3 x frames x size x size`` uint8).
        split: train/val/test fractions of the patient-level split.
        workers: processes generating the cohort (0 = one per core).
        train: run stage 5 (train, evaluate, publish, screen); False stops after stage 4.
        train_frames: frames T the models see (constant-stride subsample of the stored clip).
        train_size: side S in pixels the models see (bilinear resize).
        view_epochs: epochs of the view classifier (10: with the zoom/shift
            augmentation 6 epochs were not enough; see docs/train.md).
        rhd_epochs: epochs of the RHD screening model.
        batch_size: clips per step of the view classifier.
        rhd_batch_size: studies per step of the rhd model (4: ~9 steps an epoch on the
            demo's ~36 training studies; see docs/train.md).
        lr: peak learning rate of both runs.
        max_clips: most evidence clips per study (rhd).
        threads: torch intra-op threads while training (0 = leave torch's default).
        held_out: studies of the held-out cohort screened at the end.
        held_out_seed: seed of that cohort; must differ from ``seed``.
    """

    workdir: Path
    studies: int = 56
    seed: int = 2026
    frames: int = 32
    cohort_size: tuple[int, int] | None = None
    dataset: str = "demo"
    spec: PreprocessSpec = field(default_factory=_demo_spec)
    split: tuple[float, float, float] = (0.65, 0.2, 0.15)
    workers: int = 0
    train: bool = True
    train_frames: int = 16
    train_size: int = 64
    view_epochs: int = 10
    rhd_epochs: int = 10
    batch_size: int = 16
    rhd_batch_size: int = 4
    lr: float = 2e-3
    max_clips: int = 6
    threads: int = 2
    held_out: int = 12
    held_out_seed: int = 911

    def __post_init__(self) -> None:
        if self.held_out_seed == self.seed:
            raise ConfigError("the held-out cohort needs a seed never used in training: "
                              f"held_out_seed {self.held_out_seed} equals seed {self.seed}")
        if self.studies < 4:
            raise ConfigError(f"the demo needs at least 4 studies to split, got {self.studies}")
