"""StoreSCP with dcmtk's storescu/echoscu as the real clients."""

from __future__ import annotations

import io
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.ingest.usfiles import differences, expected_groups

from echoscreen.errors import ConfigError
from echoscreen.ingest import StoreSCP, StudyBatch


class Received:
    """Collects delivered studies; ``wait`` blocks until ``n`` have arrived."""

    def __init__(self) -> None:
        self.batches: list[StudyBatch] = []
        self._cond = threading.Condition()

    def __call__(self, batch: StudyBatch) -> None:
        with self._cond:
            self.batches.append(batch)
            self._cond.notify_all()

    def wait(self, n: int, timeout: float = 30.0) -> list[StudyBatch]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.batches) < n and time.monotonic() < deadline:
                self._cond.wait(0.1)
            return list(self.batches)


@pytest.fixture
def scp() -> Iterator[tuple[StoreSCP, Received]]:
    received = Received()
    server = StoreSCP(received, port=0)
    server.start()
    try:
        yield server, received
    finally:
        server.stop()


#: a storescu profile proposing what echo scanners send: each US SOP class with JPEG
#: baseline, JPEG lossless, JPEG 2000 lossless, RLE and uncompressed, in separate contexts
STORESCU_CFG = """
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LittleEndianExplicit
TransferSyntax2 = LittleEndianImplicit
[JPEGBaseline]
TransferSyntax1 = JPEGBaseline
[JPEGLossless]
TransferSyntax1 = JPEGLossless:Non-hierarchical-1stOrderPrediction
[J2KLossless]
TransferSyntax1 = JPEG2000LosslessOnly
[RLE]
TransferSyntax1 = RLELossless
[[PresentationContexts]]
[Echo]
PresentationContext1 = UltrasoundImageStorage\\JPEGBaseline
PresentationContext2 = UltrasoundImageStorage\\JPEGLossless
PresentationContext3 = UltrasoundImageStorage\\J2KLossless
PresentationContext4 = UltrasoundImageStorage\\RLE
PresentationContext5 = UltrasoundImageStorage\\Uncompressed
PresentationContext6 = UltrasoundMultiframeImageStorage\\JPEGBaseline
PresentationContext7 = UltrasoundMultiframeImageStorage\\Uncompressed
[[Profiles]]
[Echo]
PresentationContexts = Echo
"""


@pytest.fixture
def storescu(tmp_path: Path, need_binary: Callable[[str], str]) -> list[str]:
    """storescu command prefix with the echo profile (no transcoding of compressed files)."""
    cfg = tmp_path / "storescu.cfg"
    cfg.write_text(STORESCU_CFG)
    return [need_binary("storescu"), "-xf", str(cfg), "Echo"]


def _sop(data: bytes) -> str:
    import pydicom

    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_storescu_pushes_every_transfer_syntax_and_studies_arrive_intact(
    scp: tuple[StoreSCP, Received],
    us_files: dict[str, Path],
    storescu: list[str],
) -> None:
    server, received = scp
    names = sorted(us_files)
    cmd = [*storescu, "-aet", "CART7", "-aec", "ECHOSCREEN", "127.0.0.1", str(server.port)]
    done = _run(cmd + [str(us_files[n]) for n in names])
    assert done.returncode == 0, done.stderr
    groups = expected_groups(names)
    batches = received.wait(len(groups))
    assert len(batches) == len(groups)
    sop_of = {n: _sop(us_files[n].read_bytes()) for n in names}
    got: dict[str, set[str]] = {}
    for batch in batches:
        assert not batch.unreadable
        assert batch.sender == "CART7"  # the calling AE title of the association
        for inst in batch.instances:
            assert inst.origin.startswith("dicom://127.0.0.1")
            # the same SOP instance can come twice (RLE and palette copies): match both ways
            matches = [
                n
                for n in names
                if sop_of[n] == _sop(inst.data)
                and not differences(us_files[n].read_bytes(), inst.data)
            ]
            assert len(matches) == 1, f"{inst.origin} matches {matches}"
            got.setdefault(batch.key, set()).add(matches[0])
    assert got == groups


def test_one_association_per_file_delivers_one_study_each(
    scp: tuple[StoreSCP, Received],
    us_files: dict[str, Path],
    storescu: list[str],
) -> None:
    server, received = scp
    files = [us_files["US1_UNCR.dcm"], us_files["examples_jpeg2k.dcm"]]  # the same study
    for path in files:
        done = _run([*storescu, "-aec", "ECHOSCREEN", "127.0.0.1", str(server.port), str(path)])
        assert done.returncode == 0, done.stderr
    batches = received.wait(2)
    assert [len(b.instances) for b in batches] == [1, 1]
    assert batches[0].key == batches[1].key


def test_echoscu_verifies_and_a_wrong_called_ae_is_rejected(
    scp: tuple[StoreSCP, Received],
    us_files: dict[str, Path],
    need_binary: Callable[[str], str],
    storescu: list[str],
) -> None:
    server, received = scp
    ok = _run([need_binary("echoscu"), "-aec", "ECHOSCREEN", "127.0.0.1", str(server.port)])
    assert ok.returncode == 0, ok.stderr
    port = str(server.port)
    wrong = _run(
        [*storescu, "-aec", "SOMEONEELSE", "127.0.0.1", port, str(us_files["US1_UNCR.dcm"])]
    )
    assert wrong.returncode != 0
    assert "Called AE Title Not Recognized" in wrong.stderr + wrong.stdout
    server.stop()  # flushes everything: nothing was stored by either association
    assert received.batches == []


def test_a_port_in_use_is_a_clear_error(scp: tuple[StoreSCP, Received]) -> None:
    server, _ = scp
    other = StoreSCP(lambda batch: None, port=server.port)
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{server.port}: the port "
                       "is in use"):  # fmt: skip
        other.start()
    other.stop()
