"""Benchmark: the screening service under concurrent load, against a naive service, in one run.

Both services run as separate processes on loopback and screen the same phantom studies
(DICOM files as a scanner writes them: JPEG-baseline cine at each simulated scanner's
size) with the same published package, posted as multipart forms by ``--clients``
concurrent clients to ``POST /v1/screen`` (synchronous: the answer is the result):

* **service**: ``echoscreen serve`` (de-identification, decoding and preprocessing in a
  pool of ``--workers`` processes, ONNX Runtime behind the micro-batcher, bearer-token
  checks, jobs recorded in SQLite, metrics); explanations off (``--no-explain``), as the
  baseline computes none;
* **naive**: the baseline the issue names: a FastAPI app (this file, ``--naive``) whose
  request handler runs ``Screener`` with the eager torch backend per request: decoding in
  the request thread, one model call per request, no batching, no pool.

Printed per route: throughput (studies/s) over ``--requests`` requests, p50/p95
latency, the latency of one 10-clip study posted alone (median of 5), the CPU seconds
per study the server (with its worker processes) used under load (from /proc: robust to
other jobs on the machine, which throughput is not) and the bench's own client CPU, and
the median cost per file of ``read_file``, the reading both routes share. Target:
service throughput >= 3x the naive one with 16 clients on 2 cores.

Without ``--registry``/``--model`` a package is built first at the demo's model sizes
(a small phantom site, one epoch each; weights do not matter for speed).
Run: ``.venv/bin/python bench/serve.py [--clients 16] [--requests 64] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request

from echoscreen.cpus import usable_cpus
from echoscreen.datasite.server import free_port
from echoscreen.screen import iter_study

STUDY_FILES = 10


def build_package(root: Path) -> tuple[Path, str]:
    """A package ``bench:1`` at the demo's sizes (16 frames x 64 px), quickly trained.

    ``cohort.size`` 96x96 keeps its training short; the studies screened are full size.
    """
    from echoscreen.dicom import PreprocessSpec
    from echoscreen.ingest import open_source
    from echoscreen.ingest.pipeline import ingest
    from echoscreen.registry import PublishConfig, publish
    from echoscreen.store.catalog import make_split
    from echoscreen.store.site import Site
    from echoscreen.synth import CohortConfig, generate_cohort
    from echoscreen.train import TrainConfig, fit

    cohort, spec = root / "train-cohort", PreprocessSpec(size=64, frames=32)
    generate_cohort(cohort, CohortConfig(studies=12, seed=3, frames=32, size=(96, 96)))
    with Site.init(root / "site") as site:
        ingest(open_source(str(cohort)), site, labels=cohort / "labels.csv",
               clips=cohort / "clips.csv", dataset="b", spec=spec)  # fmt: skip
        make_split(site.catalog, "b", 0.5, 0.25, 0.25, seed=0)
    common: dict[str, Any] = {"data": str(root / "site"), "dataset": "b", "epochs": 1,
                              "frames": 16, "size": 64}  # fmt: skip
    # the view model needs a few epochs to find RHD views, else every study is
    # inconclusive and the rhd model never runs
    fit(TrainConfig(task="view", run=root / "view", **{**common, "epochs": 8}, lr=3e-3),
        progress=False)  # fmt: skip
    fit(TrainConfig(task="rhd", run=root / "rhd", batch_size=4, **common), progress=False)
    # min_view_confidence 0: a one-epoch view model is rarely confident, and the rhd model
    # must run on every study for the bench to time the whole pipeline
    publish(PublishConfig(rhd_run=root / "rhd", view_run=root / "view", spec=spec,
                          registry=root / "registry", name="bench", version="1",
                          min_view_confidence=0.0))  # fmt: skip
    return root / "registry", "bench:1"


def naive_device(backend: str) -> str:
    """The naive baseline's torch device: the GPU when the service's backend uses one."""
    import torch

    return "cuda" if backend in ("auto", "torch") and torch.cuda.is_available() else "cpu"


def naive_app(registry: Path, model: str, device: str = "cpu") -> Any:
    """The baseline: per-request eager torch screening, no batching, no pool, no auth.

    The models are loaded once; each request decodes its files in its own thread and
    calls them for its own clips only (torch's default intra-op threads).
    """
    from fastapi import FastAPI

    from echoscreen.registry import load_package
    from echoscreen.screen import Screener, TorchBackend
    from echoscreen.service.uploads import UploadLimits, parse_upload

    package = load_package(registry, model)
    screener = Screener(package, TorchBackend.from_package(package, device))
    app = FastAPI()
    limits = UploadLimits(max_bytes=512 << 20, max_files=500)

    @app.post("/v1/screen")
    async def screen(request: Request) -> dict[str, Any]:
        from starlette.concurrency import run_in_threadpool

        body = await request.body()
        files = parse_upload(body, request.headers.get("content-type", ""), limits)

        def work() -> dict[str, Any]:
            return screener.screen(files).to_json()

        return await run_in_threadpool(work)

    return app


def _wait_up(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def load(url: str, token: str, studies: list[list[tuple[str, bytes]]], clients: int,
         requests: int) -> tuple[float, list[float]]:  # fmt: skip
    """``requests`` studies posted by ``clients`` threads; (studies/s, latencies in s)."""
    from echoscreen.service.client import ServiceClient

    def one(i: int) -> float:
        with ServiceClient(url, token, timeout_s=600.0, patience_s=0.0) as client:
            start = time.perf_counter()
            client.screen(studies[i % len(studies)])  # a 4xx/5xx raises ServiceError
            return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        lat = list(pool.map(one, range(requests)))
    return requests / (time.perf_counter() - start), lat


def alone(url: str, token: str, study: list[tuple[str, bytes]], repeats: int = 5) -> float:
    """Median latency (s) of one study posted with nothing else running."""
    _, lat = load(url, token, [study], 1, repeats)
    return statistics.median(lat)


def inference_only(registry: Path, model: str, study: list[tuple[str, bytes]], clients: int,
                   backend: str = "onnx", rounds: int = 4) -> dict[str, float]:  # fmt: skip
    """Studies/s of the two inference paths alone (view + rhd models on decoded clips).

    ``clients`` threads each classify and decide the same decoded study ``rounds`` times:
    through one eager torch backend called per study (the naive path), and through the
    service's ``BatchingBackend`` over its ``backend`` (calls of concurrent studies merged).
    """
    from echoscreen.registry import load_package
    from echoscreen.screen import OnnxBackend, Screener, ScreenResult, TorchBackend, make_backend
    from echoscreen.service.batching import BatchingBackend

    package = load_package(registry, model)
    clips = Screener(package, OnnxBackend.from_package(package)).read(study)[0]
    out = {}
    backends: dict[str, Any] = {
        "naive": TorchBackend.from_package(package, naive_device(backend)),
        "service": BatchingBackend(make_backend(package, backend, threads=1)),  # as served
    }
    for name, route in backends.items():
        screener = Screener(package, route)

        def one(_: int, screener: Screener = screener) -> None:
            mine = [copy.copy(c) for c in clips]
            screener.classify(mine)
            screener.decide(ScreenResult(model="", backend="", threshold=0.5, clips=mine))

        one(0)
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, range(clients * rounds)))
        out[name] = clients * rounds / (time.perf_counter() - start)
    return out


def read_cost(registry: Path, model: str, studies: list[list[tuple[str, bytes]]]) -> float:
    """Median seconds per file of ``read_file``, in this process.

    Decoding, de-identification and preprocessing of the frames the models see
    (``Screener.read``): what both routes do per file before any inference.
    """
    from echoscreen.registry import load_package
    from echoscreen.screen.screener import model_frames, read_file

    package = load_package(registry, model)
    spec, key, frames = package.spec, os.urandom(32), model_frames(package)
    files = [data for study in studies for _, data in study]
    read_file(files[0], spec, key, frames)
    times = []
    for data in files:
        start = time.perf_counter()
        read_file(data, spec, key, frames)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the service's preprocessing processes), from /proc."""
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        out.append(todo.pop())
        todo.extend(kids.get(out[-1], []))
    return out


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` (0 for gone ones)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1]


def _studies(root: Path, n: int) -> tuple[list[list[tuple[str, bytes]]], list[tuple[str, bytes]]]:
    """``n`` phantom studies as scanners write them, and one study of exactly 10 files."""
    from echoscreen.synth import CohortConfig, generate_cohort

    cohort = root / "studies"
    generate_cohort(cohort, CohortConfig(studies=n, seed=17, frames=32))
    folders = sorted(p.parent for p in cohort.glob("*/*/IM0001.dcm"))
    studies = [list(iter_study(f)) for f in folders]
    ten = next((s for s in studies if len(s) >= STUDY_FILES), studies[0])[:STUDY_FILES]
    return studies, ten


def _start(cmd: list[str], url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_up(url, proc)
    return proc


def main() -> None:
    """Build or open a package, start both services, load them in turn, print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--registry", type=Path)
    p.add_argument("--model")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--studies", type=int, default=8)
    p.add_argument("--workers", type=int, default=usable_cpus())
    p.add_argument("--backend", default="onnx", help="the service's --backend (auto, torch: "
                   "the naive baseline runs its eager torch on the GPU too when there is one)")
    p.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.naive:  # the baseline server process
        import uvicorn

        app = naive_app(a.registry, a.model, naive_device(a.backend))
        uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning")
        return
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        registry, model = (a.registry, a.model) if a.registry else build_package(root)
        studies, ten = _studies(root, a.studies)
        infer = inference_only(registry, model, ten, a.clients, a.backend)
        per_file = read_cost(registry, model, studies)
        results = {}
        from echoscreen.service.tokens import TokenStore

        token = TokenStore(root / "state" / "tokens.db").create("bench")
        routes = {
            "service": [sys.executable, "-m", "echoscreen", "serve", "--registry", str(registry),
                        "--model", model, "--state", str(root / "state"), "--backend", a.backend,
                        "--workers", str(a.workers), "--no-explain", "--no-access-log"],
            "naive": [sys.executable, __file__, "--naive", "--registry", str(registry),
                      "--model", model, "--backend", a.backend],
        }  # fmt: skip
        for name, cmd in routes.items():
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            proc = _start([*cmd, "--port", str(port)], url)
            try:
                load(url, token, studies[:2], 2, 2)  # warm-up (model load, pool start)
                single = alone(url, token, ten)
                pids, mine = _tree(proc.pid), time.process_time()
                cpu0 = _cpu_s(pids)
                rate, lat = load(url, token, studies, a.clients, a.requests)
                cost = (_cpu_s(pids) - cpu0) / a.requests  # server CPU s per study
                client = (time.process_time() - mine) / a.requests
                results[name] = (rate, _pct(lat, 50), _pct(lat, 95), single, cost, client)
            finally:
                proc.terminate()
                proc.wait(timeout=120)
    clips = sum(len(s) for s in studies) / len(studies)
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, load "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; {len(studies)} phantom studies "
          f"({clips:.1f} files each, JPEG cine 32 frames), {a.clients} clients, "
          f"{a.requests} requests, service workers {a.workers}, backend {a.backend} "
          f"(naive torch on {naive_device(a.backend)})")  # fmt: skip
    for name, (rate, p50, p95, single, cost, client) in results.items():
        print(f"{name:8s}: {rate:6.2f} studies/s  p50 {p50:6.2f} s  p95 {p95:6.2f} s  "
              f"10-clip study alone {single:5.2f} s  server CPU {cost:.3f} s/study "
              f"(bench clients {client:.3f})")  # fmt: skip
    cost_ratio = results["naive"][4] / results["service"][4]
    print(f"server CPU per study naive/service: {cost_ratio:.2f}x (what the service's "
          "throughput over the naive one tends to once both are CPU-bound)")  # fmt: skip
    ratio = results["service"][0] / results["naive"][0]
    print(f"throughput service/naive: {ratio:.2f}x (target >= 3x)")
    print(f"inference alone ({STUDY_FILES}-clip study, {a.clients} threads): naive "
          f"{infer['naive']:.1f} studies/s, service {infer['service']:.1f} studies/s: "
          f"{infer['service'] / infer['naive']:.2f}x")  # fmt: skip
    print(f"read_file (decode + de-identify + preprocess), median per file: "
          f"{per_file * 1000:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
