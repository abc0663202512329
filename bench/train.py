"""Benchmark: training clips/s of the view model, data path vs memory, and 1 vs 2 DDP ranks.

One run, on one phantom site (cohort at 64 x 64, stored clips 3 x 32 x 64 x 64 as the demo
stores them, model input 3 x 16 x 64 x 64 through the train transform):

(a) **data path**: the same small view model, the same steps (forward, cross-entropy,
    backward, AdamW), fed three ways:
    * ``loader``: ``ClipDataset(LocalSite)`` + ``make_loader`` (decrypt, parse, prefetch)
      and ``transform_batch(train=True)``: what ``echoscreen train`` does;
    * ``memory uint8``: the stored clips already in memory, transformed per batch;
    * ``memory float``: model inputs already transformed in memory (the model alone).
    Batches move to the model's device as uint8 and are transformed there, as in training.
(b) **DDP**: ``echoscreen train view`` as 1 process (batch 2B, 2 torch threads) vs
    ``torchrun --nproc-per-node 2 --standalone`` (batch B per rank, 1 thread each): the
    same global batch; clips/s from the epochs' ``time_s`` in ``metrics.jsonl`` (training
    plus rank 0's validation of the small val split) and from the command's wall time.
    Always on the CPU (gloo), GPUs hidden: it is the CPU comparison the issue asks for.
(c) **GPU** (only when torch sees one): (a) again on the GPU (bf16 autocast, as
    ``echoscreen train`` does there) for each ``--sizes`` model, and ``echoscreen train
    view`` as 1 process on the GPU: whether the data path keeps up with a GPU.

Run: ``.venv/bin/python bench/train.py [--studies 12 --batch 8 --steps 12 --epochs 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from echoscreen.cpus import usable_cpus
from echoscreen.data import ClipDataset, LocalSite, make_loader
from echoscreen.models import VIEWS, ModelConfig, create_model
from echoscreen.train.loop import autocast
from echoscreen.train.transforms import transform_batch

FRAMES, SIZE = 16, 64


def make_site(root: Path, studies: int) -> Path:
    """A phantom site (dataset ``bench``, split 80/10/10) stored as the demo stores clips."""
    from echoscreen.dicom.preprocess import PreprocessSpec
    from echoscreen.ingest.pipeline import ingest
    from echoscreen.ingest.source import open_source
    from echoscreen.store.catalog import make_split
    from echoscreen.store.site import Site
    from echoscreen.synth import CohortConfig, generate_cohort

    cohort = root / "cohort"
    generate_cohort(cohort, CohortConfig(studies=studies, seed=7, frames=32, size=(64, 64)))
    with Site.init(root / "site") as site:
        ingest(open_source(str(cohort)), site, labels=cohort / "labels.csv",
               clips=cohort / "clips.csv", dataset="bench", spec=PreprocessSpec(size=64, frames=32))
        make_split(site.catalog, "bench", 0.8, 0.1, 0.1, seed=0)
    return root / "site"


def _labels(meta: dict[str, list[str]]) -> torch.Tensor:
    return torch.tensor([VIEWS.index(v) if v in VIEWS else len(VIEWS) - 1 for v in meta["view"]])


def _steps(batches: Iterator[tuple[torch.Tensor, torch.Tensor]], steps: int, batch: int,
           device: torch.device, size: str) -> float:  # fmt: skip
    """Train ``steps`` steps on ``batches`` (after warm-up steps); return clips/s."""
    torch.manual_seed(0)
    model = create_model("view", ModelConfig(size=size, frames=FRAMES, image=SIZE)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    warm, start = (5 if device.type == "cuda" else 1), 0.0
    for i in range(steps + warm):
        if i == warm:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        x, y = next(batches)
        with autocast(device):
            out = model(x.to(device, non_blocking=True))["view"]
        loss = F.cross_entropy(out.float(), y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def data_path(site: Path, batch: int, steps: int, device: torch.device,
              size: str = "small") -> dict[str, float]:  # fmt: skip
    """Clips/s of the three feeds of (a) on ``device`` for the ``size`` view model."""
    def loader() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for epoch in range(1000):
            with ClipDataset(LocalSite(site), "bench", "train") as ds:
                for x, meta in make_loader(ds, batch, shuffle=True, seed=epoch, drop_last=True):
                    keys = list(meta["clip"])
                    yield transform_batch(x.to(device), keys, frames=FRAMES, size=SIZE, seed=0,
                                          epoch=epoch, train=True), _labels(meta)

    with ClipDataset(LocalSite(site), "bench", "train") as ds:
        raw = [(x, list(meta["clip"]), _labels(meta))
               for x, meta in make_loader(ds, batch, drop_last=True)]

    def memory_uint8() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for epoch in range(1000):
            for x, keys, y in raw:
                yield transform_batch(x.to(device), keys, frames=FRAMES, size=SIZE, seed=0,
                                      epoch=epoch, train=True), y
    floats = [(transform_batch(x.to(device), k, frames=FRAMES, size=SIZE, seed=0, epoch=0,
                               train=True), y)
              for x, k, y in raw]  # fmt: skip

    def memory_float() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from floats

    return {"loader": _steps(loader(), steps, batch, device, size),
            "memory uint8": _steps(memory_uint8(), steps, batch, device, size),
            "memory float": _steps(memory_float(), steps, batch, device, size)}


def train_cmd(site: Path, run: Path, ranks: int, batch: int, epochs: int,
              gpu: bool = False) -> dict[str, float]:  # fmt: skip
    """Run ``echoscreen train view`` (1 process or torchrun with ``ranks``); clips/s.

    ``gpu`` False hides the GPUs from the command (CPU, gloo)."""
    args = ["train", "view", "--data", str(site), "--dataset", "bench", "--run-dir", str(run),
            "--batch-size", str(batch), "--epochs", str(epochs), "--frames", str(FRAMES),
            "--size", str(SIZE), "--no-progress"]
    if ranks == 1:
        cmd = [sys.executable, "-m", "echoscreen", *args]
    else:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        cmd = [torchrun, "--nproc-per-node", str(ranks), "--standalone", "-m", "echoscreen", *args]
    threads = str(max(1, usable_cpus() // ranks))
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    with ClipDataset(LocalSite(site), "bench", "train") as ds:
        clips = len(ds) * epochs
    return {"epochs clips/s": clips / sum(r["time_s"] for r in rows), "wall clips/s": clips / wall,
            "wall s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--sizes", default="small,large", help="model sizes for (c) on a GPU")
    a = ap.parse_args()
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        site = make_site(Path(tmp), a.studies)
        torch.set_num_threads(usable_cpus())
        rates = data_path(site, a.batch, a.steps, torch.device("cpu"))
        print(f"(a) view model, batch {a.batch}, {a.steps} steps, input 3x{FRAMES}x{SIZE}x{SIZE}")
        _print_rates(rates)
        one = train_cmd(site, Path(tmp) / "r1", 1, 2 * a.batch, a.epochs)
        two = train_cmd(site, Path(tmp) / "r2", 2, a.batch, a.epochs)
        print(f"(b) echoscreen train view, global batch {2 * a.batch}, {a.epochs} epochs")
        for name, res in (("1 process", one), ("2 DDP ranks", two)):
            print(f"  {name:11s} " + ", ".join(f"{k} {v:.1f}" for k, v in res.items()))
        print(f"  2 ranks / 1 process: {two['epochs clips/s'] / one['epochs clips/s']:.2f}x "
              f"(epochs), {two['wall clips/s'] / one['wall clips/s']:.2f}x (wall)")
        if torch.cuda.is_available():
            gpu_rows(site, Path(tmp), a)
        print(f"load after: {os.getloadavg()[0]:.1f}")


def _print_rates(rates: dict[str, float]) -> None:
    for name, r in rates.items():
        print(f"  {name:13s} {r:7.1f} clips/s  ({r / rates['memory float']:.2f}x memory float)")


def gpu_rows(site: Path, tmp: Path, a: argparse.Namespace) -> None:
    """(c): the feeds of (a) on the GPU per model size, and one training process there."""
    cuda = torch.device("cuda")
    print(f"(c) GPU: {torch.cuda.get_device_name(cuda)}, bf16 autocast")
    for size in a.sizes.split(","):
        print(f"  view model {size}, batch {a.batch}, {a.steps} steps")
        _print_rates(data_path(site, a.batch, a.steps, cuda, size))
    res = train_cmd(site, tmp / "rg", 1, 2 * a.batch, a.epochs, gpu=True)
    print("  echoscreen train view on the GPU, 1 process: "
          + ", ".join(f"{k} {v:.1f}" for k, v in res.items()))


if __name__ == "__main__":
    main()
