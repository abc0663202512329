"""Benchmark: clips/s through the remote data server (mTLS on loopback) vs the local store.

Both routes read every clip of a dataset through the same ``ClipDataset`` +
``make_loader`` (batch ``--batch``, prefetch depth 2 plus one request of several
batches, up to a quarter of the 64 MB cache; a fresh dataset each pass so
nothing comes from the in-memory cache of an earlier pass); passes alternate
between the routes (so both see the same background load) and the best of
``--passes`` counts. CPU time per MB of the reading process and of the server
process is printed too: on a shared machine it varies less than clips/s.

* **local**: ``LocalSite``: catalog lookup, AES-256-GCM decrypt, ``.npy`` parse.
* **remote**: ``RemoteSite`` against ``echoscreen datasite serve`` running as a
  separate process: the same decryption there, plus the audit record of every
  request, TLS 1.3 both ways, HTTP framing and parsing here.
* **train step**: clips/s a small 3D-conv net (forward + backward + SGD step, CPU,
  batch ``--batch``) consumes, to show whether the remote feed keeps up.

Target: remote >= 0.5x local, and remote above what the training step consumes.
Run: ``.venv/bin/python bench/remote.py [--clips 96] [--frames 32 --size 112]``.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from echoscreen.data import ClipDataset, LocalSite, RemoteSite, make_loader
from echoscreen.datasite import access, pki
from echoscreen.datasite.server import free_port
from echoscreen.store.catalog import add_to_dataset
from echoscreen.store.schema import Clip, Study
from echoscreen.store.site import Site


def build_site(root: Path, n_clips: int, shape: tuple[int, ...]) -> Path:
    """A site with ``n_clips`` random clip tensors in dataset ``bench``, a PKI and a tenant.

    The tensors are stored as ingest stores them: ``np.save`` bytes, encrypted.
    """
    site = Site.init(root / "site")
    rng = np.random.default_rng(0)
    with site.catalog.session() as s:
        for i in range(n_clips):
            sid = f"1.2.826.0.9.{i // 4 + 1}"
            if i % 4 == 0:
                s.add(Study(id=sid, patient=f"p{i}", label="normal", n_clips=4))
                s.flush()
                add_to_dataset(s, "bench", sid)
            buf = io.BytesIO()
            np.save(buf, rng.integers(0, 256, shape, dtype=np.uint8), allow_pickle=False)
            oid = site.objects.put(buf.getvalue())
            s.add(Clip(id=f"{sid}.{i % 4 + 1}", study_id=sid, view="A4C", doppler=False,
                       n_frames=shape[1], fps=30.0, rows=shape[2], cols=shape[3],
                       transfer_syntax="1.2.840.10008.1.2.1", dicom_object=oid,
                       tensor_object=oid, tensor_shape="x".join(map(str, shape))))  # fmt: skip
    pki.init_pki(site.path)
    pki.issue(site, "bench", root / "id")
    access.grant(site, "bench", "bench")
    site.close()
    return root / "site"


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_pass(make: object, batch: int, server: int) -> tuple[float, float, float]:
    """One full read with a fresh dataset: ``(clips/s, own CPU s, server CPU s)``."""
    ds = make()  # type: ignore[operator]
    with ds:
        c0, s0, t0 = time.process_time(), cpu_s(server), time.perf_counter()
        n = sum(x.shape[0] for x, _ in make_loader(ds, batch, depth=2))
        t1, c1, s1 = time.perf_counter(), time.process_time(), cpu_s(server)
    return n / (t1 - t0), c1 - c0, s1 - s0


def train_rate(shape: tuple[int, ...], batch: int, steps: int) -> float:
    """Clips/s a small 3D-conv classifier consumes on CPU (fwd + bwd + step)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(3, 16, 3, stride=(1, 2, 2), padding=1), torch.nn.ReLU(),
        torch.nn.Conv3d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv3d(32, 64, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(64, 3),
    )  # fmt: skip
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = torch.rand(batch, *shape)
    y = torch.randint(0, 3, (batch,))
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    """Build a site, start the server process, measure both routes and a training step."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=96)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=5)
    a = p.parse_args()
    shape = (3, a.frames, a.size, a.size)
    with tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp:
        root = Path(tmp)
        site = build_site(root, a.clips, shape)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "echoscreen", "datasite", "serve", "--site", str(site),
             "--port", str(port), "--rate", "100000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            url = f"https://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    RemoteSite(url, root / "id").session()
                    break
                except Exception:
                    time.sleep(0.1)
            cache = 64 << 20
            routes = {
                "local": lambda: ClipDataset(LocalSite(site), "bench", None, cache_bytes=cache),
                "remote": lambda: ClipDataset(RemoteSite(url, root / "id"), "bench", None,
                                              cache_bytes=cache),
            }  # fmt: skip
            runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in routes}
            for _ in range(a.passes):
                for k, f in routes.items():
                    runs[k].append(one_pass(f, a.batch, server.pid))
            local, remote = (max(r[0] for r in runs[k]) for k in ("local", "remote"))
            with routes["remote"]() as ds:
                per_request = ds.request_clips(a.batch)
        finally:
            server.terminate()
            server.wait(timeout=20)
    train = train_rate(shape, a.batch, a.train_steps)
    mb = np.prod(shape) / 1e6
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"torch {torch.__version__}; clip {'x'.join(map(str, shape))} uint8 ({mb:.2f} MB), "
          f"{a.clips} clips, batch {a.batch}, {per_request} clips per request")  # fmt: skip
    total_mb = a.clips * mb
    for k in ("local", "remote"):
        own, srv = (min(r[i] for r in runs[k]) * 1000 / total_mb for i in (1, 2))
        print(f"{k:6s} CPU per MB (least of {a.passes} passes): reader {own:5.2f} ms, "
              f"server {srv:5.2f} ms")  # fmt: skip
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"local encrypted store : {local:8.1f} clips/s ({local * mb:6.1f} MB/s)")
    print(f"remote over mTLS      : {remote:8.1f} clips/s ({remote * mb:6.1f} MB/s)  "
          f"ratio {remote / local:.2f}x (target >= 0.5x)")  # fmt: skip
    print(f"training step (CPU)   : {train:8.1f} clips/s consumed; remote/train "
          f"{remote / train:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
