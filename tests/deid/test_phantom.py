"""Phantom clips lose every identifying header value and every burned-in pixel.

The phantom writes what a scanner writes: identity in the header (names, IDs, dates,
institution, physicians, accession, device serial, station, a private block, nested
sequences) and burned into the pixels (name and ID top left, institution, date and
time top right, an ECG trace below the sector). B-mode and colour Doppler clips are
de-identified with :func:`deidentify_instance`; the result is serialised and searched,
and its pixels decoded and compared with the original.
"""

from __future__ import annotations

import copy
import io
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from tests.identity import header_identity

from echoscreen.deid import Deidentifier, deidentify_instance, region_mask, regions_of
from echoscreen.dicom import read_cine
from echoscreen.synth import CohortConfig, generate_cohort
from echoscreen.synth.overlay import ECG_RGB, Annotation, base_canvas
from echoscreen.synth.render import ScanGeometry

SECRET = b"phantom-deid-secret-0123456789abcdef"
#: top-level values the identity scan must pick up from every phantom file
MUST_FIND = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "InstitutionName",
    "AccessionNumber",
    "DeviceSerialNumber",
    "StationName",
    "ReferringPhysicianName",
    "StudyInstanceUID",
    "SOPInstanceUID",
)
def burned_in(ds: Dataset) -> np.ndarray:
    """``(rows, cols, 3)`` uint8: the identity text the phantom burns in, drawn afresh.

    Made from the header alone (name, ID, institution, date and time), with the phantom's
    own overlay code, at the position the first (sector) region implies.
    """
    x0, y0, x1, y1 = regions_of(ds)[0]
    g = ScanGeometry(int(ds.Rows), int(ds.Columns), y0, y1, x0, x1, 0, 0, 0, 0, 0, 0, 0, 0)
    day, time = str(ds.StudyDate), str(ds.StudyTime)
    ann = Annotation(
        left=(str(ds.PatientName).replace("^", " "), f"ID {ds.PatientID}"),
        right=(str(ds.InstitutionName), f"{day[6:]}/{day[4:6]}/{day[:4]} {time[:2]}:{time[2:4]}"),
    )
    canvas = base_canvas(g, ann, doppler=False)
    canvas[y0:] = 0  # keep the text band only: margins and colour bar are no identity
    return canvas


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """One phantom study (lossless, so burned-in pixels compare exactly), de-identified."""
    out = tmp_path_factory.mktemp("phantom")
    cfg = CohortConfig(studies=1, frames=16, size=(192, 256), transfer_syntax="rle", workers=1)
    generate_cohort(out, cfg)
    deid, results = Deidentifier(SECRET), list[dict[str, Any]]()
    for path in sorted(out.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        frames = read_cine(ds).frames
        clean_ds, cleaned = deidentify_instance(ds, frames, deid)
        buf = io.BytesIO()
        clean_ds.save_as(buf, enforce_file_format=True)
        header = copy.deepcopy(clean_ds)
        del header.PixelData
        head = io.BytesIO()
        header.save_as(head, enforce_file_format=True)
        results.append(
            {
                "name": path.name,
                "ds": ds,
                "frames": frames,
                "cleaned": cleaned,
                "regions": regions_of(ds),
                "bytes": buf.getvalue(),
                "header_bytes": head.getvalue(),
                "identity": header_identity(ds),
            }
        )
    assert len(results) >= 8
    assert any(len(r["regions"]) == 2 for r in results)  # colour Doppler clips
    assert any(len(r["regions"]) == 1 for r in results)  # B-mode clips
    return results


def test_the_scan_finds_the_identity_in_the_originals(clips: list[dict[str, Any]]) -> None:
    for r in clips:
        ds: Dataset = r["ds"]
        original = open_bytes(ds)
        ident = r["identity"]
        for keyword in MUST_FIND:
            assert str(ds[keyword].value) in ident, keyword
        assert ds.RequestAttributesSequence[0].RequestedProcedureID in ident  # nested
        assert ds.OtherPatientIDsSequence[0].PatientID in ident  # nested
        private = [e for e in ds if e.tag.is_private and not e.tag.is_private_creator]
        assert len(private) >= 4 and all(str(e.value) in ident for e in private)
        assert header_identity(ds, derived=False) <= ident
        missing = [
            v
            for v in header_identity(ds, derived=False)
            if v.lower().encode() not in original.lower()
        ]
        assert not missing, (r["name"], missing)  # the byte search does find them


def open_bytes(ds: Dataset) -> bytes:
    """The dataset serialised as a file."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_no_identifying_header_value_survives(clips: list[dict[str, Any]]) -> None:
    for r in clips:
        data, head = r["bytes"].lower(), r["header_bytes"].lower()
        leaks = [v for v in r["identity"] if v.lower().encode() in head]
        # whole file (pixels too) for values long enough not to turn up in RLE bytes by chance
        leaks += [v for v in r["identity"] if len(v) >= 8 and v.lower().encode() in data]
        assert not leaks, (r["name"], sorted(set(leaks)))
        out = pydicom.dcmread(io.BytesIO(r["bytes"]))
        assert out.PatientIdentityRemoved == "YES" and out.BurnedInAnnotation == "NO"
        assert not any(e.tag.is_private for e in out.iterall())


def test_pixels_outside_the_regions_are_zero_and_inside_unchanged(
    clips: list[dict[str, Any]],
) -> None:
    for r in clips:
        frames: np.ndarray = r["frames"]
        out = pydicom.dcmread(io.BytesIO(r["bytes"]))
        stored = out.pixel_array.reshape(frames.shape)
        assert regions_of(out) == r["regions"]  # the regions are kept, unchanged
        mask = region_mask(frames.shape[1:3], r["regions"])
        assert frames[:, ~mask].any(), r["name"]  # there was something to clean
        assert not stored[:, ~mask].any(), r["name"]
        assert np.array_equal(stored[:, mask], frames[:, mask]), r["name"]
        assert np.array_equal(stored, r["cleaned"]), r["name"]


def test_burned_in_text_and_ecg_are_gone(clips: list[dict[str, Any]]) -> None:
    for r in clips:
        frames: np.ndarray = r["frames"]
        text = burned_in(r["ds"])
        on = text.any(axis=-1)
        assert on.sum() > 300, r["name"]  # name, ID, institution, date: legible strokes
        # the original frames carry exactly that text, stroke for stroke, in every frame
        assert np.array_equal(frames[:, on], np.broadcast_to(text[on], frames[:, on].shape))
        _, y0, _, y1 = r["regions"][0]
        band = frames[:, y1 + 1 :].astype(np.int16)  # anti-aliased: green-dominant pixels
        ecg = (band[..., 1] > band[..., 0] + 40) & (band[..., 1] > band[..., 2] + 40)
        assert np.abs(band.max(axis=(0, 1, 2)) - ECG_RGB).max() <= 4, r["name"]
        assert ecg.sum() > frames.shape[0] * 20, r["name"]  # the ECG trace below the sector
        stored = pydicom.dcmread(io.BytesIO(r["bytes"])).pixel_array.reshape(frames.shape)
        assert not stored[:, :y0].any() and not stored[:, y1 + 1 :].any(), r["name"]


def test_colour_flow_survives_in_doppler_clips(clips: list[dict[str, Any]]) -> None:
    doppler = [r for r in clips if len(r["regions"]) == 2]
    assert doppler
    for r in doppler:
        x0, y0, x1, y1 = r["regions"][1]
        stored = pydicom.dcmread(io.BytesIO(r["bytes"])).pixel_array.reshape(r["frames"].shape)
        box = stored[:, y0 : y1 + 1, x0 : x1 + 1].astype(np.int16)
        colour = (box.max(axis=-1) - box.min(axis=-1)) > 60  # red/blue, not grey
        assert colour.sum() > 50, r["name"]
        original = r["frames"][:, y0 : y1 + 1, x0 : x1 + 1]
        assert np.array_equal(stored[:, y0 : y1 + 1, x0 : x1 + 1], original), r["name"]


def test_inputs_were_left_untouched(clips: list[dict[str, Any]]) -> None:
    for r in clips[:2]:
        assert "^" in str(r["ds"].PatientName)  # deidentify_instance worked on a copy
        assert r["ds"].BurnedInAnnotation == "YES"


def test_without_encoding_the_frames_and_header_are_the_same(clips: list[dict[str, Any]]) -> None:
    """``encode=False`` (in-memory screening) cleans the same pixels and header, stores none."""
    deid = Deidentifier(SECRET)
    for r in clips[:3]:
        ds: Dataset = r["ds"]
        encoded, cleaned = deidentify_instance(ds, r["frames"], deid)
        bare, same = deidentify_instance(ds, r["frames"], deid, encode=False)
        assert np.array_equal(same, cleaned) and np.array_equal(same, r["cleaned"])
        assert "PixelData" not in bare and "PixelData" in encoded
        assert bare.StudyInstanceUID == encoded.StudyInstanceUID
        assert bare.PatientIdentityRemoved == "YES" and bare.BurnedInAnnotation == "NO"
