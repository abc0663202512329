"""Phantom cohorts: labels per study, a process pool over studies, labels.csv and clips.csv.

The default prevalence (normal 0.5, borderline 0.25, definite 0.25) is *enriched*:
screening finds RHD in roughly 1-3 % of school children, far too few positives to
train or evaluate a model on a small cohort. Pass another prevalence to mimic a
screening population.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from echoscreen.cpus import usable_cpus
from echoscreen.errors import ConfigError
from echoscreen.synth.findings import (
    AV_FEATURES,
    MV_FEATURES,
    StudyFindings,
    pathological_ar,
    pathological_mr,
    whf_criterion,
)
from echoscreen.synth.study import StudyPlan, plan_study, write_study
from echoscreen.vocab import LABELS, VIEWS

TRANSFER_SYNTAX_NAMES = ("jpeg-baseline", "explicit-le", "rle")
#: most studies of one cohort (patient IDs number them in 5 digits)
MAX_STUDIES = 100_000
DEFAULT_PREVALENCE: Mapping[str, float] = MappingProxyType(
    {"normal": 0.5, "borderline": 0.25, "definite": 0.25}
)
CLIP_COLUMNS = (
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "path",
    "view",
    "doppler",
    "findings",
    "mr_jet_cm",
    "ar_jet_cm",
    "mask",
)


@dataclass(frozen=True)
class CohortConfig:
    """How to make a phantom cohort.

    Attributes:
        studies: number of studies (one patient each).
        seed: seed of everything; same seed -> byte-identical files.
        prevalence: fraction of studies per label (enriched by default, see module doc).
        frames: frames per clip.
        size: ``(rows, cols)`` of every clip, or None to use each simulated scanner's size.
        transfer_syntax: ``jpeg-baseline``, ``explicit-le`` or ``rle``.
        masks: also write ``<clip>.mask.npz`` ground-truth masks (jet, leaflets).
        workers: processes to use (0 = one per CPU core).
    """

    studies: int
    seed: int = 0
    prevalence: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PREVALENCE))
    frames: int = 32
    size: tuple[int, int] | None = None
    transfer_syntax: str = "jpeg-baseline"
    masks: bool = False
    workers: int = 0

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a hint if a setting is unusable."""
        if not 1 <= self.studies <= MAX_STUDIES:  # beyond: hours of work planned in memory
            raise ConfigError(f"studies must be between 1 and {MAX_STUDIES}, got {self.studies}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if not 2 <= self.frames <= 1000:
            raise ConfigError(f"frames must be between 2 and 1000, got {self.frames}")
        if self.size is not None and not (
            32 <= self.size[0] <= 2048 and 32 <= self.size[1] <= 2048
        ):
            raise ConfigError(f"size must be between 32x32 and 2048x2048, got {self.size}")
        if self.transfer_syntax not in TRANSFER_SYNTAX_NAMES:
            raise ConfigError(
                f"unknown transfer syntax {self.transfer_syntax!r}; "
                f"choose one of {', '.join(TRANSFER_SYNTAX_NAMES)}"
            )
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0 (0 = one per core), got {self.workers}")
        _check_prevalence(dict(self.prevalence))


@dataclass(frozen=True)
class CohortSummary:
    """What :func:`generate_cohort` wrote."""

    out: Path
    studies: int
    clips: int
    per_label: dict[str, int]
    per_view: dict[str, int]
    doppler_clips: int
    seconds: float


def _check_prevalence(p: dict[str, float]) -> dict[str, float]:
    unknown = set(p) - set(LABELS)
    if unknown:
        raise ConfigError(
            f"unknown label(s) {', '.join(sorted(unknown))} in prevalence; use {', '.join(LABELS)}"
        )
    if any(v < 0 or not np.isfinite(v) for v in p.values()):
        raise ConfigError("prevalence fractions must be finite and >= 0")
    total = sum(p.values())
    if abs(total - 1.0) > 1e-3:
        raise ConfigError(f"prevalence fractions must sum to 1, got {total:g}")
    return {label: float(p.get(label, 0.0)) for label in LABELS}


def parse_prevalence(text: str) -> dict[str, float]:
    """Parse ``"normal=.6,borderline=.2,definite=.2"`` (labels left out count as 0).

    Raises:
        ConfigError: malformed pair, unknown label, repeated label, bad number, or a sum != 1.
    """
    out: dict[str, float] = {}
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        if "=" not in part:
            raise ConfigError(
                f"prevalence item {part!r} is not LABEL=FRACTION, "
                "e.g. normal=.6,borderline=.2,definite=.2"
            )
        label, _, value = (s.strip() for s in part.partition("="))
        if label in out:
            raise ConfigError(f"label {label!r} given twice in prevalence")
        try:
            out[label] = float(value)
        except ValueError:
            raise ConfigError(f"prevalence of {label!r} is not a number: {value!r}") from None
    if not out:
        raise ConfigError("empty prevalence; e.g. normal=.6,borderline=.2,definite=.2")
    return _check_prevalence(out)


def assign_labels(cfg: CohortConfig) -> list[str]:
    """Label of each study: counts by largest remainder, order shuffled by the seed."""
    p = _check_prevalence(dict(cfg.prevalence))
    exact = {k: p[k] * cfg.studies for k in LABELS}
    counts = {k: int(np.floor(v)) for k, v in exact.items()}
    for k in sorted(LABELS, key=lambda k: counts[k] - exact[k])[
        : cfg.studies - sum(counts.values())
    ]:
        counts[k] += 1
    labels = [k for k in LABELS for _ in range(counts[k])]
    order = np.random.default_rng([cfg.seed, 0x1ABE1]).permutation(len(labels))
    return [labels[i] for i in order]


def label_row(plan: StudyPlan) -> dict[str, str]:
    """One labels.csv row: identity summary, label and the findings it derives from."""
    f: StudyFindings = plan.findings
    ident = plan.identity
    row = {
        "study_instance_uid": ident.study_uid,
        "patient_id": ident.patient_id,
        "label": plan.label,
        "whf_criterion": whf_criterion(f),
        "sex": ident.sex,
        "age_years": str(ident.age_years),
        "weight_kg": f"{ident.weight_kg:.1f}",
        "height_cm": f"{ident.height_cm:.1f}",
        "heart_rate_bpm": f"{plan.heart_rate:.0f}",
        "scanner": plan.scanner.model,
        "mr_jet_cm": f"{f.mr.max_cm if f.mr else 0.0:.2f}",
        "mr_views": str(f.mr.n_views if f.mr else 0),
        "mr_pansystolic": str(int(bool(f.mr and f.mr.full_phase))),
        "pathological_mr": str(int(pathological_mr(f.mr))),
        "ar_jet_cm": f"{f.ar.max_cm if f.ar else 0.0:.2f}",
        "ar_views": str(f.ar.n_views if f.ar else 0),
        "ar_pandiastolic": str(int(bool(f.ar and f.ar.full_phase))),
        "pathological_ar": str(int(pathological_ar(f.ar))),
        "almv_thickness_mm": f"{f.almv_thickness_mm:.1f}",
        "av_thickness_mm": f"{f.av_thickness_mm:.1f}",
        "n_mv_features": str(len(f.mv_features)),
        "n_av_features": str(len(f.av_features)),
    }
    row.update({name: str(int(name in f.mv_features)) for name in MV_FEATURES})
    row.update({name: str(int(name in f.av_features)) for name in AV_FEATURES})
    return row


def _one_study(
    out: str, index: int, label: str, cfg: CohortConfig
) -> tuple[int, dict[str, str], list[dict[str, str]]]:
    plan = plan_study(index, label, cfg.seed, cfg.frames, cfg.size)
    rows = write_study(plan, Path(out), cfg.transfer_syntax, cfg.masks)
    return index, label_row(plan), rows


def _write_csv(
    path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] | None = None
) -> None:
    cols = list(columns or rows[0].keys())
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def generate_cohort(
    out: Path, cfg: CohortConfig, progress: Callable[[int, int], None] | None = None
) -> CohortSummary:
    """Write a phantom cohort of ``cfg.studies`` studies into the empty folder ``out``.

    Layout: ``out/labels.csv`` (one row per study), ``out/clips.csv`` (one row per clip),
    ``out/<patient>/<study>/IMnnnn.dcm`` and, with ``cfg.masks``, ``IMnnnn.mask.npz``.

    Args:
        out: output folder; created if missing, refused if not empty.
        cfg: cohort settings (validated here).
        progress: called as ``progress(done_studies, total)`` after each study.

    Raises:
        ConfigError: bad settings, or ``out`` exists and is not an empty folder.
    """
    cfg.validate()
    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output folder {out} is a file, not a folder; choose a new folder")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"output folder {out} is not empty; choose a new folder or empty it")
    out.mkdir(parents=True, exist_ok=True)
    labels = assign_labels(cfg)
    results: dict[int, tuple[dict[str, str], list[dict[str, str]]]] = {}
    workers = min(cfg.workers or usable_cpus(), cfg.studies)
    if workers <= 1:
        for i, label in enumerate(labels):
            _, row, clips = _one_study(str(out), i, label, cfg)
            results[i] = (row, clips)
            if progress is not None:
                progress(len(results), cfg.studies)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [
                pool.submit(_one_study, str(out), i, lab, cfg) for i, lab in enumerate(labels)
            ]
            for fut in as_completed(futures):
                i, row, clips = fut.result()
                results[i] = (row, clips)
                if progress is not None:
                    progress(len(results), cfg.studies)
    label_rows = [results[i][0] for i in range(cfg.studies)]
    clip_rows = [r for i in range(cfg.studies) for r in results[i][1]]
    _write_csv(out / "labels.csv", label_rows)
    _write_csv(out / "clips.csv", clip_rows, CLIP_COLUMNS)
    return CohortSummary(
        out=out,
        studies=cfg.studies,
        clips=len(clip_rows),
        per_label=dict(Counter(r["label"] for r in label_rows)),
        per_view={v: sum(r["view"] == v for r in clip_rows) for v in VIEWS},
        doppler_clips=sum(r["doppler"] == "1" for r in clip_rows),
        seconds=time.perf_counter() - t0,
    )
