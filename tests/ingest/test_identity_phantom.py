"""A phantom cohort's identity never reaches the site: objects, catalog, logs, output, names.

The phantom carries identity in its headers (names, IDs, dates, institution, physicians,
accession, device serial, station, a private block, nested sequences), in its folder
names (patient ID, study folder) and burned into its pixels (text above the sector, ECG
below it). The cohort is ingested twice into fresh sites: in process, with every log
record captured at DEBUG, and through the CLI, with its output captured. Then every
stored object is decrypted and searched (and the stored DICOM pixels decoded), every
catalog row dumped, and every file name under the sites listed.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from tests.identity import header_identity, leaks_in
from tests.ingest.sitecheck import assert_consistent

from echoscreen.deid import region_mask, regions_of
from echoscreen.dicom import PreprocessSpec
from echoscreen.ingest import open_source
from echoscreen.ingest.pipeline import ingest
from echoscreen.store import tensors
from echoscreen.store.schema import Base
from echoscreen.store.site import Site
from echoscreen.synth import CohortConfig, generate_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two phantom studies (JPEG baseline, as scanners send) and their identity."""
    out = tmp_path_factory.mktemp("cohort") / "incoming"
    cfg = CohortConfig(studies=2, frames=16, size=(96, 128), workers=1)
    summary = generate_cohort(out, cfg)
    identity: set[str] = set()
    files = sorted(out.rglob("*.dcm"))
    for path in files:
        ds = pydicom.dcmread(path)
        found = header_identity(ds)
        # the scan can fail: every value taken from a header is in that file's bytes
        direct = header_identity(ds, derived=False)
        assert len(direct) >= 20 and direct <= found
        assert len(leaks_in(path.read_bytes(), direct, "input")) == len(direct)
        identity |= found
        identity |= {p for p in path.relative_to(out).parent.parts if len(p) >= 4}
    identity |= plant_quarantined(files[0], out)
    return {"dir": out, "files": files, "identity": identity, "clips": summary.clips}


def plant_quarantined(template: Path, out: Path) -> set[str]:
    """Add two inputs that must be quarantined, under names that identify the patient.

    A phantom clip whose Sequence of Ultrasound Regions was removed (burned-in text that
    cannot be cleaned) and a junk file, both in a folder named after the patient, so
    their quarantine reasons and log lines pass near the identity.

    Returns:
        The new identifying values (folder and file names, the clip's new UIDs).
    """
    ds = pydicom.dcmread(template)
    surname, first = str(ds.PatientName).split("^")[:2]
    folder = out / f"{surname}_{first}"
    folder.mkdir()
    del ds.SequenceOfUltrasoundRegions
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(folder / f"{ds.PatientID}_{ds.AccessionNumber}.dcm", enforce_file_format=True)
    (folder / f"{surname}_notes.txt").write_text(f"{ds.PatientName} {ds.PatientID}")
    return {
        folder.name,
        f"{ds.PatientID}_{ds.AccessionNumber}",
        f"{surname}_notes",
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
    }


def test_the_identity_scan_finds_what_the_phantom_carries(cohort: dict[str, Any]) -> None:
    ident: set[str] = cohort["identity"]
    ds = pydicom.dcmread(cohort["files"][0])
    for value in (
        str(ds.PatientName),
        str(ds.PatientName).split("^")[0],
        ds.PatientID,
        ds.PatientBirthDate,
        ds.StudyDate,
        ds.InstitutionName,
        ds.AccessionNumber,
        ds.DeviceSerialNumber,
        ds.StationName,
        str(ds.ReferringPhysicianName),
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        ds.OtherPatientIDsSequence[0].PatientID,
        ds.RequestAttributesSequence[0].RequestedProcedureID,
        cohort["files"][0].parent.name,
        cohort["files"][0].parent.parent.name,
    ):
        assert value in ident, value
    private = [e for e in ds if e.tag.is_private and not e.tag.is_private_creator]
    assert len(private) >= 4 and all(str(e.value) in ident for e in private)
    labels = (cohort["dir"] / "labels.csv").read_bytes()
    assert leaks_in(labels, ident, "labels.csv")  # the CSVs name them too


def scan_site(site_path: Path, ident: set[str], expect_clips: int) -> list[str]:
    """Leaks anywhere in a site; also checks the stored DICOM pixels outside the regions."""
    leaks: list[str] = []
    with Site.open(site_path) as site:
        assert assert_consistent(site)["clips"] == expect_clips
        n_dicom = 0
        for oid in site.objects.ids():
            data = site.objects.get(oid)
            if data.startswith(tensors.ZSTD_MAGIC):  # a compressed tensor: scan both forms
                leaks += leaks_in(data, ident, f"object {oid}")
                data = bytes(tensors.npy_bytes(data))
            if data[128:132] == b"DICM":
                n_dicom += 1
                leaks += dicom_leaks(data, ident, f"object {oid}")
            elif data.startswith(b"\x93NUMPY"):
                arr = np.load(io.BytesIO(data), allow_pickle=False)
                head = data[: len(data) - arr.nbytes]
                leaks += leaks_in(head, ident, f"tensor header {oid}")
                leaks += leaks_in(data, ident, f"tensor {oid}", pixels=True)
            else:
                leaks += leaks_in(data, ident, f"object {oid}")
        assert n_dicom == expect_clips
        rows = []
        with site.catalog.engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                rows += [f"{table.name}: {tuple(r)!r}" for r in conn.execute(table.select())]
        catalog = "\n".join(rows)
        assert "borderline" in catalog or "definite" in catalog  # labels joined
        assert catalog.count("quarantine: ") == 2  # with their reasons
        leaks += leaks_in(catalog.encode(), ident, "catalog rows")
    for path in site_path.rglob("*"):
        rel = str(path.relative_to(site_path))
        leaks += leaks_in(rel.encode(), ident, "file name")
        if path.is_file():
            leaks += leaks_in(path.read_bytes(), ident, f"raw file {rel}", pixels=True)
    return leaks


def dicom_leaks(data: bytes, ident: set[str], where: str) -> list[str]:
    """Leaks in a decrypted DICOM object; asserts its pixels are zero outside the regions."""
    ds = pydicom.dcmread(io.BytesIO(data))
    arr = ds.pixel_array
    arr = arr.reshape(int(ds.get("NumberOfFrames", 1) or 1), ds.Rows, ds.Columns, -1)
    regions = regions_of(ds)
    assert regions, where
    mask = region_mask((ds.Rows, ds.Columns), regions)
    assert not arr[:, ~mask].any(), f"pixels outside the regions in {where}"
    assert arr[:, mask].any(), where
    del ds.PixelData
    head = io.BytesIO()
    ds.save_as(head, enforce_file_format=True)
    return leaks_in(head.getvalue(), ident, f"{where} header") + leaks_in(
        data, ident, where, pixels=True
    )


def test_no_identity_in_objects_catalog_logs_or_names(
    cohort: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ident: set[str] = cohort["identity"]
    src: Path = cohort["dir"]
    site_path = tmp_path / "site"
    caplog.set_level(logging.DEBUG)
    with Site.init(site_path) as site:
        report = ingest(open_source(str(src)), site, labels=src / "labels.csv",
                        clips=src / "clips.csv", dataset="phantom",
                        spec=PreprocessSpec(size=64, frames=16))  # fmt: skip
    assert (report.ingested, report.clips, len(report.quarantined)) == (2, cohort["clips"], 2)
    leaks = scan_site(site_path, ident, cohort["clips"])
    assert len(caplog.records) >= 2  # the run did log (the quarantined inputs)
    log_text = caplog.text + "\n".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    )
    leaks += leaks_in(log_text.encode(), ident, "log records")
    leaks += leaks_in(repr(report).encode(), ident, "ingest report")
    assert leaks == []


def test_no_identity_through_the_cli(cohort: dict[str, Any], tmp_path: Path) -> None:
    ident: set[str] = cohort["identity"]
    src: Path = cohort["dir"]
    site_path = tmp_path / "cli-site"
    Site.init(site_path).close()
    run = subprocess.run(
        [sys.executable, "-m", "echoscreen", "ingest", str(src), "--site", str(site_path),
         "--labels", str(src / "labels.csv"), "--clips", str(src / "clips.csv"),
         "--size", "64", "--frames", "16", "--dataset", "phantom"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert str(cohort["clips"]) in run.stdout  # the summary was printed
    leaks = leaks_in((run.stdout + run.stderr).encode(), ident, "command output")
    leaks += scan_site(site_path, ident, cohort["clips"])
    assert leaks == []
