"""Identity planted in a real ultrasound file never reaches the site in any readable form."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from tests.ingest.sitecheck import assert_consistent, dump_catalog

from echoscreen.store import tensors
from echoscreen.store.site import Site

STUDY_UID = "1.2.826.0.1.3680043.9.7777.101"
SERIES_UID = "1.2.826.0.1.3680043.9.7777.202"
SOP_UID = "1.2.826.0.1.3680043.9.7777.303"

#: every value planted; none may be found, in any case, anywhere in the site
PLANTED = [
    "Zzplant^Secretname",
    "Secretname",
    "ZZPID4711",
    "19870605",
    "19990317",
    "Zzplant Memorial Hospital",
    "ZZ Plant Street 9",
    "Drzz^Plantdoc",
    "Plantdoc",
    "Opzz^Planter",
    "ZZACC998877",
    "ZZSTUDY55",
    "ZZOTHERID77",
    "ZZISSUER",
    "ZZREQ123",
    "ZZSPS456",
    "ZZPRIVATECREATOR",
    "ZZPRIVATEVALUE",
    "ZZNESTEDPRIVATE",
    "ZZDIR_Secretname",
    "ZZJUNK_Secretname",
    STUDY_UID,
    SERIES_UID,
    SOP_UID,
]


def _plant(source: Path, target: Path) -> None:
    ds = pydicom.dcmread(source)
    ds.PatientName = "Zzplant^Secretname"
    ds.PatientID = "ZZPID4711"
    ds.PatientBirthDate = "19870605"
    for keyword in ("StudyDate", "SeriesDate", "ContentDate", "AcquisitionDate"):
        setattr(ds, keyword, "19990317")
    ds.InstitutionName = "Zzplant Memorial Hospital"
    ds.InstitutionAddress = "ZZ Plant Street 9"
    ds.ReferringPhysicianName = "Drzz^Plantdoc"
    ds.OperatorsName = "Opzz^Planter"
    ds.AccessionNumber = "ZZACC998877"
    ds.StudyID = "ZZSTUDY55"
    other = Dataset()
    other.PatientID = "ZZOTHERID77"
    other.IssuerOfPatientID = "ZZISSUER"
    ds.OtherPatientIDsSequence = Sequence([other])
    request = Dataset()
    request.RequestedProcedureID = "ZZREQ123"
    request.ScheduledProcedureStepID = "ZZSPS456"
    nested = request.private_block(0x0029, "ZZPRIVATECREATOR", create=True)
    nested.add_new(0x01, "LO", "ZZNESTEDPRIVATE")
    ds.RequestAttributesSequence = Sequence([request])
    block = ds.private_block(0x0009, "ZZPRIVATECREATOR", create=True)
    block.add_new(0x01, "LO", "ZZPRIVATEVALUE")
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = STUDY_UID, SERIES_UID, SOP_UID
    ds.file_meta.MediaStorageSOPInstanceUID = SOP_UID
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target, enforce_file_format=True)


def _found(haystack: bytes, where: str) -> list[str]:
    low = haystack.lower()
    return [f"{value!r} in {where}" for value in PLANTED if value.lower().encode() in low]


def test_planted_identity_is_absent_from_objects_catalog_logs_and_names(
    tmp_path: Path, us_files: dict[str, Path]
) -> None:
    incoming = tmp_path / "incoming"
    planted = incoming / "ZZDIR_Secretname" / "IM0001"
    _plant(us_files["examples_ybr_color.dcm"], planted)
    # the scan does find what was planted (all but the two names that live outside the file)
    assert len(_found(planted.read_bytes(), "input")) == len(PLANTED) - 2
    (incoming / "ZZJUNK_Secretname.txt").write_text("Zzplant^Secretname ZZPID4711")
    labels = tmp_path / "labels.csv"
    labels.write_text(
        f"study_instance_uid,patient_id,label,sex,age_years\n{STUDY_UID},ZZPID4711,borderline,M,9\n"
    )
    site_path = tmp_path / "site"
    Site.init(site_path).close()
    run = subprocess.run(
        [sys.executable, "-m", "echoscreen", "ingest", str(incoming), "--site", str(site_path),
         "--labels", str(labels), "--size", "64", "--frames", "16", "--dataset", "audit"],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    leaks: list[str] = []
    with Site.open(site_path) as site:
        assert assert_consistent(site) == {"studies": 1, "clips": 1}
        assert site.summary()["quarantined"] == 1  # the junk file, under a keyed reference
        for oid in site.objects.ids():
            data = site.objects.get(oid)
            leaks += _found(data, f"object {oid}")
            if data.startswith(tensors.ZSTD_MAGIC):  # a compressed tensor: its .npy too
                leaks += _found(bytes(tensors.npy_bytes(data)), f"tensor {oid}")
        catalog = dump_catalog(site)
        assert "borderline" in catalog  # the label was joined by the original UID
        leaks += _found(catalog.encode(), "catalog rows")
    leaks += _found((run.stdout + run.stderr).encode(), "command output")
    for path in site_path.rglob("*"):
        leaks += _found(str(path.relative_to(site_path)).encode(), "site file names")
        if path.is_file():
            leaks += _found(path.read_bytes(), f"raw file {path.relative_to(site_path)}")
    assert leaks == []
