"""torchrun with 2 CPU processes reaches the model one process reaches (within tolerance).

The setup is one where both compute the same thing: the rhd model (GroupNorm, no
BatchNorm), dropout 0, an even number of training studies, 2 ranks x batch 1 against
1 process x batch 2. Sampling order, augmentation (keyed by clip), class weights and
per-example loss normalisation are then identical, and DDP's gradient average equals
the single process's batch mean. What remains is float rounding (different reduction
order, one thread per rank), which Adam amplifies on near-zero gradients; so the test
compares the distance between the two models with the distance to a control run that
is *not* equivalent (1 process x batch 1) and with how far training moved the weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch

from echoscreen.data import LocalSite
from echoscreen.models import ModelConfig, create_model
from echoscreen.train import TrainConfig, fit
from echoscreen.train.checkpoint import load


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return float(torch.cat([(a[k].float() - b[k].float()).flatten()
                            for k in a if a[k].is_floating_point()]).norm())  # fmt: skip


def _losses(run: Path) -> list[float]:
    return [json.loads(r)["train_loss"] for r in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one(tiny_cfg: TrainConfig, tmp_path: Path) -> None:
    cfg = replace(tiny_cfg, task="rhd", epochs=2, batch_size=2, dropout=0.0,
                  run=tmp_path / "single")  # fmt: skip
    n_train = len({c.study for c in LocalSite(Path(cfg.data)).clips("ph", "train")})
    assert n_train % 2 == 0, "the equivalence needs an even number of training studies"
    fit(cfg, progress=False)
    control = replace(cfg, batch_size=1, run=tmp_path / "control")
    fit(control, progress=False)
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    args = ["--data", cfg.data, "--dataset", "ph", "--run-dir", str(tmp_path / "ddp"),
            "--epochs", "2", "--batch-size", "1", "--frames", "8", "--size", "32",
            "--max-clips", "3", "--dropout", "0", "--seed", "0", "--no-progress"]  # fmt: skip
    res = subprocess.run([torchrun, "--nproc-per-node", "2", "--standalone", "-m", "echoscreen",
                          "train", "rhd", *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    ddp_run = tmp_path / "ddp"
    assert json.loads(res.stdout)["epochs"] == 2  # rank 0 alone printed the result
    assert TrainConfig.load(ddp_run / "config.json").batch_size == 1
    torch.manual_seed(cfg.seed)
    init = create_model("rhd", ModelConfig(frames=8, image=32, dropout=0.0)).state_dict()
    single, ddp = load(cfg.run / "checkpoint.pt")["model"], load(ddp_run / "checkpoint.pt")["model"]
    other = load(control.run / "checkpoint.pt")["model"]
    gap, moved = _distance(single, ddp), _distance(single, init)
    assert gap < 0.2 * _distance(single, other), (gap, _distance(single, other))
    assert gap < 0.2 * moved, (gap, moved)
    for a, b in zip(_losses(cfg.run), _losses(ddp_run), strict=True):
        assert abs(a - b) < 1e-3 * abs(a), (a, b)
