"""Reading only the frames the models see: the same model inputs and results, less decoding."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.registry.pkgfix import Published

from echoscreen.dicom import PreprocessSpec
from echoscreen.screen import Screener
from echoscreen.screen.inputs import iter_study
from echoscreen.screen.screener import ClipResult, model_frames, read_file


@pytest.fixture(scope="module")
def screener(published: Published) -> Screener:
    return Screener.open(published.registry, published.ref)


def _inputs(screener: Screener, pixels: np.ndarray) -> dict[str, np.ndarray]:
    clip = [ClipResult(index=0, file="f", pixels=pixels)]
    return {t: screener._inputs(t, clip) for t in ("view", "rhd")}


def test_model_frames_are_the_centred_windows(published: Published, screener: Screener) -> None:
    from echoscreen.train.transforms import frame_indices, max_offset

    frames = model_frames(screener.package)
    total = screener.package.spec.frames
    assert frames == sorted(set(frames)) and frames[0] >= 0 and frames[-1] < total
    seen: set[int] = set()
    for task in ("view", "rhd"):  # each model's centred window, as evaluation takes it
        n = screener.package.input_shape(task)[0]
        seen.update(frame_indices(total, n, max_offset(total, n) // 2).tolist())
    assert sorted(seen) == frames and screener.frames == frames
    if total >= 2 * max(screener.package.input_shape(t)[0] for t in ("view", "rhd")):
        assert len(frames) < total  # something is left undecoded


def _files(published: Published, pydicom_file: Callable[[str], Path]) -> list[bytes]:
    folder = published.train_study_folders()[0]
    phantom = [data for _, data in iter_study(folder)][:3]  # regions: subset decoded
    real = [pydicom_file(n).read_bytes()  # no regions (box from pixels) / regions
            for n in ("examples_ybr_color.dcm", "color3d_jpeg_baseline.dcm")]  # fmt: skip
    return phantom + real


def test_reading_the_model_frames_gives_the_same_model_inputs(
    published: Published, screener: Screener, pydicom_file: Callable[[str], Path]
) -> None:
    frames = model_frames(screener.package)
    spec, key = screener.package.spec, os.urandom(32)
    for data in _files(published, pydicom_file):
        whole, study, reason = read_file(data, spec, key)
        part, study2, reason2 = read_file(data, spec, key, frames)
        assert reason is None and reason2 is None and whole is not None and part is not None
        assert study == study2 and part.shape == whole.shape
        for task, x in _inputs(screener, whole).items():
            assert np.array_equal(x, _inputs(screener, part)[task]), task
        np.testing.assert_array_equal(part[:, frames], whole[:, frames])
        others = [k for k in range(spec.frames) if k not in frames]
        assert not part[:, others].any()  # never decoded: black


def test_screening_with_and_without_the_subset_is_identical(
    published: Published, screener: Screener
) -> None:
    folder = published.train_study_folders()[0]
    fast = screener.screen_path(folder).to_json()
    full = Screener(screener.package, screener.backend)
    full.frames = None
    assert full.screen_path(folder).to_json() == fast


def test_a_spec_using_every_frame_reads_every_frame(published: Published) -> None:
    one = PreprocessSpec(size=16, frames=4)
    data = next(iter_study(published.train_study_folders()[0]))[1]
    a = read_file(data, one, os.urandom(32), [0, 1, 2, 3])[0]
    b = read_file(data, one, os.urandom(32))[0]
    assert a is not None and b is not None and np.array_equal(a, b)
