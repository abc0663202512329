"""Benchmark: clips/s through the remote data server (mTLS on loopback) vs the local store.

Both routes read every clip of a dataset through the same ``ClipDataset`` +
``make_loader`` (batch ``--batch``; requests of several batches, up to a quarter of
the cache: 64 MB, or 3/4 of the data if less; fetched ahead up to 3/4 of the cache;
each clip handed over as soon as it arrives), in two ways:

* **fresh**: a new dataset each pass, so each pass also opens its connections
  (TLS handshakes) and asks for the session; the clip list is fetched before timing.
* **kept**: one dataset for all passes, as a training run keeps it across epochs.

Every pass fetches every clip from its source (counted: a sequential pass through
more clips than the LRU cache holds evicts each before it comes round again).
Passes alternate between the routes (so both see the same background load) and the
best of ``--passes`` counts. CPU time per MB of the reading process and of the
server process is printed too: on a shared machine it varies less than clips/s.

* **local**: ``LocalSite``: catalog lookup, AES-256-GCM decrypt, zstd decompression
  (of the tensors stored compressed), ``.npy`` parse.
* **remote**: ``RemoteSite`` against ``echoscreen datasite serve`` running as a
  separate process: the same decryption there, plus the audit record of every
  request, TLS 1.3 both ways, HTTP framing and parsing, and the same decompression
  here (compressed tensors travel as stored).
* **train step**: clips/s a small 3D-conv net (forward + backward + SGD step, CPU,
  batch ``--batch``) consumes, to show whether the remote feed keeps up.

Target: remote >= 0.5x local, and remote above what the training step consumes.
Run: ``.venv/bin/python bench/remote.py [--data phantom|phantom-npy --studies 12 | --data
random --clips 96] [--frames 32 --size 112]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echoscreen.data import ClipDataset, LocalSite, RemoteSite, make_loader
from echoscreen.data.sources import ClipInfo, SiteSource
from echoscreen.datasite import access, pki
from echoscreen.datasite.server import free_port
from echoscreen.dicom import PreprocessSpec
from echoscreen.ingest import open_source
from echoscreen.ingest.pipeline import ingest
from echoscreen.store import tensors
from echoscreen.store.catalog import add_to_dataset
from echoscreen.store.schema import Clip, Study
from echoscreen.store.site import Site
from echoscreen.synth import CohortConfig, generate_cohort


def build_site(root: Path, data: str, count: int, shape: tuple[int, ...]) -> Path:
    """A site with clip tensors in dataset ``bench``, a PKI and a tenant ``bench``.

    Args:
        data: ``phantom``: ``count`` phantom studies (seed 5, 240x320 JPEG cines),
            ingested as ``echoscreen ingest`` does, at the bench's frames and size;
            ``phantom-npy``: the same, with compression off (every tensor stored as
            ``.npy``, as before tensors were compressed); ``random``: ``count`` clips of
            uniform random bytes, stored as ingest stores tensors (random bytes do not
            compress, so they stay ``npy``).
        shape: ``(3, frames, size, size)`` of the stored tensors.
    """
    site = Site.init(root / "site")
    if data.startswith("phantom"):
        cohort = root / "cohort"
        generate_cohort(cohort, CohortConfig(studies=count, seed=5, frames=shape[1],
                                             size=(240, 320)))  # fmt: skip
        keep = tensors.KEEP_RATIO
        tensors.KEEP_RATIO = 0.0 if data == "phantom-npy" else keep
        try:  # in this process (workers=1), so that KEEP_RATIO applies
            ingest(open_source(str(cohort)), site, labels=cohort / "labels.csv",
                   clips=cohort / "clips.csv", dataset="bench", workers=1,
                   spec=PreprocessSpec(size=shape[2], frames=shape[1]))  # fmt: skip
        finally:
            tensors.KEEP_RATIO = keep
        shutil.rmtree(cohort)
    else:
        rng = np.random.default_rng(0)
        with site.catalog.session() as s:
            for i in range(count):
                sid = f"1.2.826.0.9.{i // 4 + 1}"
                if i % 4 == 0:
                    s.add(Study(id=sid, patient=f"p{i}", label="normal", n_clips=4))
                    s.flush()
                    add_to_dataset(s, "bench", sid)
                stored = tensors.put(site.objects, rng.integers(0, 256, shape, dtype=np.uint8))
                s.add(Clip(id=f"{sid}.{i % 4 + 1}", study_id=sid, view="A4C", doppler=False,
                           n_frames=shape[1], fps=30.0, rows=shape[2], cols=shape[3],
                           transfer_syntax="1.2.840.10008.1.2.1",
                           dicom_object=stored["tensor_object"], **stored))  # fmt: skip
    pki.init_pki(site.path)
    pki.issue(site, "bench", root / "id")
    access.grant(site, "bench", "bench")
    site.close()
    return root / "site"


def stored_sizes(site_path: Path) -> tuple[int, int, dict[str, int]]:
    """``(clips, stored bytes, clips per form)`` of dataset ``bench``."""
    from sqlalchemy import select

    from echoscreen.store.tensors import NPY

    with Site.open(site_path) as site, site.catalog.session() as s:
        rows = s.execute(select(Clip.tensor_codec, Clip.tensor_nbytes)).all()
    forms: dict[str, int] = {}
    for codec, _ in rows:
        forms[codec or NPY] = forms.get(codec or NPY, 0) + 1
    return len(rows), sum(n or 0 for _, n in rows), forms


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Counted:
    """A clip source that counts the clips fetched through it (to check none came from a cache).

    Args:
        inner: the ``LocalSite`` or ``RemoteSite`` it wraps.
    """

    def __init__(self, inner: SiteSource) -> None:
        self.inner, self.fetched, self.max_batch = inner, 0, inner.max_batch

    def datasets(self) -> list[dict[str, Any]]:
        """The inner source's datasets."""
        return self.inner.datasets()

    def clips(self, dataset: str, split: str | None) -> list[ClipInfo]:
        """The inner source's clip list."""
        return self.inner.clips(dataset, split)

    def fetch(self, ids: Sequence[str]) -> list[np.ndarray]:
        """Fetch through the inner source, counting."""
        self.fetched += len(ids)
        return self.inner.fetch(ids)

    def fetch_each(self, ids: Sequence[str], on_clip: Callable[[str, np.ndarray], None]) -> None:
        """Fetch through the inner source clip by clip, counting."""
        self.fetched += len(ids)
        self.inner.fetch_each(ids, on_clip)

    def close(self) -> None:
        """Close the inner source."""
        self.inner.close()


def one_pass(ds: ClipDataset, batch: int, server: int) -> tuple[float, float, float]:
    """One full read of ``ds``: ``(clips/s, own CPU s, server CPU s)``.

    Raises:
        SystemExit: fewer clips were fetched from the source than read (a cache served some).
    """
    src = ds.source
    assert isinstance(src, Counted)
    before = src.fetched
    c0, s0, t0 = time.process_time(), cpu_s(server), time.perf_counter()
    n = sum(x.shape[0] for x, _ in make_loader(ds, batch))
    t1, c1, s1 = time.perf_counter(), time.process_time(), cpu_s(server)
    if src.fetched - before < n:
        raise SystemExit(f"only {src.fetched - before} of {n} clips were fetched")
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
    p.add_argument("--data", choices=("phantom", "phantom-npy", "random"), default="phantom",
                   help="phantom: ingested phantom studies; phantom-npy: the same stored "
                        "uncompressed; random: incompressible clips")  # fmt: skip
    p.add_argument("--studies", type=int, default=12, help="phantom studies (--data phantom)")
    p.add_argument("--clips", type=int, default=96, help="random clips (--data random)")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=5)
    a = p.parse_args()
    shape = (3, a.frames, a.size, a.size)
    with tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp:
        root = Path(tmp)
        count = a.clips if a.data == "random" else a.studies
        site = build_site(root, a.data, count, shape)
        n_clips, stored, forms = stored_sizes(site)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "echoscreen", "datasite", "serve", "--site", str(site),
             "--port", str(port), "--rate", "100000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            url = f"https://127.0.0.1:{port}"
            deadline = time.monotonic() + 180  # a loaded machine starts the server slowly
            while True:
                try:
                    RemoteSite(url, root / "id").session()
                    break
                except Exception:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("the data server did not start") from None
                    time.sleep(0.1)
            # less than the data, so a kept dataset's LRU cache cannot serve a later pass
            cache = min(64 << 20, n_clips * int(np.prod(shape)) * 3 // 4)
            sources = {"local": lambda: LocalSite(site),
                       "remote": lambda: RemoteSite(url, root / "id")}  # fmt: skip

            def make(k: str) -> ClipDataset:
                return ClipDataset(Counted(sources[k]()), "bench", None, cache_bytes=cache)

            kept = {k: make(k) for k in sources}  # "kept": one dataset for every pass
            runs: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
            for _ in range(a.passes):
                for k in sources:
                    with make(k) as fresh:
                        runs.setdefault(("fresh", k), []).append(
                            one_pass(fresh, a.batch, server.pid))  # fmt: skip
                    runs.setdefault(("kept", k), []).append(one_pass(kept[k], a.batch, server.pid))
            per_request = kept["remote"].request_clips(a.batch)
            ahead = kept["remote"].ahead_batches(a.batch)
            for ds in kept.values():
                ds.close()
        finally:
            server.terminate()
            server.wait(timeout=20)
    train = train_rate(shape, a.batch, a.train_steps)
    mb = np.prod(shape) / 1e6
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"torch {torch.__version__}; clip {'x'.join(map(str, shape))} uint8 ({mb:.2f} MB), "
          f"{n_clips} {a.data} clips, batch {a.batch}, {per_request} clips per request, "
          f"{ahead} batches ahead")  # fmt: skip
    total_mb = n_clips * mb
    print(f"stored: {stored / 1e6:.1f} MB for {total_mb:.1f} MB of tensors "
          f"({total_mb * 1e6 / max(stored, 1):.2f}x); forms {forms}")  # fmt: skip
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for mode, what in (("fresh", "a fresh dataset each pass (connections, clip list)"),
                       ("kept", "one dataset kept for all passes, as across epochs")):  # fmt: skip
        print(f"-- {what}; best of {a.passes} passes, CPU per MB the least")
        best = {}
        for k in ("local", "remote"):
            r = runs[(mode, k)]
            best[k] = max(x[0] for x in r)
            own, srv = (min(x[i] for x in r) * 1000 / total_mb for i in (1, 2))
            print(f"   {k:6s}: {best[k]:7.1f} clips/s ({best[k] * mb:6.1f} MB/s); CPU per MB: "
                  f"reader {own:5.2f} ms, server {srv:5.2f} ms")  # fmt: skip
        print(f"   remote / local {best['remote'] / best['local']:.2f}x (target >= 0.5x); "
              f"remote / train step {best['remote'] / train:.1f}x")  # fmt: skip
    print(f"training step (CPU): {train:.1f} clips/s consumed")


if __name__ == "__main__":
    main()
