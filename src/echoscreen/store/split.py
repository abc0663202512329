"""Patient-level, label-stratified train/val/test splits of a dataset.

All studies of one patient land in the same split, so no patient is seen in
training and evaluated again in test. Patients are stratified by their most
severe label (definite > borderline > normal > unlabelled); within a stratum they
are shuffled with the given seed and each goes to the split furthest below its
target share of studies, so splits match the fractions closely even when
patients have different numbers of studies.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import TYPE_CHECKING

from sqlalchemy import select

from echoscreen.errors import CatalogError
from echoscreen.store.schema import SPLITS, Dataset, DatasetStudy, Study

if TYPE_CHECKING:
    from echoscreen.store.catalog import Catalog

_SEVERITY = {"definite": 3, "borderline": 2, "normal": 1}


def check_fractions(train: float, val: float, test: float) -> tuple[float, float, float]:
    """Validate split fractions.

    Raises:
        CatalogError: a fraction is negative or not finite, or they do not sum to 1.
    """
    fracs = (train, val, test)
    if any(not math.isfinite(f) or f < 0 for f in fracs):
        raise CatalogError(f"split fractions must be >= 0, got train={train} val={val} test={test}")
    if abs(sum(fracs) - 1.0) > 1e-6:
        raise CatalogError(
            f"split fractions must sum to 1, got {train} + {val} + {test} = {sum(fracs):g}"
            " (e.g. --train .7 --val .15 --test .15)"
        )
    return fracs


def assign_patients(
    patients: dict[str, tuple[int, int]], fracs: tuple[float, float, float], seed: int
) -> dict[str, str]:
    """Assign patients to splits.

    Args:
        patients: patient -> (severity stratum, number of studies).
        fracs: target fractions of studies for train, val, test.
        seed: seed of the shuffle.

    Returns:
        patient -> split name.
    """
    rng = random.Random(seed)
    strata: dict[int, list[str]] = defaultdict(list)
    for patient, (stratum, _) in sorted(patients.items()):
        strata[stratum].append(patient)
    out: dict[str, str] = {}
    for stratum in sorted(strata):
        members = strata[stratum]
        rng.shuffle(members)
        have = [0, 0, 0]
        for patient in members:
            n = patients[patient][1]
            total = sum(have) + n
            deficit = [fracs[i] * total - have[i] if fracs[i] > 0 else -math.inf for i in range(3)]
            best = max(range(3), key=lambda i: deficit[i])
            have[best] += n
            out[patient] = SPLITS[best]
    return out


def make_split(
    catalog: Catalog, dataset: str, train: float, val: float, test: float, seed: int = 0
) -> dict[str, int]:
    """Split a dataset's studies into train/val/test by patient, stratified by label.

    Any earlier split of the dataset is replaced. The result is deterministic for a
    given dataset content and seed.

    Args:
        catalog: the catalog holding the dataset.
        dataset: dataset name.
        train: fraction of studies for training (0..1).
        val: fraction for validation.
        test: fraction for test; the three must sum to 1.
        seed: shuffle seed.

    Returns:
        number of studies per split, ``{"train": n, "val": n, "test": n}``.

    Raises:
        CatalogError: bad fractions, unknown or empty dataset.
    """
    fracs = check_fractions(train, val, test)
    with catalog.session() as s:
        ds = s.scalar(select(Dataset).where(Dataset.name == dataset))
        if ds is None:
            known = ", ".join(s.scalars(select(Dataset.name).order_by(Dataset.name))) or "none"
            raise CatalogError(f"no dataset {dataset!r} (datasets: {known}); ingest with --dataset")
        rows = s.execute(
            select(DatasetStudy, Study.patient, Study.label)
            .join(Study, Study.id == DatasetStudy.study_id)
            .where(DatasetStudy.dataset_id == ds.id)
        ).all()
        if not rows:
            raise CatalogError(f"dataset {dataset!r} has no studies to split")
        patients: dict[str, tuple[int, int]] = {}
        for _, patient, label in rows:
            stratum, n = patients.get(patient, (0, 0))
            patients[patient] = (max(stratum, _SEVERITY.get(label or "", 0)), n + 1)
        chosen = assign_patients(patients, fracs, seed)
        counts = dict.fromkeys(SPLITS, 0)
        for member, patient, _ in rows:
            member.split = chosen[patient]
            counts[member.split] += 1
    return counts
