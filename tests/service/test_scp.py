"""The service's C-STORE SCP: dcmtk's storescu pushes phantom studies to a real engine.

Each study of an association becomes one job (client ``dimse:{calling AE}``, source
``dimse``); with a PACS configured its SR lands in the real Orthanc, filed with the
study and referencing the pushed instances; with the PACS down the result is kept.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from tests.pacs import Orthanc, free_port
from tests.registry.pkgfix import Published
from tests.service.live import until as _until
from tests.service.screened import stored_instance

from echoscreen.service.config import ServiceConfig
from echoscreen.service.engine import ScreeningEngine
from echoscreen.service.pacs import sr_sender
from echoscreen.service.scp import ScpHandle, start_scp
from echoscreen.service.sr import read_sr, sr_uids

CALLING_AE = "ECHOCART3"


@pytest.fixture(scope="module")
def engine(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A started engine serving the tiny package on the CPU (one preprocessing process)."""
    cfg = ServiceConfig(registry=published.registry, model=published.ref,
                        state_dir=tmp_path_factory.mktemp("scp-state"), backend="onnx",
                        cpu_workers=1, job_threads=2, explain=False,
                        dicom_port=0).validate()  # fmt: skip
    eng = ScreeningEngine(cfg)
    eng.start()
    try:
        yield cfg, eng
    finally:
        eng.close(drain=True, timeout=60)


def _push(storescu: str, port: int, folders: list[Path]) -> list[Path]:
    files = [p for f in folders for p in sorted(f.rglob("*.dcm"))]
    done = subprocess.run([storescu, "-xy", "-aet", CALLING_AE, "-aec", "ECHOSCREEN", "127.0.0.1",
                           str(port), *map(str, files)],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return files


def _finished(eng: ScreeningEngine, handle: ScpHandle, n: int) -> list[dict[str, Any]]:
    ids = _until(f"{n} studies submitted", lambda: len(handle.submitted) >= n and handle.submitted)
    jobs = [_until(f"job {i} finished", lambda i=i: _done(eng, i)) for i in ids]
    assert [j["status"] for j in jobs] == ["done"] * n, [j["reason"] for j in jobs]
    return jobs


def _done(eng: ScreeningEngine, job_id: str) -> dict[str, Any] | None:
    job = eng.job(job_id)
    return job if job is not None and job["status"] not in ("queued", "running") else None


def _client_and_source(state: Path, job_id: str) -> tuple[str, str]:
    with sqlite3.connect(f"file:{state / 'jobs.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT client, source FROM jobs WHERE id=?", (job_id,)).fetchone()
    return str(row[0]), str(row[1])


def test_storescu_study_is_screened_and_its_sr_lands_in_the_pacs(
    engine: tuple[ServiceConfig, ScreeningEngine], published: Published, orthanc: Orthanc,
    need_binary: Callable[[str], str],
) -> None:  # fmt: skip
    cfg, eng = engine
    orthanc.clear()
    handle = start_scp(cfg, eng, sr_sender(orthanc.dicomweb_url, attempts=2, backoff_s=0.5))
    try:
        folders = published.train_study_folders()[:2]  # two studies in one association
        files = _push(need_binary("storescu"), handle.port, folders)
        jobs = _finished(eng, handle, 2)
    finally:
        handle.stop()
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert len({h.StudyInstanceUID for h in headers}) == 2 and handle.refused == []
    seen = set()
    for job in jobs:
        assert _client_and_source(cfg.state_dir, job["id"]) == (f"dimse:{CALLING_AE}", "dimse")
        result = job["result"]
        uid = sr_uids(job["id"])[1]
        _, sr = _until("the SR in the PACS", lambda u=uid: stored_instance(orthanc, u), 60)
        members = [h for h in headers if h.StudyInstanceUID == sr.StudyInstanceUID]
        assert members, "the SR is not filed with a pushed study"
        assert sr.PatientID == members[0].PatientID
        seen.add(sr.StudyInstanceUID)
        got = read_sr(sr)
        assert got["decision"] == result["decision"]
        assert got["p_screen"] == pytest.approx(result["p_screen"])
        assert got["algorithm"]["name"] == "tiny"
        assert [c["view"] for c in got["clips"]] == [c["view"] for c in result["clips"]]
        assert len(got["clips"]) == len(result["clips"]) > 0
        assert {c["sop_instance_uid"] for c in got["clips"]} <= {m.SOPInstanceUID for m in members}
    assert len(seen) == 2  # one SR per study


def test_with_the_pacs_down_the_job_still_finishes_with_its_result(
    engine: tuple[ServiceConfig, ScreeningEngine], published: Published,
    need_binary: Callable[[str], str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    cfg, eng = engine
    caplog.set_level(logging.ERROR)
    down = sr_sender(f"http://127.0.0.1:{free_port()}/dicom-web", timeout=2, attempts=1)
    handle = start_scp(cfg, eng, down)
    try:
        _push(need_binary("storescu"), handle.port, published.train_study_folders()[2:3])
        (job,) = _finished(eng, handle, 1)
    finally:
        handle.stop()
    assert job["result"]["decision"] in ("screen-positive", "normal", "inconclusive")
    assert len(job["result"]["clips"]) > 0
    # the engine logged why the SR was not sent, and the result is still there to fetch
    _until("the PACS failure logged", lambda: [r for r in caplog.records if r.exc_info
           and "cannot reach the PACS" in str(r.exc_info[1])])  # fmt: skip
    again = eng.job(job["id"])
    assert again is not None and again["result"] == job["result"]
