"""Helpers for the pipeline tests: site consistency checks and made-up distinct studies."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from sqlalchemy import MetaData, select

from echoscreen.store import tensors
from echoscreen.store.schema import Clip, Study
from echoscreen.store.site import Site


def assert_consistent(site: Site) -> dict[str, int]:
    """Every catalog row's objects exist, decrypt and parse; study clip counts add up.

    Returns:
        ``{"studies": n, "clips": n}``.
    """
    assert site.verify() == []
    with site.catalog.session() as s:
        studies = list(s.scalars(select(Study)))
        clips = list(s.scalars(select(Clip)))
    per_study: dict[str, int] = {}
    for clip in clips:
        per_study[clip.study_id] = per_study.get(clip.study_id, 0) + 1
        stored = site.objects.get(clip.tensor_object)
        assert (tensors.form(stored), len(stored)) == (clip.tensor_codec, clip.tensor_nbytes)
        npy = tensors.npy_bytes(stored)
        tensor = np.load(io.BytesIO(npy), allow_pickle=False)
        assert "x".join(map(str, tensor.shape)) == clip.tensor_shape
        assert tensor.dtype == np.uint8
        ds = pydicom.dcmread(io.BytesIO(site.objects.get(clip.dicom_object)))
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.SOPInstanceUID == clip.id
        assert ds.StudyInstanceUID == clip.study_id
    assert {st.id: st.n_clips for st in studies} == per_study
    return {"studies": len(studies), "clips": len(clips)}


def dump_catalog(site: Site) -> str:
    """Every row of every table of the catalog, as text."""
    meta = MetaData()
    meta.reflect(site.catalog.engine)
    lines = []
    with site.catalog.engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(table.select()):
                lines.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(lines)


def distinct_studies(template: Path, out: Path, n: int) -> list[str]:
    """Write ``n`` copies of ``template`` as separate studies (new study/series/SOP UIDs).

    Returns:
        The new StudyInstanceUIDs, in file order.
    """
    from pydicom.uid import generate_uid

    out.mkdir(parents=True, exist_ok=True)
    uids = []
    for i in range(n):
        ds = pydicom.dcmread(template)
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID = f"PAT{i:03d}"
        ds.save_as(out / f"study{i:02d}.dcm", enforce_file_format=True)
        uids.append(str(ds.StudyInstanceUID))
    return uids
