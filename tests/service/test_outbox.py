"""SRs the PACS could not take are kept in memory and sent again: a real Orthanc, stopped
and started again on the same ports and storage, and the real service on loopback.

Before the outbox an SR that failed its tries was dropped: with the PACS down for a
minute, every study screened in that minute never got its SR.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import need
from tests.pacs import (
    ORTHANC_BINARIES,
    Orthanc,
    _config,
    _dicomweb_plugin,
    _first_existing,
    _wait_ready,
    free_port,
)
from tests.registry.pkgfix import Published
from tests.service.live import live_service
from tests.service.live import until as _until
from tests.service.screened import stored_instance

from echoscreen.service.config import ServiceConfig
from echoscreen.service.engine import ScreeningEngine
from echoscreen.service.outbox import SrOutbox
from echoscreen.service.pacs import sr_sender
from echoscreen.service.sr import read_sr, sr_uids


class Pacs:
    """An Orthanc of its own that a test stops and starts (same ports, same storage)."""

    def __init__(self, tmp: Path) -> None:
        binary = _first_existing(ORTHANC_BINARIES) or shutil.which("Orthanc")
        need(binary is not None, "Orthanc (Debian package orthanc)")
        plugin = _dicomweb_plugin()
        need(plugin is not None, "Orthanc DICOMweb plugin (Debian package orthanc-dicomweb)")
        assert binary is not None and plugin is not None
        self.binary, self.tmp = binary, tmp
        tmp.mkdir(parents=True, exist_ok=True)
        http, dicom = free_port(), free_port()
        self.config = _config(tmp, http, dicom, plugin)
        url = f"http://127.0.0.1:{http}"
        self.orthanc = Orthanc(url, f"{url}/dicom-web", dicom, "TESTPACS", tmp / "orthanc.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.orthanc.log.open("ab") as sink:
            self.proc = subprocess.Popen([self.binary, str(self.config)], stdout=sink,
                                         stderr=subprocess.STDOUT, cwd=self.tmp)  # fmt: skip
        _wait_ready(self.proc, self.orthanc.url, self.orthanc.log)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Pacs]:
    p = Pacs(tmp_path / "orthanc")
    try:
        yield p
    finally:
        p.stop()


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def _push(storescu: str, port: int, folder: Path) -> None:
    done = subprocess.run([storescu, "-xy", "-aet", "CART1", "-aec", "ECHOSCREEN", "127.0.0.1",
                           str(port), *map(str, sorted(folder.rglob("*.dcm")))],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


def _files(folder: Path) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(folder.rglob("*.dcm"))]


def test_srs_made_while_the_pacs_is_down_arrive_when_it_is_back(
    published: Published, pacs: Pacs, tmp_path: Path, need_binary: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The real service (SCP in, --pacs out) with an outbox of one SR: two studies pushed
    while the PACS is down, the first SR dropped (logged, counted), the second sent once
    the PACS is back."""
    caplog.set_level(logging.INFO, logger="echoscreen.service.outbox")
    storescu = need_binary("storescu")
    folders = published.train_study_folders()[:2]
    with live_service(published, tmp_path / "state", dicom_port=0, explain=False,
                      pacs=pacs.orthanc.dicomweb_url, sr_outbox_size=1,
                      sr_retry_s=0.5) as live:  # fmt: skip
        scp = live.service.scp
        for k, folder in enumerate(folders):
            _push(storescu, scp.port, folder)
            _until(f"study {k} submitted", lambda k=k: len(scp.submitted) > k)
        first, second = scp.submitted
        _until("both SRs tried", lambda: _metric(live.url, "echoscreen_sr_dropped_total") == 1)
        assert _metric(live.url, "echoscreen_sr_outbox") == 1
        assert [r for r in caplog.records if f"job {first}: SR dropped" in r.getMessage()]
        pacs.start()
        _, sr = _until("the kept SR in the PACS",
                       lambda: stored_instance(pacs.orthanc, sr_uids(second)[1]))  # fmt: skip
        job = live.service.engine.job(second)
        assert job is not None and read_sr(sr)["decision"] == job["result"]["decision"]
        assert read_sr(sr)["p_screen"] == pytest.approx(job["result"]["p_screen"])
        _until("the outbox empty", lambda: _metric(live.url, "echoscreen_sr_outbox") == 0)
    assert stored_instance(pacs.orthanc, sr_uids(first)[1]) is None  # dropped: never sent


def test_the_next_sr_the_pacs_takes_sends_the_waiting_ones_first(
    published: Published, pacs: Pacs, tmp_path: Path,
) -> None:  # fmt: skip
    """No resend thread here: the SR kept while the PACS was down goes right after the
    next SR the PACS stores."""
    cfg = ServiceConfig(registry=published.registry, model=published.ref,
                        state_dir=tmp_path / "state", backend="onnx", cpu_workers=1,
                        job_threads=1, explain=False).validate()  # fmt: skip
    engine = ScreeningEngine(cfg)
    engine.start()
    outbox = SrOutbox(pacs.orthanc.dicomweb_url, capacity=4, timeout=5, metrics=engine.metrics)
    send = sr_sender(pacs.orthanc.dicomweb_url, timeout=5, attempts=1, outbox=outbox)
    folders = published.train_study_folders()[:2]
    try:
        kept = engine.submit(_files(folders[0]), client="t", on_done=send)
        _until("the SR kept", lambda: len(outbox) == 1)
        assert engine.metrics.sample("echoscreen_sr_outbox") == 1
        pacs.start()
        later = engine.submit(_files(folders[1]), client="t", on_done=send)
        for job in (later, kept):
            _until(f"the SR of {job} in the PACS",
                   lambda j=job: stored_instance(pacs.orthanc, sr_uids(j)[1]))  # fmt: skip
        assert len(outbox) == 0 and engine.metrics.sample("echoscreen_sr_outbox") == 0
    finally:
        outbox.close()
        engine.close(drain=True, timeout=60)
