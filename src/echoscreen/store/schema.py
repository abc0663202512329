"""The catalog's tables (SQLAlchemy 2.0 declarative ORM, typed ``Mapped[]`` columns).

Every id that comes from DICOM is already a keyed pseudonym when it gets here
(``deid``); nothing in these tables identifies a patient without the site secret.
Object columns hold object-store ids (64 hex digits), never paths.

Later issues add tables (tenants, grants, audit) on the same :class:`Base`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: allowed values of ``dataset_studies.split`` (None: not split yet)
SPLITS = ("train", "val", "test")
OID_LEN = 64


def utcnow() -> datetime:
    """Timezone-aware current time in UTC (what every timestamp column stores)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every catalog table."""


class Study(Base):
    """One echo study of one patient (ids pseudonymised)."""

    __tablename__ = "studies"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    patient: Mapped[str] = mapped_column(String(128), index=True)
    label: Mapped[str | None] = mapped_column(String(16), index=True)
    sex: Mapped[str | None] = mapped_column(String(8))
    age_years: Mapped[float | None] = mapped_column(Float)
    weight_kg: Mapped[float | None] = mapped_column(Float)
    height_cm: Mapped[float | None] = mapped_column(Float)
    n_clips: Mapped[int] = mapped_column(Integer, default=0)
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    source_kind: Mapped[str] = mapped_column(String(32), default="folder")

    clips: Mapped[list[Clip]] = relationship(
        back_populates="study",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Clip.id",
    )


class Clip(Base):
    """One cine loop (one DICOM instance) of a study, stored twice: DICOM and tensor."""

    __tablename__ = "clips"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    view: Mapped[str | None] = mapped_column(String(32), index=True)
    doppler: Mapped[bool | None] = mapped_column(Boolean)
    findings: Mapped[str | None] = mapped_column(Text)
    n_frames: Mapped[int] = mapped_column(Integer)
    fps: Mapped[float] = mapped_column(Float)
    spacing_mm: Mapped[float | None] = mapped_column(Float)
    rows: Mapped[int] = mapped_column(Integer)
    cols: Mapped[int] = mapped_column(Integer)
    transfer_syntax: Mapped[str] = mapped_column(String(64))
    dicom_object: Mapped[str] = mapped_column(String(OID_LEN))
    tensor_object: Mapped[str] = mapped_column(String(OID_LEN))
    tensor_shape: Mapped[str] = mapped_column(String(64))
    #: the tensor object's form (:mod:`echoscreen.store.tensors`: ``npy`` or ``zstd``) and
    #: its size in bytes; NULL for clips stored before tensors were compressed (``npy``)
    tensor_codec: Mapped[str | None] = mapped_column(String(16), nullable=True)
    tensor_nbytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: the clip reader that made the tensor (``echoscreen.deid.READER``); NULL for clips
    #: ingested before readers were recorded
    reader: Mapped[str | None] = mapped_column(String(32), nullable=True)

    study: Mapped[Study] = relationship(back_populates="clips")


class Dataset(Base):
    """A named group of studies, the unit that is split and shared."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    members: Mapped[list[DatasetStudy]] = relationship(
        back_populates="dataset", cascade="all, delete-orphan", passive_deletes=True
    )


class DatasetStudy(Base):
    """Membership of a study in a dataset, with its split (train/val/test or None)."""

    __tablename__ = "dataset_studies"
    __table_args__ = (UniqueConstraint("dataset_id", "study_id"),)

    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    study_id: Mapped[str] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    split: Mapped[str | None] = mapped_column(String(8))

    dataset: Mapped[Dataset] = relationship(back_populates="members")
    study: Mapped[Study] = relationship()


class IngestRun(Base):
    """One run of the ingest pipeline and what it did."""

    __tablename__ = "ingest_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    source_kind: Mapped[str] = mapped_column(String(32))
    ingested: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    quarantined: Mapped[int] = mapped_column(Integer, default=0)


class Quarantine(Base):
    """An input that could not be read or cleaned, by a non-identifying reference."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_runs.id", ondelete="SET NULL"))
    source_ref: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
