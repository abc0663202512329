"""Benchmark: cine -> model-ready clip, echoscreen's route against the plain route.

Routes, timed on the same files in one run (best of ``--repeat``; file read included):

* ``plain``: ``pydicom.dcmread`` + ``ds.pixel_array`` + ``cv2.resize`` (INTER_AREA) of every
  frame to 112 x 112: what a script would do.
* ``read+pre``: ``preprocess(read_cine(path))``: every frame decoded (libjpeg via OpenCV
  for JPEG baseline), only the frames the clip uses cropped and resized.
* ``2 thr``: the same with ``read_cine(path, threads=2)``.
* ``load_clip``: ``load_clip(path)``: decodes only the frames the clip uses (1 thread).
* ``scaled``: ``load_clip(path, scaled=True)``: the model clips' reader (ingest, screen,
  service): the same frames, JPEG baseline decoded at 1/2, 1/4 or 1/8 size by libjpeg's
  DCT scaling (``decode_scale``); ``diff`` is its mean absolute difference from the
  full-size ``load_clip`` clip, in grey levels.

Throughput is source frames per second (frames in the file / time to get the clip).
Files: ``color3d_jpeg_baseline.dcm`` (120 x 640 x 480 JPEG baseline),
``examples_ybr_color.dcm`` (30 x 320 x 240) and a phantom JPEG-baseline clip made by
``echoscreen synth`` (skipped, with a note, when the phantom is not available).

Run: ``.venv/bin/python bench/decode.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.data import get_testdata_file

from echoscreen.dicom import PreprocessSpec, load_clip, preprocess, read_cine

SPEC = PreprocessSpec()


def plain_route(path: Path) -> np.ndarray:
    """ds.pixel_array + cv2.resize of every frame: (T, 112, 112, C)."""
    arr = pydicom.dcmread(path).pixel_array
    if arr.ndim == 3 and arr.shape[-1] == 3:  # one colour frame
        arr = arr[None]
    return np.stack(
        [cv2.resize(f, (SPEC.size, SPEC.size), interpolation=cv2.INTER_AREA) for f in arr]
    )


def ours(path: Path) -> np.ndarray:
    """read_cine (all frames) + preprocess."""
    return preprocess(read_cine(path), SPEC).pixels


def ours_threads(path: Path) -> np.ndarray:
    """read_cine (all frames, 2 decoding threads) + preprocess."""
    return preprocess(read_cine(path, threads=2), SPEC).pixels


def ours_partial(path: Path) -> np.ndarray:
    """load_clip: decode only the frames the clip uses."""
    return load_clip(path, SPEC).pixels


def ours_scaled(path: Path) -> np.ndarray:
    """load_clip(scaled=True): the needed frames, DCT-scaled where the region box allows."""
    return load_clip(path, SPEC, scaled=True).pixels


def best_time(fn: Callable[[Path], np.ndarray], path: Path, repeat: int) -> float:
    """Best wall time of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(path)
        times.append(time.perf_counter() - start)
    return min(times)


def phantom_clip(workdir: Path) -> tuple[Path | None, str]:
    """The longest JPEG-baseline clip of a one-study phantom cohort, or (None, why not)."""
    cmd = [sys.executable, "-m", "echoscreen", "synth", str(workdir / "cohort"), "--studies",
           "1", "--seed", "0", "--transfer-syntax", "jpeg-baseline"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"echoscreen synth did not run ({exc})"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"echoscreen synth failed: {last}"
    clips = sorted((workdir / "cohort").rglob("*.dcm"))
    if not clips:
        return None, "echoscreen synth wrote no .dcm files"
    headers = [pydicom.dcmread(c, stop_before_pixels=True) for c in clips]
    frames = [int(h.get("NumberOfFrames", 1) or 1) for h in headers]
    return clips[int(np.argmax(frames))], ""


def main() -> None:
    """Time the routes on every file and print a table of frames/s and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per route (best kept)")
    parser.add_argument("--no-phantom", action="store_true", help="skip the phantom clip")
    args = parser.parse_args()

    files: list[tuple[str, Path | None, str]] = [
        (name, Path(str(get_testdata_file(name))), "")
        for name in ("color3d_jpeg_baseline.dcm", "examples_ybr_color.dcm")
    ]
    with tempfile.TemporaryDirectory() as tmp:
        phantom, why = (None, "--no-phantom") if args.no_phantom else phantom_clip(Path(tmp))
        files.append(("phantom (echoscreen synth)", phantom, why))
        print(f"machine: {platform.processor() or platform.machine()}, "
              f"{cv2.getNumberOfCPUs()} cores, cv2 threads {cv2.getNumThreads()}, "
              f"python {platform.python_version()}, pydicom {pydicom.__version__}, "
              f"opencv {cv2.__version__}; spec {SPEC}; best of {args.repeat}")
        header = (f"| {'file':<28} | {'frames':>6} | {'size':>9} | {'plain f/s':>9} | "
                  f"{'read+pre f/s':>12} | {'ratio':>6} | {'2 thr f/s':>9} | {'ratio':>6} | "
                  f"{'load_clip f/s':>13} | {'ratio':>6} | {'scaled f/s':>10} | {'ratio':>6} | "
                  f"{'diff':>6} |")
        print(header)
        print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
        for name, path, note in files:
            if path is None:
                print(f"| {name:<28} | skipped: {note}")
                continue
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            n = int(ds.get("NumberOfFrames", 1) or 1)
            for fn in (plain_route, ours, ours_threads, ours_partial, ours_scaled):  # warm-up
                fn(path)
            t_plain = best_time(plain_route, path, args.repeat)
            t_ours = best_time(ours, path, args.repeat)
            t_thr = best_time(ours_threads, path, args.repeat)
            t_part = best_time(ours_partial, path, args.repeat)
            t_sc = best_time(ours_scaled, path, args.repeat)
            diff = np.abs(ours_scaled(path).astype(np.int16) - ours_partial(path)).mean()
            print(f"| {name:<28} | {n:>6} | {ds.Columns:>4}x{ds.Rows:<4} | {n / t_plain:>9.0f} | "
                  f"{n / t_ours:>12.0f} | {t_plain / t_ours:>5.1f}x | {n / t_thr:>9.0f} | "
                  f"{t_plain / t_thr:>5.1f}x | {n / t_part:>13.0f} | {t_plain / t_part:>5.1f}x | "
                  f"{n / t_sc:>10.0f} | {t_plain / t_sc:>5.1f}x | {diff:>6.2f} |")


if __name__ == "__main__":
    main()
