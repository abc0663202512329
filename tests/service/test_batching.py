"""Micro-batching: concurrent calls merged into one inference call, outputs unchanged."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest
from tests.registry.pkgfix import Published

from echoscreen.errors import ConfigError
from echoscreen.registry import load_package
from echoscreen.screen import OnnxBackend
from echoscreen.service.batching import BatchingBackend, merge, split
from echoscreen.service.metrics import Metrics


@pytest.fixture(scope="module")
def onnx(published: Published) -> OnnxBackend:
    return OnnxBackend.from_package(load_package(published.registry, published.ref), threads=1)


def _view_inputs(published: Published, n: int, seed: int) -> dict:
    frames, size = load_package(published.registry, published.ref).input_shape("view")
    rng = np.random.default_rng(seed)
    return {"clips": rng.random((n, 3, frames, size, size), dtype=np.float32)}


def _rhd_inputs(published: Published, n: int, seed: int) -> dict:
    frames, size = load_package(published.registry, published.ref).input_shape("rhd")
    rng = np.random.default_rng(seed)
    return {"clips": rng.random((1, n, 3, frames, size, size), dtype=np.float32),
            "mask": np.ones((1, n), dtype=bool),
            "views": rng.integers(0, 7, (1, n)).astype(np.int64)}  # fmt: skip


def _together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released at the same moment; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def go(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        np.testing.assert_allclose(a[k], b[k], atol=1e-4, rtol=1e-4, err_msg=k)


def test_concurrent_view_calls_merge_into_one_batch(published: Published,
                                                    onnx: OnnxBackend) -> None:  # fmt: skip
    sizes = [3, 1, 4, 2]
    inputs = [_view_inputs(published, n, seed) for seed, n in enumerate(sizes)]
    metrics = Metrics()
    # the batch closes as soon as it holds max_batch rows; the long window never elapses
    batcher = BatchingBackend(onnx, max_batch=sum(sizes), max_wait_ms=30_000, metrics=metrics)
    try:
        got = _together([partial(batcher.run, "view", x) for x in inputs])
    finally:
        batcher.close()
    assert metrics.sample("echoscreen_batch_size_count", {"model": "view"}) == 1
    assert metrics.sample("echoscreen_batch_size_sum", {"model": "view"}) == sum(sizes)
    for x, out in zip(inputs, got, strict=True):
        _close(out, onnx.run("view", x))


def test_view_calls_are_split_to_run_full_batches(published: Published, onnx: OnnxBackend) -> None:
    inputs = [_view_inputs(published, n, seed) for seed, n in enumerate([10, 12, 10])]
    metrics = Metrics()
    batcher = BatchingBackend(onnx, max_batch=16, max_wait_ms=30_000, metrics=metrics)
    try:
        got = _together([partial(batcher.run, "view", x) for x in inputs])
    finally:
        batcher.close()
    assert metrics.sample("echoscreen_batch_size_count", {"model": "view"}) == 2
    assert metrics.sample("echoscreen_batch_size_bucket", {"model": "view", "le": "12.0"}) == 0
    for x, out in zip(inputs, got, strict=True):
        _close(out, onnx.run("view", x))  # rows from two batches, put back together


def test_rhd_studies_padded_with_masks_give_unpadded_outputs(
    published: Published, onnx: OnnxBackend
) -> None:
    inputs = [_rhd_inputs(published, n, seed) for seed, n in enumerate([1, 4, 2])]
    merged = merge("rhd", inputs)
    assert merged["clips"].shape[:2] == (3, 4) and merged["mask"].sum() == 7
    assert (merged["views"][~merged["mask"]] == -1).all()
    for x, out in zip(inputs, split("rhd", onnx.run("rhd", merged), inputs), strict=True):
        _close(out, onnx.run("rhd", x))  # attention and clip_screen cut back to each N
    metrics = Metrics()
    batcher = BatchingBackend(onnx, max_batch=1 + 4 + 2, max_wait_ms=30_000, metrics=metrics)
    try:
        got = _together([partial(batcher.run, "rhd", x) for x in inputs])
    finally:
        batcher.close()
    assert metrics.sample("echoscreen_batch_size_count", {"model": "rhd"}) == 1
    assert metrics.sample("echoscreen_batch_size_sum", {"model": "rhd"}) == 3  # studies
    for x, out in zip(inputs, got, strict=True):
        _close(out, onnx.run("rhd", x))


def test_a_failing_batch_reaches_every_caller_and_close_refuses_more(
    published: Published, onnx: OnnxBackend
) -> None:
    batcher = BatchingBackend(onnx, max_batch=2, max_wait_ms=30_000)
    x = _view_inputs(published, 1, 0)
    got = _together([lambda: batcher.run("nope", x), lambda: batcher.run("nope", x)])
    assert all(isinstance(e, ConfigError) and "no model 'nope'" in str(e) for e in got)
    small = BatchingBackend(onnx, max_batch=1, max_wait_ms=30_000)
    _close(small.run("view", x), onnx.run("view", x))  # a full batch runs without waiting
    small.close()
    with pytest.raises(Exception, match="closed"):
        small.run("view", x)
    batcher.close()
