"""Benchmark: the encrypted data site, against plain files, in one run.

Two figures:

* **read**: training clips per second read from the encrypted store
  (``ObjectStore.get`` = AES-256-GCM decrypt + ``np.load``) against the same clip
  tensors read unencrypted from ``.npy`` files on the same disk (``np.load``). Both
  routes read every clip of the site ``--passes`` times with the page cache warm; the
  best pass counts. Target: encrypted >= 0.5x plain.
* **ingest**: studies per minute for ``echoscreen ingest`` of a phantom cohort from a
  folder (de-identification with pixel cleaning, decode, preprocess, encryption, one
  catalog transaction per study), on SQLite.

Run: ``.venv/bin/python bench/store.py [--studies 12] [--passes 5]``.
"""

from __future__ import annotations

import argparse
import io
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy import select

from echoscreen.dicom import PreprocessSpec
from echoscreen.ingest import open_source
from echoscreen.ingest.pipeline import ingest
from echoscreen.store.schema import Clip
from echoscreen.store.site import Site
from echoscreen.synth import CohortConfig, generate_cohort


def _best_rate(count: int, passes: int, read_all: Callable[[], None]) -> float:
    """Best items/s over ``passes`` calls of ``read_all`` (which reads ``count`` items)."""
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        read_all()
        best = min(best, time.perf_counter() - start)
    return count / best


def main() -> None:
    """Generate, ingest, and compare encrypted with plain reads; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=12)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    spec = PreprocessSpec()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        root = Path(tmp)
        cohort = root / "cohort"
        generate_cohort(cohort, CohortConfig(studies=args.studies, seed=7))
        site = Site.init(root / "site")
        start = time.perf_counter()
        report = ingest(open_source(str(cohort)), site, labels=cohort / "labels.csv",
                        clips=cohort / "clips.csv", dataset="bench", spec=spec)  # fmt: skip
        ingest_s = time.perf_counter() - start
        with site.catalog.session() as session:
            oids = list(session.scalars(select(Clip.tensor_object)))
        plain_dir = root / "plain"
        plain_dir.mkdir()
        for i, oid in enumerate(oids):
            (plain_dir / f"{i}.npy").write_bytes(site.objects.get(oid))
        plain_files = sorted(plain_dir.iterdir())
        nbytes = sum(p.stat().st_size for p in plain_files)

        def read_encrypted() -> None:
            for oid in oids:
                np.load(io.BytesIO(site.objects.get(oid)))

        def read_plain() -> None:
            for path in plain_files:
                np.load(path)

        read_plain()  # warm the page cache for both routes
        read_encrypted()
        enc = _best_rate(len(oids), args.passes, read_encrypted)
        plain = _best_rate(len(oids), args.passes, read_plain)
        site.close()
    clip_mb = nbytes / len(oids) / 1e6
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, python {platform.python_version()}")
    print(f"clips: {len(oids)} tensors of 3x{spec.frames}x{spec.size}x{spec.size} uint8 "
          f"({clip_mb:.2f} MB each)")  # fmt: skip
    print(f"read plain .npy   : {plain:8.1f} clips/s ({plain * clip_mb:7.1f} MB/s)")
    print(f"read encrypted    : {enc:8.1f} clips/s ({enc * clip_mb:7.1f} MB/s)")
    print(f"ratio encrypted/plain: {enc / plain:.2f}x (target >= 0.5x)")
    print(f"ingest: {report.ingested} studies, {report.clips} clips in {ingest_s:.1f} s = "
          f"{60 * report.ingested / ingest_s:.1f} studies/min "
          f"({len(report.quarantined)} quarantined)")  # fmt: skip


if __name__ == "__main__":
    main()
