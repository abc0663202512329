"""Sweep grids (parsing, product, refused values) and a sequential sweep from the CLI.

The sweep on cluster engines is in test_cluster.py (it shares that module's cluster).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from echoscreen.errors import ConfigError
from echoscreen.train import TrainConfig
from echoscreen.train.sweep import expand_grid, parse_grid, run_name, sweep_configs


def test_grid_parses_typed_values_and_expands() -> None:
    grid = parse_grid("lr=1e-3,3e-4,frames=8,16,augment=false,schedule=onecycle")
    assert grid == {"lr": [1e-3, 3e-4], "frames": [8, 16], "augment": [False],
                    "schedule": ["onecycle"]}  # fmt: skip
    points = expand_grid(grid)
    assert len(points) == 4
    assert points[0] == {"lr": 1e-3, "frames": 8, "augment": False, "schedule": "onecycle"}
    assert points[1]["frames"] == 16 and points[2]["lr"] == 3e-4  # first key slowest
    assert run_name(points[0]) == "lr-0.001_frames-8_augment-False_schedule-onecycle"
    assert parse_grid("batch-size=2,4") == {"batch_size": [2, 4]}


@pytest.mark.parametrize(("text", "message"), [
    ("", "must start with key=value"),
    ("1e-3,lr=3e-4", "must start with key=value"),
    ("learning_rate=1e-3", "unknown setting 'learning_rate'"),
    ("run=a,b", "run is fixed for a sweep"),
    ("lr=1e-3,frames=8,lr=3e-4", "lr given twice"),
    ("lr=1e-3,1e-3", "lr=0.001 given twice"),
    ("frames=8,16.5", "frames='16.5' is not a valid int"),
    ("lr=fast", "lr='fast' is not a valid float"),
    ("lr=nan", "lr='nan' is not a finite number"),
    ("dropout=inf", "dropout='inf' is not a finite number"),
    ("augment=maybe", "not a valid bool"),
    ("schedule=", "not a valid str"),
])  # fmt: skip
def test_bad_grids_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_grid(text)


def test_values_trainconfig_refuses_name_the_point(tiny_cfg: TrainConfig, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--grid point \{'lr': -1.0\}: learning rate"):
        sweep_configs(tiny_cfg, parse_grid("lr=1e-3,-1"), tmp_path)
    with pytest.raises(ConfigError, match="unknown schedule 'step'"):
        sweep_configs(tiny_cfg, parse_grid("schedule=cosine,step"), tmp_path)
    cfgs = sweep_configs(tiny_cfg, parse_grid("seed=0,1"), tmp_path / "runs")
    assert [c.run for _, c in cfgs] == [tmp_path / "runs/seed-0", tmp_path / "runs/seed-1"]
    assert {c.seed for _, c in cfgs} == {0, 1} and all(c.epochs == 1 for _, c in cfgs)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "echoscreen", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                       "COLUMNS": "200"})  # fmt: skip


def test_sequential_sweep_from_the_cli(tiny_site: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = ["sweep", "view", "--grid", "lr=1e-3,3e-4,frames=8,size=32",
            "--data", str(tiny_site), "--dataset", "ph", "--runs", str(runs),
            "--epochs", "1", "--batch-size", "4"]  # fmt: skip
    res = _cli(*args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "sweep ranked by validation view_acc" in res.stdout
    doc = json.loads((runs / "sweep.json").read_text())
    assert doc["cluster"] is None and len(doc["runs"]) == 2
    vals = [r["val"] for r in doc["runs"]]
    assert vals == sorted(vals, reverse=True)
    assert {r["params"]["lr"] for r in doc["runs"]} == {1e-3, 3e-4}
    for r in doc["runs"]:
        assert r["error"] is None and Path(r["run"]).parent == runs.resolve()
        assert (Path(r["run"]) / "predictions_val.json").exists()
        assert Path(r["run"]).name in res.stdout
    again = _cli(*args)  # a finished sweep is not overwritten
    assert again.returncode != 0 and "already holds a sweep" in again.stderr
    bad = _cli("sweep", "view", "--grid", "lr=1e-3,epochz=2", "--data", str(tiny_site),
               "--dataset", "ph", "--runs", str(tmp_path / "r2"))  # fmt: skip
    assert bad.returncode != 0 and "unknown setting 'epochz'" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "r2").exists()


def test_a_run_failing_with_any_error_does_not_stop_the_sequential_sweep(
    tiny_cfg: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import echoscreen.train
    from echoscreen.train.sweep import run_sweep

    real = echoscreen.train.fit

    def fit(cfg: TrainConfig, **kw: object) -> dict[str, object]:
        if cfg.lr > 0.01:  # e.g. out of memory, a full disk: not an echoscreen error
            raise RuntimeError("can't allocate memory\nsecond line")
        return real(cfg, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(echoscreen.train, "fit", fit)
    entries = run_sweep(tiny_cfg, parse_grid("lr=0.1,1e-3"), tmp_path / "sweep")
    assert [e.params["lr"] for e in entries] == [1e-3, 0.1]  # the failed one ranks last
    assert entries[0].error is None
    assert entries[1].error == "RuntimeError: can't allocate memory"
    doc = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [r["error"] for r in doc["runs"]] == [None, "RuntimeError: can't allocate memory"]


def test_a_failed_runs_error_is_printed_as_it_is(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from echoscreen.cli import cluster
    from echoscreen.cli.cluster import _table
    from echoscreen.train.sweep import SweepEntry

    monkeypatch.setattr(cluster.out, "width", 300)  # one line per row

    error = "RuntimeError: [enforce fail at alloc_cpu.cpp:127] can't allocate memory"
    _table([SweepEntry({"frames": 100000}, Path("frames-100000"), error=error)], "view_acc",
           Path("runs"))  # fmt: skip
    # rich read '[enforce fail at alloc_cpu.cpp:127]' as markup and dropped it
    assert "[enforce fail at alloc_cpu.cpp:127]" in capsys.readouterr().out


def test_a_dataset_that_is_not_there_is_refused_before_any_run(
    tiny_site: Path, tmp_path: Path
) -> None:
    res = _cli("sweep", "view", "--grid", "lr=1e-3,3e-4", "--data", str(tiny_site),
               "--dataset", "nope", "--runs", str(tmp_path / "runs"))  # fmt: skip
    assert res.returncode == 2 and "no dataset 'nope'" in res.stderr, res.stdout + res.stderr
    assert not (tmp_path / "runs").exists()  # each run failed alone, and the folder was used up
