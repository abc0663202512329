"""Identity and DICOM headers of phantom studies: what a real scanner would put there.

Every phantom file carries the identifying data that de-identification must
remove (names, IDs, dates, institution, physicians, device serials, private tags,
nested sequences) and a correct Sequence of Ultrasound Regions. Ground truth
(view, findings, label) is never written to a header.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, generate_uid

from echoscreen.synth.render import ScanGeometry

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"

_FIRST_F = ("AMA", "GRACE", "MERE", "LOSA", "AROHA", "FATIMA", "ESTHER", "NALEDI", "PRIYA", "SINA")
_FIRST_M = ("KOFI", "TAMATI", "JOSEPH", "SIONE", "ABEL", "RAVI", "MOSES", "TANE", "ISAAC", "LEVI")
_LAST = (
    "MENSAH",
    "NGATA",
    "OKAFOR",
    "TUILAGI",
    "BANDA",
    "SHARMA",
    "WAIRIMU",
    "FALEOLO",
    "MWANGI",
    "PAEWAI",
    "DLAMINI",
    "KAUFANA",
    "ODHIAMBO",
    "TAUFA",
)
_INSTITUTIONS = (
    ("NORTHSHORE CHILDRENS HOSPITAL", "12 Harbour Rd, Port Ellis"),
    ("ST BRIGID REGIONAL MEDICAL CTR", "4 Mission Hill, Kaliro"),
    ("LAKESIDE DISTRICT HEALTH", "88 Lake Drive, Wanaka Bay"),
)


@dataclass(frozen=True)
class Scanner:
    """A simulated ultrasound system: its identity and its typical settings."""

    manufacturer: str
    model: str
    software: str
    size: tuple[int, int]
    fps: tuple[float, float]
    sector_deg: tuple[float, float]
    gain: float
    tint: tuple[float, float, float]
    probe: str
    probe_mhz: float


SCANNERS: tuple[Scanner, ...] = (
    Scanner(
        "Vivantis Medical",
        "VS-7 Pocket",
        "2.4.1",
        (240, 320),
        (25.0, 35.0),
        (70, 80),
        1.05,
        (1.0, 1.0, 1.0),
        "P4-2",
        3.0,
    ),
    Scanner(
        "Sonora Systems",
        "Cardia 5",
        "11.0.3",
        (300, 400),
        (40.0, 60.0),
        (75, 90),
        0.95,
        (1.0, 0.96, 0.88),
        "S5-1",
        3.5,
    ),
    Scanner(
        "Meridian Ultrasound",
        "M-Echo 2",
        "5.2",
        (360, 480),
        (30.0, 50.0),
        (60, 75),
        1.0,
        (0.95, 0.97, 1.0),
        "3Sc",
        2.5,
    ),
    Scanner(
        "Kestrel Imaging",
        "KX-30",
        "1.9.7",
        (288, 384),
        (25.0, 45.0),
        (70, 85),
        1.1,
        (1.0, 0.98, 0.94),
        "PA230",
        3.0,
    ),
)


@dataclass(frozen=True)
class Identity:
    """Who, where and when of one study (all of it identifying)."""

    patient_name: str
    patient_id: str
    other_id: str
    birth_date: str
    sex: str
    age_years: int
    weight_kg: float
    height_cm: float
    institution: str
    address: str
    referring: str
    performing: str
    operator: str
    accession: str
    study_date: str
    study_time: str
    station: str
    serial: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str


def _pick(rng: np.random.Generator, items: tuple[str, ...]) -> str:
    return items[int(rng.integers(len(items)))]


def _person(rng: np.random.Generator) -> str:
    first = _pick(rng, _FIRST_F + _FIRST_M)
    return f"{_pick(rng, _LAST)}^{first}^^DR"


def make_identity(rng: np.random.Generator, seed: int, index: int, scanner: Scanner) -> Identity:
    """A plausible child (5-18 years) with a study at one of a few institutions."""
    sex = "F" if rng.random() < 0.5 else "M"
    age = int(rng.integers(5, 19))
    height = 110.0 + 5.8 * (age - 5) + float(rng.normal(0, 6))
    weight = 18.0 * (height / 110.0) ** 2.6 * float(rng.uniform(0.85, 1.2))
    study = dt.date(2019, 1, 1) + dt.timedelta(days=int(rng.integers(0, 6 * 365)))
    birth = study - dt.timedelta(days=int(age * 365.25 + rng.integers(0, 360)))
    secs = int(rng.integers(8 * 3600, 17 * 3600))
    inst, addr = _INSTITUTIONS[int(rng.integers(len(_INSTITUTIONS)))]
    first = _pick(rng, _FIRST_F if sex == "F" else _FIRST_M)
    uid = [str(seed), str(index)]
    return Identity(
        patient_name=f"{_pick(rng, _LAST)}^{first}",
        patient_id=f"P{seed % 1000:03d}{index:05d}",
        other_id=f"NHI{int(rng.integers(100000, 999999))}",
        birth_date=birth.strftime("%Y%m%d"),
        sex=sex,
        age_years=age,
        weight_kg=round(weight, 1),
        height_cm=round(height, 1),
        institution=inst,
        address=addr,
        referring=_person(rng),
        performing=_person(rng),
        operator=_person(rng),
        accession=f"ACC{int(rng.integers(10**7, 10**8))}",
        study_date=study.strftime("%Y%m%d"),
        study_time=f"{secs // 3600:02d}{secs // 60 % 60:02d}{secs % 60:02d}",
        station=f"ECHO{int(rng.integers(1, 9))}-{inst.split()[0][:5]}",
        serial=f"SN{int(rng.integers(10**6, 10**7))}",
        study_uid=generate_uid(entropy_srcs=[*uid, "study"]),
        series_uid=generate_uid(entropy_srcs=[*uid, "series"]),
        frame_of_reference_uid=generate_uid(entropy_srcs=[*uid, "for"]),
    )


def _region(
    x0: int, y0: int, x1: int, y1: int, g: ScanGeometry, data_type: int, mhz: float
) -> Dataset:
    r = Dataset()
    r.RegionSpatialFormat = 1
    r.RegionDataType = data_type
    r.RegionFlags = 0
    r.RegionLocationMinX0, r.RegionLocationMinY0 = x0, y0
    r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x1, y1
    r.PhysicalUnitsXDirection = 3
    r.PhysicalUnitsYDirection = 3
    r.PhysicalDeltaX = g.spacing_cm
    r.PhysicalDeltaY = g.spacing_cm
    r.ReferencePixelX0 = round(g.apex_x) - x0
    r.ReferencePixelY0 = round(g.apex_y) - y0
    r.ReferencePixelPhysicalValueX = 0.0
    r.ReferencePixelPhysicalValueY = 0.0
    r.TransducerFrequency = int(mhz * 1000)
    return r


def _private(ds: Dataset, ident: Identity, scanner: Scanner) -> None:
    block = ds.private_block(0x0009, f"{scanner.manufacturer.upper()} PRIVATE", create=True)
    block.add_new(0x01, "LO", ident.patient_name.replace("^", " "))
    block.add_new(0x02, "LO", ident.patient_id)
    block.add_new(0x03, "LO", ident.operator.split("^")[0])
    block.add_new(0x04, "DA", ident.study_date)
    block.add_new(0x05, "LO", ident.institution)


def _sequences(ds: Dataset, ident: Identity) -> None:
    req = Dataset()
    req.AccessionNumber = ident.accession
    req.RequestedProcedureID = f"RP{ident.accession[3:]}"
    req.ScheduledProcedureStepID = f"SPS{ident.accession[3:]}"
    req.RequestedProcedureDescription = f"Echo screening {ident.patient_name.split('^')[0]}"
    ds.RequestAttributesSequence = Sequence([req])
    other = Dataset()
    other.PatientID = ident.other_id
    other.IssuerOfPatientID = "NATIONAL HEALTH INDEX"
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])


def _add_seconds(hhmmss: str, seconds: int) -> str:
    t = int(hhmmss[:2]) * 3600 + int(hhmmss[2:4]) * 60 + int(hhmmss[4:6]) + seconds
    t = min(t, 86399)
    return f"{t // 3600:02d}{t // 60 % 60:02d}{t % 60:02d}"


def _patient_study(ds: Dataset, ident: Identity, scanner: Scanner) -> None:
    ds.PatientName = ident.patient_name
    ds.PatientID = ident.patient_id
    ds.IssuerOfPatientID = ident.institution[:64]
    ds.PatientBirthDate = ident.birth_date
    ds.PatientSex = ident.sex
    ds.PatientAge = f"{ident.age_years:03d}Y"
    ds.PatientWeight = f"{ident.weight_kg:.1f}"
    ds.PatientSize = f"{ident.height_cm / 100:.2f}"
    ds.StudyInstanceUID = ident.study_uid
    ds.SeriesInstanceUID = ident.series_uid
    ds.FrameOfReferenceUID = ident.frame_of_reference_uid
    ds.StudyDate = ds.SeriesDate = ident.study_date
    ds.StudyTime = ds.SeriesTime = ident.study_time
    ds.AccessionNumber = ident.accession
    ds.StudyID = ident.accession[-6:]
    ds.StudyDescription = "PAEDIATRIC ECHO SCREENING"
    ds.SeriesDescription = "ECHO"
    ds.ProtocolName = "RHD SCREEN"
    ds.SeriesNumber = 1
    ds.Modality = "US"
    ds.InstitutionName = ident.institution
    ds.InstitutionAddress = ident.address
    ds.InstitutionalDepartmentName = "PAEDIATRIC CARDIOLOGY"
    ds.ReferringPhysicianName = ident.referring
    ds.PerformingPhysicianName = ident.performing
    ds.NameOfPhysiciansReadingStudy = ident.referring
    ds.OperatorsName = ident.operator
    ds.StationName = ident.station[:16]
    ds.Manufacturer = scanner.manufacturer
    ds.ManufacturerModelName = scanner.model
    ds.DeviceSerialNumber = ident.serial
    ds.SoftwareVersions = scanner.software
    ds.TransducerData = [scanner.probe, f"{scanner.probe_mhz:.1f}MHz"]


@dataclass(frozen=True)
class ClipHeader:
    """Per-clip header values: instance, timing and the colour box (pixels) if any."""

    number: int
    sop_uid: str
    fps: float
    heart_rate: float
    colour_box: tuple[int, int, int, int] | None
    probe_mhz: float


def build_dataset(ident: Identity, scanner: Scanner, g: ScanGeometry, clip: ClipHeader) -> Dataset:
    """A US Multi-frame Image dataset without pixel data (``set_pixel_data`` adds it)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(US_MULTIFRAME)
    meta.MediaStorageSOPInstanceUID = UID(clip.sop_uid)
    meta.ImplementationVersionName = "ECHOSCREEN_SYN"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "CARDIAC", "0011" if clip.colour_box else "0001"]
    ds.SOPClassUID = US_MULTIFRAME
    ds.SOPInstanceUID = clip.sop_uid
    _patient_study(ds, ident, scanner)
    when = _add_seconds(ident.study_time, 35 * clip.number)
    ds.ContentDate = ds.AcquisitionDate = ident.study_date
    ds.ContentTime = ds.AcquisitionTime = when
    ds.AcquisitionDateTime = f"{ident.study_date}{when}"
    ds.InstanceNumber = clip.number
    ds.BurnedInAnnotation = "YES"
    ds.FrameTime = f"{1000.0 / clip.fps:.3f}"
    ds.CineRate = round(clip.fps)
    ds.RecommendedDisplayFrameRate = round(clip.fps)
    ds.HeartRate = round(clip.heart_rate)
    ds.EffectiveDuration = f"{1.0 / clip.fps:.4f}"
    regions = [_region(g.left, g.top, g.right, g.bottom, g, 1, clip.probe_mhz)]
    if clip.colour_box is not None:
        x0, y0, x1, y1 = clip.colour_box
        regions.append(_region(x0, y0, x1, y1, g, 2, clip.probe_mhz))
    ds.SequenceOfUltrasoundRegions = Sequence(regions)
    _private(ds, ident, scanner)
    _sequences(ds, ident)
    return ds


def box_pixels(
    g: ScanGeometry, box: tuple[float, float, float, float]
) -> tuple[int, int, int, int]:
    """Pixel bounding box ``(x0, y0, x1, y1)`` of a polar colour box (depths cm, angles rad)."""
    d0, d1, a0, a1 = box
    angles = np.linspace(a0, a1, 16)
    pts = [
        (g.apex_x + d / g.spacing_cm * math.sin(a), g.apex_y + d / g.spacing_cm * math.cos(a))
        for d in (d0, d1)
        for a in angles
    ]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (  # one pixel of margin for the interpolation of the scan conversion
        max(g.left, math.floor(min(xs)) - 1),
        max(g.top, math.floor(min(ys)) - 1),
        min(g.right, math.ceil(max(xs)) + 1),
        min(g.bottom, math.ceil(max(ys)) + 1),
    )
