"""Hyperparameter sweeps: a grid of ``TrainConfig`` settings, one single-process run each.

``parse_grid("lr=1e-3,3e-4,frames=8,16")`` reads a grid (a value list after each
``key=``; keys are ``TrainConfig`` fields), :func:`expand_grid` takes the cartesian
product, and :func:`run_sweep` trains every point in its own run folder under
``runs``: on the engines of an ipyparallel cluster (load-balanced, one run per
engine at a time) or, without a profile, one after another in this process. It
ranks the runs by their validation score and writes ``runs/sweep.json``.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from echoscreen.cpus import usable_cpus
from echoscreen.errors import ConfigError, EchoscreenError
from echoscreen.train.config import TrainConfig, check_folder

#: settings a sweep may vary (the rest name the data and the run)
FIXED = ("task", "data", "dataset", "run", "identity", "resume")
#: the validation/test metric a sweep ranks each task's runs by (fit picks best.pt by view
#: accuracy, or by rhd validation loss)
SCORE = {"view": "view_acc", "rhd": "auroc"}


def _field_types() -> dict[str, type]:
    return {f.name: type(f.default) for f in fields(TrainConfig) if f.name not in FIXED}


def _value(key: str, text: str, kind: type) -> Any:
    text = text.strip()
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if kind is int:
            return int(text)
        if kind is float:
            v = float(text)
            if not math.isfinite(v):  # float() reads it; the settings need a number
                raise ConfigError(f"--grid: {key}={text!r} is not a finite number")
            return v
        if not text:
            raise ValueError(text)
        return text
    except ValueError:
        raise ConfigError(f"--grid: {key}={text!r} is not a valid {kind.__name__}") from None


def parse_grid(text: str) -> dict[str, list[Any]]:
    """Parse ``"lr=1e-3,3e-4,frames=8,16"`` into ``{"lr": [0.001, 0.0003], "frames": [8, 16]}``.

    Items are separated by commas; an item ``key=value`` starts a key's list and the
    bare items after it add values. Values take the type of the ``TrainConfig`` field.

    Raises:
        ConfigError: empty grid, unknown or fixed key, repeated key or value, a value
            before any key, or a value of the wrong type.
    """
    types = _field_types()
    grid: dict[str, list[Any]] = {}
    key: str | None = None
    for item in text.split(","):
        if "=" in item:
            key, _, item = item.partition("=")
            key = key.strip().replace("-", "_")
            if key in FIXED:
                raise ConfigError(f"--grid: {key} is fixed for a sweep (give it as an option)")
            if key not in types:
                raise ConfigError(f"--grid: unknown setting {key!r}; "
                                  f"use some of {', '.join(sorted(types))}")  # fmt: skip
            if key in grid:
                raise ConfigError(f"--grid: {key} given twice; list its values after one {key}=")
            grid[key] = []
        if key is None:
            raise ConfigError(f"--grid must start with key=value, e.g. lr=1e-3,3e-4 (got {text!r})")
        value = _value(key, item, types[key])
        if value in grid[key]:
            raise ConfigError(f"--grid: {key}={value} given twice")
        grid[key].append(value)
    if not grid:
        raise ConfigError("--grid is empty; e.g. --grid lr=1e-3,3e-4,frames=8,16")
    return grid


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values (cartesian product, first key slowest)."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def run_name(params: dict[str, Any]) -> str:
    """A folder name for one grid point, e.g. ``lr-0.001_frames-8``."""
    return "_".join(f"{k}-{re.sub(r'[^A-Za-z0-9.+-]', '', str(v))}" for k, v in params.items())


def sweep_configs(base: TrainConfig, grid: dict[str, list[Any]],
                  runs: Path) -> list[tuple[dict[str, Any], TrainConfig]]:  # fmt: skip
    """One validated config per grid point, each in ``runs/<run_name>``.

    Raises:
        ConfigError: a grid value that ``TrainConfig`` refuses (the message names it).
    """
    out = []
    for params in expand_grid(grid):
        try:
            cfg = replace(base, run=Path(runs) / run_name(params), **params)
        except ConfigError as exc:
            raise ConfigError(f"--grid point {params}: {exc}") from exc
        out.append((params, cfg))
    return out


@dataclass
class SweepEntry:
    """One run of a sweep: its grid point, folder, scores (NaN if missing) or error."""

    params: dict[str, Any]
    run: Path
    val: float = math.nan
    test: float = math.nan
    epochs: int = 0
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (NaN as null)."""
        num = {k: None if math.isnan(v) else v for k, v in (("val", self.val), ("test", self.test))}
        return {"params": self.params, "run": str(self.run), **num, "epochs": self.epochs,
                "error": self.error, "metrics": self.metrics}  # fmt: skip


def _entry(task: str, params: dict[str, Any], cfg: TrainConfig,
           result: dict[str, Any] | None, error: str | None) -> SweepEntry:  # fmt: skip
    e = SweepEntry(params, cfg.run, error=error)
    if result is not None:
        key = SCORE[task]
        e.epochs = int(result.get("epochs", 0))
        e.val = _num((result.get("val") or {}).get(key))
        e.test = _num((result.get("test") or {}).get(key))
        e.metrics = {k: result[k] for k in ("val", "test", "best_epoch") if k in result}
    return e


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def rank_entries(entries: list[SweepEntry]) -> list[SweepEntry]:
    """Best validation score first; failed or unscored runs last, in grid order."""
    return sorted(entries, key=lambda e: (e.error is not None, math.isnan(e.val),
                                          -e.val if not math.isnan(e.val) else 0.0))  # fmt: skip


def _check_runs(runs: Path, cfgs: list[tuple[dict[str, Any], TrainConfig]]) -> None:
    taken = [c.run.name for _, c in cfgs if c.run.exists()]
    if (runs / "sweep.json").exists() or taken:
        raise ConfigError(f"{runs} already holds a sweep ({', '.join(taken) or 'sweep.json'}); "
                          "give a new --runs folder")  # fmt: skip


def _check_dataset(base: TrainConfig) -> None:
    """Refuse a dataset the data site does not have before any run starts: every run would
    fail alone on it, and their sweep.json would use up the --runs folder.

    Raises:
        DatasiteError: no such dataset (or the site cannot be read).
    """
    from echoscreen.train.data import open_source

    base.check_data()
    source = open_source(base)
    try:
        source.clips(base.dataset, None)
    finally:
        source.close()


def run_sweep(base: TrainConfig, grid: dict[str, list[Any]], runs: Path, *,
              profile: str | None = None, engines: int | None = None,
              on_done: Callable[[SweepEntry], None] | None = None) -> list[SweepEntry]:  # fmt: skip
    """Train every grid point and rank the runs; writes ``runs/sweep.json``.

    Args:
        base: the settings shared by all runs (its ``run`` is ignored).
        grid: from :func:`parse_grid`.
        runs: parent folder of the run folders (must not hold a sweep yet).
        profile: an ipyparallel cluster profile; ``None`` runs sequentially here.
        engines: engines to use (default all; cluster only).
        on_done: called with each entry as its run ends (progress).

    Returns:
        The entries, best validation score first. A run that failed carries its
        error and ranks last; it does not stop the others.
    """
    from echoscreen.train.cluster import absolute

    check_folder(Path(runs), "--runs")
    runs = Path(runs).resolve()
    cfgs = [(p, absolute(c)) for p, c in sweep_configs(base, grid, runs)]
    _check_runs(runs, cfgs)
    _check_dataset(base)
    runs.mkdir(parents=True, exist_ok=True)
    if profile is None:
        entries = _sequential(cfgs, on_done)
    else:
        entries = _on_cluster(cfgs, profile, engines, on_done)
    ranked = rank_entries(entries)
    doc = {"task": base.task, "metric": SCORE[base.task], "grid": grid,
           "cluster": profile, "runs": [e.to_json() for e in ranked]}  # fmt: skip
    (runs / "sweep.json").write_text(json.dumps(doc, indent=2) + "\n")
    return ranked


def _sequential(cfgs: list[tuple[dict[str, Any], TrainConfig]],
                on_done: Callable[[SweepEntry], None] | None) -> list[SweepEntry]:  # fmt: skip
    from echoscreen.train import fit

    entries = []
    for params, cfg in cfgs:
        try:
            e = _entry(cfg.task, params, cfg, fit(cfg, progress=False), None)
        except EchoscreenError as exc:
            e = _entry(cfg.task, params, cfg, None, str(exc))
        except Exception as exc:  # out of memory, a full disk: the other runs still go on
            first = (str(exc).splitlines() or [""])[0][:200]
            e = _entry(cfg.task, params, cfg, None, f"{type(exc).__name__}: {first}")
        entries.append(e)
        if on_done:
            on_done(e)
    return entries


def _on_cluster(cfgs: list[tuple[dict[str, Any], TrainConfig]], profile: str,
                engines: int | None, on_done: Callable[[SweepEntry], None] | None,
                ) -> list[SweepEntry]:  # fmt: skip
    from echoscreen.errors import ClusterError
    from echoscreen.train.cluster import connect, remote_error, run_rank

    with connect(profile) as (_, rc):
        ids = sorted(rc.ids)
        if engines is not None:
            if not 1 <= engines <= len(ids):
                raise ClusterError(f"asked for {engines} engines; {profile!r} has {len(ids)}")
            ids = ids[:engines]
        view = rc.load_balanced_view(ids)
        threads = max(1, usable_cpus() // len(ids))
        ars = [view.apply_async(run_rank, cfg.to_json(), {}, threads) for _, cfg in cfgs]
        entries: list[SweepEntry | None] = [None] * len(cfgs)
        pending = set(range(len(cfgs)))
        while pending:
            for i in sorted(pending):
                if not ars[i].ready():
                    continue
                params, cfg = cfgs[i]
                try:
                    entries[i] = _entry(cfg.task, params, cfg, ars[i].get()["result"], None)
                except Exception as exc:  # an engine's error, reported in the table
                    entries[i] = _entry(cfg.task, params, cfg, None,
                                        str(remote_error(exc, run_name(params))))  # fmt: skip
                pending.discard(i)
                if on_done:
                    on_done(entries[i])  # type: ignore[arg-type]
            if pending:
                ars[min(pending)].wait(0.5)
    return [e for e in entries if e is not None]
