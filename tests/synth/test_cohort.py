"""Phantom cohorts: determinism, valid DICOM, headers, regions, burned-in text, CSVs."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread

from echoscreen.errors import ConfigError
from echoscreen.synth import LABELS, VIEWS, CohortConfig, CohortSummary, generate_cohort


def tiny(studies: int, seed: int = 0, **kw: Any) -> CohortConfig:
    """Settings of a tiny cohort (16 frames x 64 x 64, one process)."""
    return CohortConfig(
        studies=studies, seed=seed, **{"frames": 16, "size": (64, 64), "workers": 1, **kw}
    )


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    made = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate_cohort(tmp_path / name, tiny(2, seed))
        made[name] = files(tmp_path / name)
    assert made["a"] == made["b"]
    assert len(made["a"]) > 10
    common = set(made["a"]) & set(made["c"])
    assert made["a"]["labels.csv"] != made["c"]["labels.csv"]
    assert all(made["a"][k] != made["c"][k] for k in common if k.endswith(".dcm"))


def test_pool_gives_the_same_files_as_one_process(tmp_path: Path) -> None:
    generate_cohort(tmp_path / "pool", tiny(2, 5, workers=2))
    generate_cohort(tmp_path / "one", tiny(2, 5))
    assert files(tmp_path / "pool") == files(tmp_path / "one")


def test_refuses_non_empty_folder_and_bad_config(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        generate_cohort(tmp_path, tiny(1))
    assert (tmp_path / "x.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="studies"):
        generate_cohort(tmp_path / "new", CohortConfig(studies=0))
    with pytest.raises(ConfigError, match="transfer syntax"):
        generate_cohort(tmp_path / "new", CohortConfig(studies=1, transfer_syntax="jpeg-ls"))
    with pytest.raises(ConfigError, match="seed must be >= 0"):  # numpy's seeds are non-negative
        generate_cohort(tmp_path / "new", CohortConfig(studies=1, seed=-1))
    assert not (tmp_path / "new").exists()


def test_summary_and_csvs_match_the_files(tiny_cohort: CohortSummary) -> None:
    root = tiny_cohort.out
    labels, clips = _rows(root / "labels.csv"), _rows(root / "clips.csv")
    assert len(labels) == tiny_cohort.studies == 3
    assert len(clips) == tiny_cohort.clips == sum(tiny_cohort.per_view.values())
    assert {r["label"] for r in labels} <= set(LABELS)
    assert {r["view"] for r in clips} <= set(VIEWS)
    studies = {r["study_instance_uid"] for r in labels}
    for r in clips:
        assert r["study_instance_uid"] in studies
        ds = dcmread(root / r["path"])
        assert ds.SOPInstanceUID == r["sop_instance_uid"]
        assert ds.StudyInstanceUID == r["study_instance_uid"]
        assert ds.SeriesInstanceUID == r["series_instance_uid"]
        assert (len(ds.SequenceOfUltrasoundRegions) == 2) == (r["doppler"] == "1")
        masks = np.load(root / r["mask"])
        assert masks["jet"].shape == masks["leaflets"].shape == (16, 64, 64)
        assert (masks["jet"].any()) <= (
            float(r["mr_jet_cm"]) + float(r["ar_jet_cm"]) > 0 or "jet" in r["findings"]
        )
    for s in labels:
        own = [r for r in clips if r["study_instance_uid"] == s["study_instance_uid"]]
        assert 8 <= len(own) <= 12
        for valve in ("mr", "ar"):
            lengths = [float(r[f"{valve}_jet_cm"]) for r in own]
            assert max(lengths) == pytest.approx(float(s[f"{valve}_jet_cm"]), abs=0.011)
            assert sum(x > 0 for x in lengths) == int(s[f"{valve}_views"])
        dopp = {(r["view"], "mr" if "mr_jet" in r["findings"] else "") for r in own}
        assert len({v for v, _ in dopp}) >= 5


def test_labels_follow_whf_rules_from_csv(tiny_cohort: CohortSummary) -> None:
    for s in _rows(tiny_cohort.out / "labels.csv"):
        mr = int(s["mr_views"]) >= 2 and float(s["mr_jet_cm"]) >= 2 and s["mr_pansystolic"] == "1"
        ar = int(s["ar_views"]) >= 2 and float(s["ar_jet_cm"]) >= 1 and s["ar_pandiastolic"] == "1"
        assert (s["pathological_mr"], s["pathological_ar"]) == (str(int(mr)), str(int(ar)))
        n_mv, n_av = int(s["n_mv_features"]), int(s["n_av_features"])
        assert (float(s["almv_thickness_mm"]) >= 3.0) == (s["almv_thickening"] == "1")
        if (mr and n_mv >= 2) or (ar and n_av >= 2) or ((mr or n_mv >= 2) and ar):
            expected = "definite"
        elif mr or ar or n_mv >= 2:
            expected = "borderline"
        else:
            expected = "normal"
        assert s["label"] == expected


def test_headers_identity_and_no_ground_truth(tiny_cohort: CohortSummary) -> None:
    root = tiny_cohort.out
    secrets = set(LABELS) | set(VIEWS) | {"regurgitation", "jet", "thickening"}
    for r in _rows(root / "clips.csv")[:6]:
        ds = dcmread(root / r["path"])
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1" and ds.Modality == "US"
        assert ds.BurnedInAnnotation == "YES"
        for keyword in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "InstitutionName",
            "ReferringPhysicianName",
            "OperatorsName",
            "AccessionNumber",
            "DeviceSerialNumber",
            "StationName",
            "StudyDate",
        ):
            assert str(ds[keyword].value), keyword
        assert ds.RequestAttributesSequence[0].AccessionNumber == ds.AccessionNumber
        assert ds.OtherPatientIDsSequence[0].PatientID
        private = [e for e in ds if e.tag.is_private and e.tag.element >= 0x1000]
        assert any(str(ds.PatientID) in str(e.value) for e in private)
        assert float(ds.FrameTime) == pytest.approx(1000.0 / ds.CineRate, rel=0.03)
        assert 60 <= ds.HeartRate <= 140
        words = (
            " ".join(
                str(e.value).lower()
                for e in ds.iterall()
                if e.VR in ("LO", "SH", "LT", "ST", "UT", "CS", "PN")
            )
            .replace("^", " ")
            .split()
        )
        assert not secrets & set(words)


def test_regions_and_burned_in_text_outside_them(tiny_cohort: CohortSummary) -> None:
    root = tiny_cohort.out
    for r in _rows(root / "clips.csv"):
        ds = dcmread(root / r["path"])
        px = ds.pixel_array
        tissue = ds.SequenceOfUltrasoundRegions[0]
        assert (tissue.RegionSpatialFormat, tissue.RegionDataType) == (1, 1)
        assert tissue.PhysicalUnitsXDirection == tissue.PhysicalUnitsYDirection == 3
        assert tissue.PhysicalDeltaX == pytest.approx(tissue.PhysicalDeltaY)
        x0, y0 = tissue.RegionLocationMinX0, tissue.RegionLocationMinY0
        x1, y1 = tissue.RegionLocationMaxX1, tissue.RegionLocationMaxY1
        depth_rows = y1 - y0
        assert 5.0 < depth_rows * tissue.PhysicalDeltaY < 20.0  # cm: a child's echo depth
        outside = np.ones(px.shape[1:3], bool)
        outside[y0 : y1 + 1, x0 : x1 + 1] = False
        assert px[:, :y0].max() > 100  # identity text above the sector
        assert px[:, y1 + 1 :].max() > 100  # ECG trace below it
        assert px[:, y0 : y1 + 1, x0 : x1 + 1].mean() > 5  # an image inside the region
        if r["doppler"] == "1":
            colour = ds.SequenceOfUltrasoundRegions[1]
            assert colour.RegionDataType == 2
            cx0, cy0 = colour.RegionLocationMinX0, colour.RegionLocationMinY0
            cx1, cy1 = colour.RegionLocationMaxX1, colour.RegionLocationMaxY1
            assert x0 <= cx0 < cx1 <= x1 and y0 <= cy0 < cy1 <= y1
            sector = px[:, y0 : y1 + 1, x0 : x1 + 1].astype(int)
            chroma = sector.max(axis=-1) - sector.min(axis=-1) > 60
            inside = np.zeros(px.shape[1:3], bool)
            inside[cy0 : cy1 + 1, cx0 : cx1 + 1] = True
            assert not (chroma & ~inside[y0 : y1 + 1, x0 : x1 + 1]).any()


def test_transfer_syntaxes_carry_the_same_pixels(tmp_path: Path) -> None:
    arrays = {}
    for ts in ("explicit-le", "rle", "jpeg-baseline"):
        generate_cohort(tmp_path / ts, tiny(1, 2, transfer_syntax=ts))
        first = _rows(tmp_path / ts / "clips.csv")[1]
        arrays[ts] = dcmread(tmp_path / ts / first["path"]).pixel_array.astype(int)
    np.testing.assert_array_equal(arrays["explicit-le"], arrays["rle"])
    assert np.abs(arrays["jpeg-baseline"] - arrays["explicit-le"]).mean() < 6.0
