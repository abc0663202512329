"""The catalog on SQLite and on a live PostgreSQL server: schema, queries, splits, sites."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from echoscreen.errors import CatalogError
from echoscreen.store.catalog import Catalog, add_to_dataset, make_split, normalise_url
from echoscreen.store.schema import Clip, DatasetStudy, Quarantine, Study
from echoscreen.store.site import PASSWORD_ENV, Site

LABELS = ["normal", "normal", "borderline", "definite"]


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    cat = Catalog(catalog_url)
    cat.create_all()
    yield cat
    cat.close()


def add_cohort(cat: Catalog, n_patients: int, studies_per_patient: int = 2) -> None:
    """Patients with 1..studies_per_patient studies, two clips each, all in dataset 'rhd'."""
    with cat.session() as s:
        for p in range(n_patients):
            for k in range(1 + p % studies_per_patient):
                sid = f"1.2.826.0.1.{p}.{k}"
                s.add(Study(id=sid, patient=f"P{p:04d}", label=LABELS[p % 4], sex="F",
                            age_years=8 + p % 10, n_clips=2, source_kind="folder"))  # fmt: skip
                for c, view in enumerate(("PLAX", "A4C")):
                    s.add(Clip(id=f"{sid}.{c}", study_id=sid, view=view, doppler=c == 1,
                               n_frames=16, fps=30.0, spacing_mm=0.3, rows=64, cols=64,
                               transfer_syntax="1.2.840.10008.1.2.4.50",
                               dicom_object=f"{p:02x}{k}{c}".ljust(64, "a"),
                               tensor_object=f"{p:02x}{k}{c}".ljust(64, "b"),
                               tensor_shape="3x16x64x64"))  # fmt: skip
                s.flush()
                add_to_dataset(s, "rhd", sid)


def test_a_catalog_made_before_a_column_gets_it_added_with_nulls(catalog_url: str) -> None:
    """A site ingested by an older echoscreen (no ``clips.reader``) opens, keeps its rows,
    and reads NULL for the new column; a missing NOT NULL column is a clear refusal."""
    from sqlalchemy import create_engine, inspect, text

    cat = Catalog(catalog_url)
    cat.create_all()
    add_cohort(cat, 3)
    cat.close()
    raw = create_engine(normalise_url(catalog_url))
    with raw.begin() as conn:
        conn.execute(text("ALTER TABLE clips DROP COLUMN reader"))
    assert "reader" not in {c["name"] for c in inspect(raw).get_columns("clips")}
    for _ in range(2):  # the second open finds nothing to add
        cat = Catalog(catalog_url)
        cat.create_all()
        with cat.session() as s:
            readers = s.scalars(select(Clip.reader)).all()
            assert len(readers) == 2 * (1 + 2 + 1) and set(readers) == {None}
            s.add(Clip(id="new.1", study_id="1.2.826.0.1.0.0", view="A4C", doppler=False,
                       n_frames=16, fps=30.0, rows=64, cols=64, transfer_syntax="x",
                       dicom_object="c" * 64, tensor_object="d" * 64, tensor_shape="3x16x64x64",
                       reader="dct-scaled/1"))  # fmt: skip
        with cat.session() as s:
            assert s.get(Clip, "new.1").reader == "dct-scaled/1"  # type: ignore[union-attr]
            s.delete(s.get(Clip, "new.1"))
        cat.close()
    with raw.begin() as conn:
        conn.execute(text("ALTER TABLE clips DROP COLUMN tensor_shape"))
    raw.dispose()
    cat = Catalog(catalog_url)
    with pytest.raises(CatalogError, match="lacks the column tensor_shape"):
        cat.create_all()
    cat.close()


def test_url_normalisation() -> None:
    assert normalise_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    for bad in ("mysql://u@h/db", "not a url", "sqlite://"):
        with pytest.raises(CatalogError):
            normalise_url(bad)


def test_schema_summary_and_study_detail(catalog: Catalog) -> None:
    add_cohort(catalog, 8)
    with catalog.session() as s:
        s.add(Quarantine(source_ref="hmac:1f2e", reason="burned-in annotation, no US regions"))
    summary = catalog.summary()
    assert summary["studies"] == 12 and summary["patients"] == 8 and summary["clips"] == 24
    assert summary["labels"] == {"normal": 6, "borderline": 2, "definite": 4}
    assert summary["views"] == {"PLAX": 12, "A4C": 12}
    assert summary["quarantined"] == 1
    assert summary["datasets"] == {"rhd": {"studies": 12, "splits": {None: 12}}}
    detail = catalog.study("1.2.826.0.1.3.1")
    assert detail.study.label == "definite" and [c.view for c in detail.clips] == ["PLAX", "A4C"]
    assert detail.datasets == [("rhd", None)]
    assert catalog.study("1.2.826.0.1.6.").study.id == "1.2.826.0.1.6.0"  # unique prefix
    with pytest.raises(CatalogError, match="several"):
        catalog.study("1.2.826.0.1.")
    with pytest.raises(CatalogError, match="no study"):
        catalog.study("9.9.9")
    for wild in ("%", "1.2.826.0.1.6_", "1.2.826.0.1.6%"):  # LIKE wildcards match nothing
        with pytest.raises(CatalogError, match="no study"):
            catalog.study(wild)
    assert len(catalog.object_refs()) == 48


def test_deleting_a_study_cascades(catalog: Catalog) -> None:
    add_cohort(catalog, 2)
    with catalog.session() as s:
        s.delete(s.get(Study, "1.2.826.0.1.1.0"))
    with catalog.session() as s:
        assert s.scalars(select(Clip.id).where(Clip.study_id == "1.2.826.0.1.1.0")).all() == []
        left = s.scalars(select(DatasetStudy.study_id)).all()
    assert "1.2.826.0.1.1.0" not in left and len(left) == 2


def test_failed_transaction_leaves_nothing(catalog: Catalog) -> None:
    with pytest.raises(RuntimeError), catalog.session() as s:
        s.add(Study(id="x", patient="P", n_clips=0, source_kind="folder"))
        s.flush()
        raise RuntimeError("crash mid-study")
    assert catalog.summary()["studies"] == 0


def test_split_is_patient_level_stratified_and_deterministic(catalog: Catalog) -> None:
    add_cohort(catalog, 80)
    counts = make_split(catalog, "rhd", 0.7, 0.15, 0.15, seed=3)
    total = sum(counts.values())
    assert total == 120
    for name, frac in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        assert abs(counts[name] - frac * total) <= 4, counts
    with catalog.session() as s:
        rows = s.execute(
            select(Study.patient, Study.label, DatasetStudy.split).join(
                DatasetStudy, DatasetStudy.study_id == Study.id
            )
        ).all()
    by_patient: dict[str, set[str | None]] = {}
    for patient, _, split in rows:
        by_patient.setdefault(patient, set()).add(split)
    assert all(len(splits) == 1 for splits in by_patient.values())  # patient-level
    for label in ("normal", "borderline", "definite"):  # every label in every split
        assert {sp for _, lab, sp in rows if lab == label} == {"train", "val", "test"}
    assigned = sorted((p, sp) for p, _, sp in rows)
    assert make_split(catalog, "rhd", 0.7, 0.15, 0.15, seed=3) == counts
    with catalog.session() as s:
        again = s.execute(
            select(Study.patient, DatasetStudy.split).join(
                DatasetStudy, DatasetStudy.study_id == Study.id
            )
        ).all()
    assert sorted((p, sp) for p, sp in again) == assigned


def test_split_errors(catalog: Catalog) -> None:
    add_cohort(catalog, 4)
    with pytest.raises(CatalogError, match="sum to 1"):
        make_split(catalog, "rhd", 0.7, 0.2, 0.2, seed=0)
    with pytest.raises(CatalogError, match=r">= 0"):
        make_split(catalog, "rhd", 1.2, -0.2, 0.0, seed=0)
    with pytest.raises(CatalogError, match=r"no dataset 'nope'.*rhd"):
        make_split(catalog, "nope", 0.7, 0.15, 0.15, seed=0)
    assert make_split(catalog, "rhd", 1.0, 0.0, 0.0, seed=0) == {"train": 6, "val": 0, "test": 0}


def test_site_on_postgresql_keeps_the_password_out_of_site_json(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = postgres_url.split(":")[2].split("@")[0]
    with Site.init(tmp_path / "site", postgres_url) as site:
        assert site.catalog.dialect == "postgresql"
        oid = site.objects.put(b"tensor bytes")
    meta = (tmp_path / "site" / "site.json").read_text()
    assert "postgresql+psycopg://echoscreen@127.0.0.1" in meta and password not in meta
    pw_file = tmp_path / "site" / "keys" / "catalog.password"
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    assert not (tmp_path / "site" / "catalog.db").exists()
    with Site.open(tmp_path / "site") as site:
        assert site.summary()["objects"] == 1 and site.objects.get(oid) == b"tensor bytes"
    monkeypatch.setenv(PASSWORD_ENV, "wrong-" + password)
    with pytest.raises(CatalogError, match="unreachable or refused") as err:
        Site.open(tmp_path / "site")
    assert password not in str(err.value)


def test_unreachable_postgresql_is_a_clean_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://u:secret@127.0.0.1:{port}/db"
    with pytest.raises(CatalogError, match="unreachable") as err:
        Site.init(tmp_path / "site", url)
    assert "secret" not in str(err.value)
    assert not (tmp_path / "site").exists()  # nothing half-made left behind
    assert os.listdir(tmp_path) == []


def test_a_given_pseudonym_secret_makes_pseudonyms_repeatable(tmp_path: Path) -> None:
    """The demo's sites (one secret from its seed) pseudonymise alike; default sites do not."""
    from echoscreen.deid import Deidentifier
    from echoscreen.errors import StoreError

    secret = bytes(range(32))
    uids = []
    for name in ("a", "b", "c"):
        given = secret if name != "c" else None
        with Site.init(tmp_path / name, pseudonym_secret=given) as site:
            uids.append(Deidentifier(site.pseudonym_secret).pseudonym_uid("1.2.3.4"))
            assert stat.S_IMODE((site.path / "keys" / "pseudonym.key").stat().st_mode) == 0o600
    assert uids[0] == uids[1] != uids[2]
    with pytest.raises(StoreError, match="at least 16 bytes"):
        Site.init(tmp_path / "d", pseudonym_secret=b"short")
