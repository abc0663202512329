"""Synthetic prediction files in the contract format (what ``echoscreen train`` writes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

VIEWS = ("plax", "rvin", "psax_av", "psax_mv", "a4c", "a5c", "other")


def _clip(p: np.ndarray) -> list[float]:
    return [float(x) for x in np.clip(p, 0.0, 1.0)]


def rhd_records(n: int, seed: int, positives: bool = True) -> list[dict[str, Any]]:
    """``n`` studies; scores separate the classes imperfectly; every 10th study lacks a label."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        label = int(rng.choice([0, 1, 2], p=[0.6, 0.2, 0.2])) if positives else 0
        if i % 10 == 9:
            label = -1
        pos = label > 0
        p = float(np.clip(rng.normal(0.7 if pos else 0.3, 0.18), 0, 1))
        p3 = (
            np.array([1 - p, p * 0.5, p * 0.5])
            if label != 2
            else np.array([1 - p, p * 0.3, p * 0.7])
        )
        clips = [float(np.clip(p + rng.normal(0, 0.2), 0, 1)) for _ in range(4)]
        records.append({
            "study": f"s{seed}-{i:03d}", "label_index": label, "p_screen": p, "p3": _clip(p3),
            "sex": "F" if i % 2 else "M", "age_years": int(5 + i % 15),
            "clips": [f"c{i}-{k}" for k in range(4)],
            "p_clip_mean": float(np.mean(clips)),
            "p_clip_vote": float(np.mean(np.array(clips) > 0.5)),
            "p_clip_max": float(np.max(clips)),
        })  # fmt: skip
    return records


def view_records(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` clips, about 80 % of views right; every 7th clip has unknown view and mode."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        v = int(rng.integers(0, 7))
        pred = v if rng.random() < 0.8 else int(rng.integers(0, 7))
        p = rng.dirichlet(np.ones(7))
        p[pred] += 2
        dop = int(rng.integers(0, 2))
        records.append({
            "clip": f"c{i}", "study": f"s{i // 3}", "view": "" if i % 7 == 6 else VIEWS[v],
            "view_pred": VIEWS[pred], "p_view": _clip(p / p.sum()),
            "doppler": -1 if i % 7 == 6 else dop,
            "p_doppler": float(np.clip(rng.normal(0.8 if dop else 0.2, 0.2), 0, 1)),
        })  # fmt: skip
    return records


def write_run(run: Path, task: str, n: int = 120, *, test_positives: bool = True) -> Path:
    """A run folder with config.json and predictions_{val,test}.json for ``task``."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps({"task": task, "seed": 0}))
    make = (lambda s, pos=True: rhd_records(n, s, pos)) if task == "rhd" else (
        lambda s, pos=True: view_records(n, s))  # fmt: skip
    (run / "predictions_val.json").write_text(json.dumps(make(1)))
    (run / "predictions_test.json").write_text(json.dumps(make(2, test_positives)))
    return run
