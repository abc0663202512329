"""The ingest pipeline end to end on real files: folder, zip, Orthanc, storescu -> listen."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select, text
from tests.ingest.sitecheck import assert_consistent, distinct_studies
from tests.ingest.usfiles import US_FILES
from tests.pacs import Orthanc, free_port

from echoscreen.dicom import PreprocessSpec
from echoscreen.ingest import DicomWebSource, FolderSource, ZipSource
from echoscreen.ingest.pipeline import IngestReport, ingest
from echoscreen.store.schema import Clip, DatasetStudy, Quarantine, Study
from echoscreen.store.site import Site

SPEC = PreprocessSpec(size=64, frames=16)
YBR = "examples_ybr_color.dcm"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with Site.init(tmp_path / "site") as s:
        yield s


@pytest.fixture
def us_folder(tmp_path: Path, us_files: dict[str, Path]) -> Path:
    """The real US files plus a text file that is not DICOM."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    for name, path in us_files.items():
        shutil.copyfile(path, folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _count(site: Site, table: type) -> int:
    with site.catalog.session() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


def _echoscreen(*args: str) -> list[str]:
    return [sys.executable, "-m", "echoscreen", *args]


def test_folder_ingest_joins_labels_quarantines_and_reingest_skips(
    site: Site, us_folder: Path, tmp_path: Path
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "study_instance_uid,patient_id,label,sex,age_years,weight_kg,height_cm\n"
        f"{US_FILES[YBR]},SOMEONE,definite,F,12.5,38,\n"
    )
    clips = tmp_path / "clips.csv"
    sop = "1.2.840.114340.3.8251017118051.3.20160503.121539.16117.4"
    clips.write_text(f"sop_instance_uid,view,doppler,findings\n{sop},A4C,1,thick AML\n")
    ticks: list[tuple[int, int | None]] = []
    report = ingest(FolderSource(us_folder), site, labels=labels, clips=clips, dataset="pilot",
                    spec=SPEC, progress=lambda d, t: ticks.append((d, t)))  # fmt: skip
    # ybr, palette (+ its RLE twin: duplicate SOP), JPEG lossless in; US1 study has no regions
    assert (report.ingested, report.skipped, report.clips) == (3, 0, 3)
    reasons = sorted(reason.split(":")[0] for _, reason in report.quarantined)
    assert reasons == [
        "DeidError",
        "DeidError",
        "duplicate SOPInstanceUID in the study (first copy kept)",
        "not a DICOM file (no 'DICM' marker after the preamble)",
    ]
    assert all(ref.startswith("q-") for ref, _ in report.quarantined)
    assert ticks[-1] == (4 + 1, 4 + 1) == (len(ticks) - 1, ticks[0][1])
    assert assert_consistent(site) == {"studies": 3, "clips": 3}
    with site.catalog.session() as s:
        labelled = s.scalars(select(Study).where(Study.label.is_not(None))).one()
        assert (labelled.label, labelled.sex, labelled.age_years) == ("definite", "F", 12.5)
        assert labelled.weight_kg == 38.0
        clip = s.scalars(select(Clip).where(Clip.view.is_not(None))).one()
        assert (clip.view, clip.doppler, clip.findings) == ("a4c", True, "thick AML")
        assert clip.study_id == labelled.id and clip.tensor_shape == "3x16x64x64"
        assert s.scalar(select(func.count()).select_from(DatasetStudy)) == 3
    objects = sorted(site.objects.ids())
    assert len(objects) == 6
    quarantined = _count(site, Quarantine)

    again = ingest(FolderSource(us_folder), site, labels=labels, clips=clips, dataset="pilot",
                   spec=SPEC)  # fmt: skip
    assert (again.ingested, again.skipped, again.clips) == (0, 3, 0)
    assert sorted(site.objects.ids()) == objects
    assert _count(site, Quarantine) == quarantined
    assert assert_consistent(site) == {"studies": 3, "clips": 3}


def test_zip_then_orthanc_give_the_same_pseudonymised_studies(
    site: Site, us_files: dict[str, Path], tmp_path: Path, orthanc: Orthanc
) -> None:
    names = [YBR, "examples_palette.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm"]
    archive = tmp_path / "studies.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            zf.write(us_files[name], f"export/{name}")
    first = ingest(ZipSource(archive), site, labels=None, clips=None, dataset=None, spec=SPEC)
    assert (first.ingested, first.clips, first.quarantined) == (3, 3, [])
    orthanc.clear()
    for name in names:
        orthanc.upload(us_files[name])
    web = DicomWebSource(orthanc.dicomweb_url)
    second = ingest(web, site, labels=None, clips=None, dataset=None, spec=SPEC)
    web.close()
    assert (second.ingested, second.skipped) == (0, 3)  # same pseudonyms across sources
    assert assert_consistent(site) == {"studies": 3, "clips": 3}


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_listen_ingests_studies_pushed_by_storescu(
    site: Site, us_files: dict[str, Path], need_binary: Callable[[str], str]
) -> None:
    storescu, echoscu = need_binary("storescu"), need_binary("echoscu")
    port = free_port()
    proc = subprocess.Popen(
        _echoscreen(
            "listen",
            "--site",
            str(site.path),
            "--port",
            str(port),
            "--size",
            "64",
            "--frames",
            "16",
            "--dataset",
            "pushed",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # as a shell without job control starts a background command: SIGINT ignored; the
        # listener must still stop on it (it once ignored Ctrl-C when started that way)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        echo = [echoscu, "-aec", "ECHOSCREEN", "127.0.0.1", str(port)]
        _wait_for(lambda: subprocess.run(echo, capture_output=True).returncode == 0, "listener")
        # one association per file, each proposing that file's compressed syntax
        for flag, name in (("-xy", YBR), ("-xs", "JPGLosslessP14SV1_1s_1f_8b.dcm")):
            push = subprocess.run(
                [storescu, flag, "-aec", "ECHOSCREEN", "127.0.0.1", str(port), str(us_files[name])],
                capture_output=True,
                text=True,
            )
            assert push.returncode == 0, push.stderr
        _wait_for(lambda: _count(site, Study) == 2, "two studies in the catalog")
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "study received: 1 ingested (1 clips)" in output
    assert assert_consistent(site) == {"studies": 2, "clips": 2}


def _children(pid: int) -> list[int]:
    """Pids of the live child processes of ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_kill_mid_ingest_leaves_catalog_and_store_consistent(
    site: Site, us_files: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    distinct_studies(us_files[YBR], folder, 12)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = _echoscreen("ingest", str(folder), "--site", str(site.path), "--size", "64",
                      "--frames", "16")  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_for(lambda: _count(site, Study) >= 1 or proc.poll() is not None, "first study")
        workers = _children(proc.pid)  # the default runs a pool of worker processes
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert workers or os.cpu_count() == 1
    # the workers die with their parent: none is left writing after the kill
    _wait_for(lambda: not any(_alive(pid) for pid in workers), "workers to exit")
    at_kill = assert_consistent(site)
    assert 1 <= at_kill["studies"] <= 12
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert assert_consistent(site) == {"studies": 12, "clips": 12}


def test_phantom_cohort_ingests_with_its_labels_and_views(site: Site, tmp_path: Path) -> None:
    from echoscreen.synth import CohortConfig, generate_cohort

    cohort = tmp_path / "cohort"
    made = generate_cohort(cohort, CohortConfig(studies=3, frames=16, size=(64, 64), workers=1))
    report = ingest(FolderSource(cohort), site, labels=cohort / "labels.csv",
                    clips=cohort / "clips.csv", dataset="phantom", spec=SPEC)  # fmt: skip
    assert (report.ingested, report.clips) == (made.studies, made.clips)
    # the cohort's labels.csv and clips.csv are side files: skipped, not quarantined
    assert report.quarantined == []
    summary = site.summary()
    assert summary["labels"] == made.per_label
    assert summary["views"] == {view: n for view, n in made.per_view.items() if n}
    with site.catalog.session() as s:
        doppler = s.scalar(select(func.count()).select_from(Clip).where(Clip.doppler.is_(True)))
        assert doppler == made.doppler_clips
        assert all(st.sex in ("M", "F") and st.age_years for st in s.scalars(select(Study)))
        # phantom clips are black outside the image sector: stored compressed, >= 1.5x
        forms = s.execute(select(Clip.tensor_codec, Clip.tensor_nbytes, Clip.tensor_shape)).all()
    assert {codec for codec, _, _ in forms} == {"zstd"}
    for _, nbytes, shape in forms:
        assert nbytes * 3 < 2 * math.prod(int(d) for d in shape.split("x"))
    assert assert_consistent(site) == {"studies": made.studies, "clips": made.clips}


def _rows(site: Site, table: type, skip: tuple[str, ...] = ()) -> list[tuple[object, ...]]:
    """The table's rows in insertion order, without the ``skip`` columns."""
    cols = [c for c in table.__table__.columns if c.name not in skip]  # type: ignore[attr-defined]
    with site.catalog.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(*cols).order_by(text("rowid")))]


def _ingest_cohort(cohort: Path, site: Site, workers: int) -> tuple[IngestReport, list[int]]:
    ticks: list[int] = []
    report = ingest(FolderSource(cohort), site, labels=cohort / "labels.csv",
                    clips=cohort / "clips.csv", dataset="phantom", spec=SPEC,
                    progress=lambda done, _: ticks.append(done), workers=workers)  # fmt: skip
    return report, ticks


def test_worker_pool_gives_the_same_catalog_and_objects_as_in_process(tmp_path: Path) -> None:
    from echoscreen.synth import CohortConfig, generate_cohort

    cohort = tmp_path / "cohort"
    made = generate_cohort(cohort, CohortConfig(studies=3, frames=16, size=(64, 64), workers=1))
    Site.init(tmp_path / "one").close()
    shutil.copytree(tmp_path / "one", tmp_path / "two")  # same keys, so the same object ids
    # a clip that fails inside a worker: burned-in annotation and no regions to keep
    bad = pydicom.dcmread(sorted(cohort.glob("*/*/IM0001.dcm"))[0])
    del bad.SequenceOfUltrasoundRegions
    bad.BurnedInAnnotation = "YES"
    bad.SOPInstanceUID = bad.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    bad.save_as(cohort / "no-regions.dcm")
    found = {}
    for name, workers in (("one", 1), ("two", 2)):
        with Site.open(tmp_path / name) as site:
            report, ticks = _ingest_cohort(cohort, site, workers)
            assert (report.ingested, report.clips) == (made.studies, made.clips)
            assert ticks == list(range(len(ticks))) and ticks[-1] >= made.studies
            found[name] = (
                _rows(site, Study, skip=("ingested_at",)),
                _rows(site, Clip),
                _rows(site, DatasetStudy),
                _rows(site, Quarantine, skip=("id", "at", "run_id")),
                sorted(site.objects.ids()),
                sorted(report.quarantined),
                ticks,
            )
            assert assert_consistent(site) == {"studies": made.studies, "clips": made.clips}
    assert found["one"] == found["two"]
    assert [why.split(":")[0] for _, why in found["one"][5]] == ["DeidError"]
    assert len(found["one"][4]) == 2 * made.clips
