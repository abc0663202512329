"""Reading and checking a run's prediction files (``RUN/predictions_{split}.json``).

The formats are the ones ``echoscreen.train`` writes (a JSON list, one record per item):

- view task, one record per clip: ``{"clip", "study", "view", "view_pred", "p_view": [7],
  "doppler", "p_doppler"}`` (``view`` "" and ``doppler`` -1 mean unknown);
- rhd task, one record per study: ``{"study", "label_index", "p_screen", "p3": [3], "sex",
  "age_years", "clips", "p_clip_mean", "p_clip_vote", "p_clip_max"}`` (``label_index``
  0 normal, 1 borderline, 2 definite, -1 unknown; the ``p_clip_*`` are optional).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from echoscreen.errors import EvaluateError
from echoscreen.evaluate.metrics import FloatArray, IntArray
from echoscreen.vocab import VIEWS  # the order of p_view

#: study-level scores that can be compared: attention pooling and the clip baselines
AGGREGATIONS = {"attention": "p_screen", "mean": "p_clip_mean", "vote": "p_clip_vote",
                "max": "p_clip_max"}  # fmt: skip

_VIEW_KEYS = ("clip", "study", "view", "view_pred", "p_view", "doppler", "p_doppler")
_RHD_KEYS = ("study", "label_index", "p_screen", "p3")


@dataclass(frozen=True)
class ViewPredictions:
    """Per-clip view and Doppler predictions (n clips)."""

    clips: list[str]
    view: IntArray  # (n,) index in VIEWS, -1 unknown
    view_pred: IntArray  # (n,) index in VIEWS
    p_view: FloatArray  # (n, 7)
    doppler: IntArray  # (n,) 1 colour Doppler, 0 B-mode, -1 unknown
    p_doppler: FloatArray  # (n,)


@dataclass(frozen=True)
class RhdPredictions:
    """Per-study screening predictions (n studies)."""

    studies: list[str]
    label_index: IntArray  # (n,) 0 normal, 1 borderline, 2 definite, -1 unknown
    p_screen: FloatArray  # (n,)
    p3: FloatArray  # (n, 3)
    sex: list[str]  # "M", "F" or "" (unknown)
    age_years: FloatArray  # (n,) NaN = unknown
    baselines: dict[str, FloatArray]  # aggregation name -> (n,) scores, only those present


def _bad(path: Path, what: str) -> EvaluateError:
    return EvaluateError(
        f"{path}: {what}; re-create it with `echoscreen train` (or fix it to the format in "
        "docs/evaluate.md)"
    )


def _prob(path: Path, i: int, key: str, value: Any) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not -1e-6 <= value <= 1.0 + 1e-6:
        raise _bad(path, f"record {i}: {key!r} must be a probability in [0, 1], got {value!r}")
    return min(1.0, max(0.0, float(value)))  # float32 rounding may step a hair outside


def _probs(path: Path, i: int, key: str, value: Any, k: int) -> list[float]:
    if not isinstance(value, list) or len(value) != k:
        raise _bad(path, f"record {i}: {key!r} must be a list of {k} probabilities")
    return [_prob(path, i, key, v) for v in value]


def _int_in(path: Path, i: int, key: str, value: Any, allowed: tuple[int, ...]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
        raise _bad(path, f"record {i}: {key!r} must be one of {allowed}, got {value!r}")
    return value


def _view_index(path: Path, i: int, key: str, value: Any, allow_unknown: bool) -> int:
    if allow_unknown and value in ("", None):
        return -1
    if value not in VIEWS:
        raise _bad(path, f"record {i}: {key!r} must be one of {VIEWS}, got {value!r}")
    return VIEWS.index(value)


def load_records(path: Path) -> list[dict[str, Any]]:
    """Read a prediction file: a non-empty JSON list of objects."""
    if not path.is_file():
        raise EvaluateError(
            f"{path} does not exist; train the run first (`echoscreen train ... --run "
            f"{path.parent}`), which writes predictions_val.json and predictions_test.json"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _bad(path, f"not valid JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("predictions"), list):
        data = data["predictions"]
    if data == []:  # what train writes for a split without studies: training again won't help
        split = path.stem.removeprefix("predictions_")
        other = "val" if split != "val" else "test"
        raise EvaluateError(
            f"{path} is empty: the {split} split had no studies or clips when the run trained; "
            f"evaluate another split (e.g. --split {other}), or give the dataset a {split} split "
            "(`echoscreen site split`) and train a new run"
        )
    if not isinstance(data, list) or not data or not all(isinstance(r, dict) for r in data):
        raise _bad(path, "expected a non-empty JSON list of prediction records")
    return data


def detect_task(records: list[dict[str, Any]], config_task: str | None = None) -> str:
    """``"rhd"`` or ``"view"``: from the run's config if it says, else from the record keys."""
    if config_task in ("rhd", "view"):
        return config_task
    return "rhd" if "p_screen" in records[0] else "view"


def _require(path: Path, records: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    for i, rec in enumerate(records):
        missing = [k for k in keys if k not in rec]
        if missing:
            raise _bad(path, f"record {i} lacks {', '.join(missing)}")


def parse_view(path: Path, records: list[dict[str, Any]]) -> ViewPredictions:
    """Check and convert view-task records."""
    _require(path, records, _VIEW_KEYS)
    return ViewPredictions(
        clips=[str(r["clip"]) for r in records],
        view=np.array(
            [_view_index(path, i, "view", r["view"], True) for i, r in enumerate(records)],
            dtype=np.int64,
        ),
        view_pred=np.array(
            [
                _view_index(path, i, "view_pred", r["view_pred"], False)
                for i, r in enumerate(records)
            ],
            dtype=np.int64,
        ),
        p_view=np.array(
            [_probs(path, i, "p_view", r["p_view"], len(VIEWS)) for i, r in enumerate(records)]
        ),
        doppler=np.array(
            [_int_in(path, i, "doppler", r["doppler"], (-1, 0, 1)) for i, r in enumerate(records)],
            dtype=np.int64,
        ),
        p_doppler=np.array(
            [_prob(path, i, "p_doppler", r["p_doppler"]) for i, r in enumerate(records)]
        ),
    )


def _age(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return float("nan")


def parse_rhd(path: Path, records: list[dict[str, Any]]) -> RhdPredictions:
    """Check and convert rhd-task records (a baseline is kept only if every record has it)."""
    _require(path, records, _RHD_KEYS)
    baselines = {
        name: np.array([_prob(path, i, key, r[key]) for i, r in enumerate(records)])
        for name, key in AGGREGATIONS.items()
        if name != "attention" and all(r.get(key) is not None for r in records)
    }
    return RhdPredictions(
        studies=[str(r["study"]) for r in records],
        label_index=np.array(
            [
                _int_in(path, i, "label_index", r["label_index"], (-1, 0, 1, 2))
                for i, r in enumerate(records)
            ],
            dtype=np.int64,
        ),
        p_screen=np.array(
            [_prob(path, i, "p_screen", r["p_screen"]) for i, r in enumerate(records)]
        ),
        p3=np.array([_probs(path, i, "p3", r["p3"], 3) for i, r in enumerate(records)]),
        sex=[str(r.get("sex") or "").upper()[:1] for r in records],
        age_years=np.array([_age(r.get("age_years")) for r in records]),
        baselines=baselines,
    )


def config_task(run: Path) -> str | None:
    """The ``task`` recorded in ``RUN/config.json`` (None if absent or unreadable)."""
    try:
        cfg = json.loads((run / "config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    task = cfg.get("task") if isinstance(cfg, dict) else None
    return task if isinstance(task, str) else None
