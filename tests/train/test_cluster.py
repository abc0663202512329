"""A real 2-engine ipyparallel cluster on loopback, started and stopped by the CLI.

It proves: ``cluster start`` returns while its engines keep running; a sweep spreads
its runs over the engines and ranks them; ``run_on_cluster`` trains as 2 DDP ranks
(rendezvous from the pushed environment) and writes the run as torchrun would; an
engine's echoscreen error comes back with its class and rank; ``cluster stop`` ends it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import ipyparallel  # noqa: F401  (a pip dependency: missing must fail, not skip)
import pytest

from echoscreen.errors import ClusterError, ConfigError
from echoscreen.train import TrainConfig
from echoscreen.train.checkpoint import load
from echoscreen.train.cluster import connect, run_on_cluster
from echoscreen.train.sweep import run_sweep


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "echoscreen", *args], capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A profile folder with 2 running engines (always stopped at the end)."""
    prof = str(tmp_path_factory.mktemp("ipp") / "profile_test")
    try:
        res = _cli("cluster", "start", "--engines", "2", "--profile", prof)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "2 engines" in res.stdout
        yield prof
    finally:
        res = _cli("cluster", "stop", "--profile", prof)
        assert res.returncode == 0 or "no cluster is running" in res.stderr, res.stderr


def test_engines_outlive_the_start_command(profile: str) -> None:
    with connect(profile) as (_, rc):
        pids = rc[:].apply_sync(os.getpid)
    assert len(set(pids)) == 2 and os.getpid() not in pids
    res = _cli("cluster", "start", "--engines", "1", "--profile", profile, timeout=60)
    assert res.returncode != 0 and "already runs" in res.stderr


def test_sweep_on_engines(profile: str, tiny_cfg: TrainConfig, tmp_path: Path) -> None:
    runs = tmp_path / "sweep"
    entries = run_sweep(tiny_cfg, {"lr": [1e-3, 3e-4]}, runs, profile=profile)
    assert [e.params["lr"] for e in entries] != [] and len(entries) == 2
    assert all(e.error is None and e.epochs == 1 for e in entries)
    assert entries[0].val >= entries[1].val
    doc = json.loads((runs / "sweep.json").read_text())
    assert doc["cluster"] == profile and doc["metric"] == "view_acc"
    assert [r["run"] for r in doc["runs"]] == [str(e.run) for e in entries]
    for e in entries:
        assert (e.run / "best.pt").exists() and (e.run / "predictions_test.json").exists()
        assert TrainConfig.load(e.run / "config.json").lr == e.params["lr"]


def test_ddp_ranks_on_engines(profile: str, tiny_cfg: TrainConfig, tmp_path: Path) -> None:
    cfg = replace(tiny_cfg, task="rhd", batch_size=1, run=tmp_path / "ddp")
    result = run_on_cluster(cfg, profile)
    assert result["world"] == 2 and result["epochs"] == 1 and "val" in result
    info = json.loads((cfg.run / "cluster.json").read_text())
    assert info["world"] == 2 and [r["rank"] for r in info["ranks"]] == [0, 1]
    assert all(r["epochs"] == 1 for r in info["ranks"])  # both ranks ran the whole run
    assert len({r["pid"] for r in info["ranks"]}) == 2
    assert load(cfg.run / "checkpoint.pt")["epoch"] == 1
    assert (cfg.run / "predictions_test.json").exists()
    # the same run again: every rank refuses; the error keeps its class and names the rank
    with pytest.raises(ConfigError, match=r"rank \d of 2: .*already holds a trained run"):
        run_on_cluster(cfg, profile)
    with pytest.raises(ClusterError, match="asked for 3 ranks"):
        run_on_cluster(replace(cfg, run=tmp_path / "x"), profile, engines=3)


def test_no_cluster_is_a_clear_error(tmp_path: Path, tiny_cfg: TrainConfig) -> None:
    with pytest.raises(ClusterError, match="cluster start --engines N"):
        run_on_cluster(tiny_cfg, str(tmp_path / "nothing"))


def test_train_cli_with_cluster(profile: str, tiny_site: Path, tmp_path: Path) -> None:
    run = tmp_path / "cli"
    res = _cli("train", "view", "--run", str(run), "--data", str(tiny_site), "--dataset", "ph",
               "--epochs", "1", "--batch-size", "4", "--frames", "8", "--size", "32",
               "--cluster", profile)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(res.stdout)
    assert result["world"] == 2 and result["epochs"] == 1
    assert json.loads((run / "cluster.json").read_text())["world"] == 2
    assert TrainConfig.load(run / "config.json").batch_size == 4
    bad = _cli("train", "view", "--run", str(tmp_path / "b"), "--data", str(tiny_site),
               "--dataset", "ph", "--cluster", str(tmp_path / "none"))  # fmt: skip
    assert bad.returncode != 0 and "no cluster is running" in bad.stderr
    assert "Traceback" not in bad.stderr
