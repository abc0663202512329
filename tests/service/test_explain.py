"""Saliency key frames of the evidence clips of a real screened phantom study."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from tests.registry.pkgfix import Published

from echoscreen.screen import Screener, ScreenResult, iter_study
from echoscreen.service.explain import explain, overlay


def _decided(published: Published) -> tuple[Screener, ScreenResult]:
    """The first training study the tiny package decides, screened with its clips kept."""
    screener = Screener.open(published.registry, published.ref)
    for folder in published.train_study_folders():
        result = screener.screen(iter_study(folder))
        if result.p_screen is not None:
            return screener, result
    raise AssertionError("the tiny package decides no training study")


def test_key_frames_are_pngs_of_the_top_evidence_clips(published: Published) -> None:
    screener, result = _decided(published)
    doc = result.to_json()
    found = explain(screener.package, doc, result.clips, k=2)
    evidence = [c for c in doc["clips"] if c["evidence"]]
    assert len(found) == min(2, len(evidence))
    top = sorted(evidence, key=lambda c: -c["attention"])[: len(found)]
    assert [e.clip for e in found] == [c["index"] for c in top]
    for e in found:
        pixels = result.clips[e.clip].pixels  # uint8 (3, T, S, S)
        img = Image.open(io.BytesIO(e.png))
        assert img.format == "PNG" and img.mode == "RGB"
        assert img.size == (pixels.shape[3], pixels.shape[2]) and 0 <= e.frame < pixels.shape[1]
        shown = np.asarray(img).astype(int)
        frames = pixels.transpose(1, 2, 3, 0).astype(int)  # (T, S, S, 3)
        same = [int((np.abs(shown - f) <= 1).all(axis=-1).sum()) for f in frames]
        assert same[e.frame] == max(same)  # the picture is the key frame ...
        assert same[e.frame] < shown.shape[0] * shown.shape[1]  # ... with an overlay on it


def test_no_evidence_no_explanation_and_zero_saliency_draws_nothing(
    published: Published,
) -> None:
    screener, result = _decided(published)
    doc = result.to_json()
    for c in doc["clips"]:
        c["evidence"] = False
    assert explain(screener.package, doc, result.clips) == []
    frame = result.clips[0].pixels[:, 0]
    assert (overlay(frame, np.zeros((8, 8), np.float32)) == frame.transpose(1, 2, 0)).all()
