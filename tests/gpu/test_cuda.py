"""The GPU paths: mixed-precision training on CUDA, exact resume there, torch-on-CUDA inference.

These need a CUDA device and are skipped without one (CI has none; the suite's other tests
cover the same code on the CPU). Run them on a GPU machine with
``python -m pytest tests/gpu``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.registry.pkgfix import Published

from echoscreen.train import TrainConfig, fit
from echoscreen.train.checkpoint import load

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_fit_runs_on_cuda_in_mixed_precision(tiny_cfg: TrainConfig) -> None:
    """Both tasks train on the GPU (bf16 autocast) and their checkpoints load on the CPU."""
    from echoscreen.train.dist import read_env
    from echoscreen.train.loop import autocast

    assert read_env().device.type == "cuda"
    with autocast(torch.device("cuda")):
        probe = torch.nn.Linear(4, 4).cuda()(torch.randn(2, 4, device="cuda"))
    assert probe.dtype in (torch.bfloat16, torch.float16)
    for task in ("view", "rhd"):
        cfg = replace(tiny_cfg, task=task, epochs=2, batch_size=2,
                      run=tiny_cfg.run.with_name(task))  # fmt: skip
        result = fit(cfg, progress=False)
        assert result["epochs"] == 2
        state = load(cfg.run / "best.pt")["model"]
        assert all(t.device.type == "cpu" and bool(torch.isfinite(t.float()).all())
                   for t in state.values() if t.is_floating_point())  # fmt: skip
        rows = [json.loads(r) for r in (cfg.run / "metrics.jsonl").read_text().splitlines()]
        assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"]) for r in rows)


def test_resume_on_cuda_is_exact(tiny_cfg: TrainConfig) -> None:
    """Killed after epoch 1 and resumed, the GPU run ends with the weights of the straight run."""
    cfg = replace(tiny_cfg, task="rhd", epochs=2, batch_size=2, dropout=0.2)
    straight = replace(cfg, run=tiny_cfg.run / "straight")
    fit(straight, progress=False)
    broken = replace(cfg, run=tiny_cfg.run / "broken")
    fit(broken, progress=False, stop_after=1)
    fit(broken.with_resume(), progress=False)
    a, b = load(straight.run / "checkpoint.pt"), load(broken.run / "checkpoint.pt")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_torchrun_on_cuda_uses_nccl(tiny_cfg: TrainConfig, tmp_path: Path) -> None:
    """``torchrun -m echoscreen train`` with one process per GPU joins an NCCL group."""
    n = torch.cuda.device_count()
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    cmd = [torchrun] if Path(torchrun).exists() else [sys.executable, "-m", "torch.distributed.run"]
    args = ["--data", tiny_cfg.data, "--dataset", "ph", "--run-dir", str(tmp_path / "ddp"),
            "--epochs", "1", "--batch-size", "2", "--frames", "8", "--size", "32",
            "--max-clips", "3", "--seed", "0", "--no-progress"]  # fmt: skip
    res = subprocess.run([*cmd, "--nproc-per-node", str(n), "--standalone", "-m", "echoscreen",
                          "train", "rhd", *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TORCH_DISTRIBUTED_DEBUG": "INFO"})  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert json.loads(res.stdout)["epochs"] == 1
    if n > 1:
        assert "nccl" in res.stderr.lower()


def test_too_many_ranks_for_the_gpus_is_a_clear_error(tiny_cfg: TrainConfig,
                                                      tmp_path: Path) -> None:  # fmt: skip
    """More processes per node than GPUs: NCCL cannot share a GPU; the command says so."""
    n = torch.cuda.device_count()
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    cmd = [torchrun] if Path(torchrun).exists() else [sys.executable, "-m", "torch.distributed.run"]
    args = ["--data", tiny_cfg.data, "--dataset", "ph", "--run-dir", str(tmp_path / "ddp"),
            "--epochs", "1", "--frames", "8", "--size", "32", "--no-progress"]  # fmt: skip
    res = subprocess.run([*cmd, "--nproc-per-node", str(n + 1), "--standalone", "-m",
                          "echoscreen", "train", "rhd", *args], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert res.returncode != 0
    assert "GPU" in res.stdout + res.stderr and "--nproc-per-node" in res.stdout + res.stderr


def test_cuda_backend_agrees_with_onnx(published: Published) -> None:
    """The ``auto`` backend picks torch on CUDA, and it screens like ONNX Runtime on the CPU."""
    from echoscreen.registry import load_package
    from echoscreen.screen import Screener, make_backend

    package = load_package(published.registry, published.ref)
    gpu, cpu = make_backend(package, "auto"), make_backend(package, "onnx")
    assert gpu.name == "torch-cuda" and cpu.name == "onnx"
    rng = np.random.default_rng(0)
    frames, size = package.input_shape("rhd")
    clips = rng.random((2, 3, 3, frames, size, size), dtype=np.float32)
    inputs = {"clips": clips, "mask": np.ones((2, 3), dtype=bool),
              "views": np.array([[0, 2, 3], [4, 5, 0]], dtype=np.int64)}  # fmt: skip
    a, b = gpu.run("rhd", inputs), cpu.run("rhd", inputs)
    for key in a:  # TF32 convolutions on the GPU: agreement to ~1e-3, not 1e-6
        np.testing.assert_allclose(a[key], b[key], rtol=2e-2, atol=2e-2, err_msg=key)
    study = published.train_study_folders()[0]
    on_gpu = Screener(package, gpu).screen_path(study)
    on_cpu = Screener(package, cpu).screen_path(study)
    assert [c.view for c in on_gpu.clips] == [c.view for c in on_cpu.clips]
    assert (on_gpu.p_screen is None) == (on_cpu.p_screen is None)
    if on_gpu.p_screen is not None and on_cpu.p_screen is not None:
        assert on_gpu.p_screen == pytest.approx(on_cpu.p_screen, abs=2e-2)
        if abs(on_cpu.p_screen - on_cpu.threshold) > 2e-2:
            assert on_gpu.decision == on_cpu.decision


def test_transforms_on_the_gpu_match_the_cpu() -> None:
    """Training moves uint8 batches to the GPU and transforms them there: same inputs."""
    from echoscreen.train.transforms import transform_batch

    gen = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (4, 3, 32, 64, 64), dtype=torch.uint8, generator=gen)
    keys = ["a", "b", "c", "d"]
    for train in (False, True):
        kw = {"frames": 16, "size": 48, "seed": 1, "epoch": 2, "train": train}
        cpu = transform_batch(clips, keys, **kw)  # type: ignore[arg-type]
        gpu = transform_batch(clips.cuda(), keys, **kw)  # type: ignore[arg-type]
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
