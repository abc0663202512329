"""STOW-RS of the screening SR to a real Orthanc, read back over its REST API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import highdicom
import httpx
import pytest
from tests.pacs import Orthanc, free_port
from tests.registry.pkgfix import Published
from tests.service.live import form, live_service, until, wait
from tests.service.screened import Screened, screened, stored_instance

from echoscreen.errors import ServiceError
from echoscreen.service.pacs import sr_sender, stow
from echoscreen.service.sr import build_sr, read_sr, sr_uids

__all__ = ["screened"]


@pytest.fixture
def pacs_with_study(orthanc: Orthanc, screened: Screened) -> Orthanc:
    """Orthanc holding only the screened study's originals."""
    orthanc.clear()
    for _, data in screened.files:
        orthanc.upload(data)
    return orthanc


def test_stowed_sr_is_filed_with_the_study_and_reads_back_intact(
    pacs_with_study: Orthanc, screened: Screened
) -> None:
    orthanc = pacs_with_study
    sr = build_sr(screened.result, screened.originals())
    stow(orthanc.dicomweb_url, [sr])
    stow(orthanc.dicomweb_url, [sr])  # the same job again: stored once, not twice
    stored = stored_instance(orthanc, sr.SOPInstanceUID)
    assert stored is not None, "the SR is not in the PACS"
    orthanc_id, back = stored
    highdicom.sr.ComprehensiveSR.from_dataset(back)
    got = read_sr(back)
    assert got["decision"] == screened.result["decision"]
    assert got["p_screen"] == pytest.approx(screened.result["p_screen"])
    assert got["algorithm"] == {"name": "tiny", "version": "1"}
    originals = screened.originals()
    assert [c["sop_instance_uid"] for c in got["clips"]] == [
        originals[c["file_index"]].SOPInstanceUID for c in screened.result["clips"]
    ]
    # one study in the PACS: the originals plus the SR, under the same patient
    studies = httpx.get(f"{orthanc.url}/studies", timeout=30).json()
    assert len(studies) == 1
    instances = httpx.get(f"{orthanc.url}/studies/{studies[0]}/instances", timeout=30).json()
    assert len(instances) == len(screened.files) + 1
    assert orthanc_id in {i["ID"] for i in instances}


def test_sr_sender_is_an_on_done_callback_that_files_the_result(
    pacs_with_study: Orthanc, screened: Screened
) -> None:
    send = sr_sender(pacs_with_study.dicomweb_url, attempts=1)
    result: dict[str, Any] = {**screened.result, "job": None}
    send("feedfacefeedfacefeedfacefeedface", result, screened.files)
    stored = stored_instance(pacs_with_study, sr_uids("feedfacefeedfacefeedfacefeedface")[1])
    assert stored is not None and read_sr(stored[1])["decision"] == result["decision"]


def test_unreachable_pacs_raises_a_clear_service_error_and_keeps_the_result(
    screened: Screened,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    before = repr(screened.result)
    send = sr_sender(url, timeout=5, attempts=2, backoff_s=0.05)
    with pytest.raises(ServiceError, match="cannot reach the PACS") as err:
        send("0" * 32, screened.result, screened.files)
    assert err.value.status == 502 and url in str(err.value)
    assert "result is kept" in str(err.value)
    assert repr(screened.result) == before  # the result the engine stored is untouched


def test_rejected_stow_raises_a_service_error_naming_the_http_status(
    orthanc: Orthanc, screened: Screened
) -> None:
    sr = build_sr(screened.result, screened.originals())
    with pytest.raises(ServiceError, match=r"rejected the STOW-RS request \(HTTP 404") as err:
        stow(f"{orthanc.url}/no-such-dicomweb-root", [sr])
    assert err.value.status == 502


def test_studies_sent_over_http_get_their_sr_on_the_pacs_too(
    published: Published, orthanc: Orthanc, tmp_path: Path
) -> None:
    """With --pacs only the SCP's jobs were given the SR sender: a study uploaded to
    /v1/studies, /v1/screen or STOW-RS never had its SR sent, though every job's should."""
    with live_service(published, tmp_path / "state", pacs=orthanc.dicomweb_url,
                      explain=False) as live, live.client() as c:  # fmt: skip
        r = c.post("/v1/studies", files=form(live.study))
        assert r.status_code == 202, r.text
        job = wait(c, r.json()["job"])
        assert job["status"] == "done", job
        sync = c.post("/v1/screen", files=form(live.study))
        assert sync.status_code == 200, sync.text
        for job_id, result in ((job["id"], job["result"]), (sync.json()["job"], sync.json())):
            _, sr = until("the SR in the PACS",
                          lambda j=job_id: stored_instance(orthanc, sr_uids(j)[1]), 30)  # fmt: skip
            assert read_sr(sr)["decision"] == result["decision"]
