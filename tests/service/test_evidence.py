"""What a result says about its evidence, on the real service on loopback (tests/service/live.py).

An inconclusive result listed ``evidence.clips: []`` and nothing of the clips behind the
decision; every result now lists, under ``evidence.considered``, each clip looked at (view,
view confidence, used or why not) and each file that gave no clip (its reason), by index.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
from tests.registry.pkgfix import Published
from tests.service.live import Live, form, live_service

from echoscreen.models import RHD_VIEWS
from echoscreen.service.sr import build_sr, read_sr


@pytest.fixture(scope="module")
def live(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_service(published, tmp_path_factory.mktemp("service-state")) as service:
        yield service


def _identifying(files: list[tuple[str, bytes]]) -> list[str]:
    """File names and the header values that identify the patient, study or image."""
    out = [name for name, _ in files]
    for _, data in files:
        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        except Exception:
            continue
        for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID",
                  "PatientName"):  # fmt: skip
            if str(ds.get(k) or ""):
                out.append(str(ds.get(k)))
    return out


def _check_considered(result: dict[str, Any], n_files: int) -> None:
    """``evidence.considered`` agrees with ``clips``, ``skipped`` and ``evidence.clips``."""
    ev = result["evidence"]
    assert ev["reason"] == result["reason"]
    entries = ev["considered"]
    clips = [e for e in entries if e["clip"] is not None]
    files = [e for e in entries if e["clip"] is None]
    assert [e["clip"] for e in clips] == [c["index"] for c in result["clips"]]
    for e, c in zip(clips, result["clips"], strict=True):
        assert (e["file_index"], e["view"]) == (c["file_index"], c["view"])
        assert e["confidence"] == pytest.approx(c["confidence"])
        assert e["used"] == c["evidence"] == (c["index"] in ev["clips"])
        assert (e["reason"] is None) == e["used"], e
    assert [(e["file_index"], e["reason"]) for e in files] == [
        (s["file_index"], s["reason"]) for s in result["skipped"]]  # fmt: skip
    assert sorted(e["file_index"] for e in entries) == list(range(n_files))


def test_an_inconclusive_result_lists_the_clips_it_looked_at_and_why_none_was_used(
    live: Live,
) -> None:
    with live.client() as c:
        full = c.post("/v1/screen", files=form(live.study))
        assert full.status_code == 200, full.text
        _check_considered(full.json(), len(live.study))
        # one clip that is not plax cannot show both valves: inconclusive whatever its view
        other = [cl for cl in full.json()["clips"] if cl["view"] != "plax"]
        assert other, "the tiny model called every clip plax"
        pick = live.study[other[0]["file_index"]]
        upload = [pick, ("notes.txt", b"not an image " * 50)]
        r = c.post("/v1/screen", files=form(upload))
        assert r.status_code == 200, r.text
    result = r.json()
    assert result["decision"] == "inconclusive" and result["evidence"]["clips"] == []
    _check_considered(result, len(upload))
    entries = result["evidence"]["considered"]
    clip, unusable = entries
    assert clip["file_index"] == 0 and clip["view"] == other[0]["view"]
    assert clip["used"] is False and clip["reason"]
    if clip["view"] not in RHD_VIEWS:
        assert "not an RHD view" in clip["reason"]
    assert unusable == {"clip": None, "file_index": 1, "view": None, "confidence": None,
                        "used": False, "reason": result["skipped"][0]["reason"]}  # fmt: skip
    text = str(result)
    assert not [v for v in _identifying(upload) if v in text]
    # the SR says the same of the clip
    originals = [pydicom.dcmread(io.BytesIO(pick[1]), stop_before_pixels=True)]
    got = read_sr(build_sr(result, originals))
    assert got["decision"] == "inconclusive" and got["reason"] == result["reason"]
    assert [(x["view"], x["evidence"], x["reason"]) for x in got["clips"]] == [
        (clip["view"], False, clip["reason"])]  # fmt: skip
