"""The catalog: studies, clips, datasets and splits in SQLite or PostgreSQL (SQLAlchemy 2.0).

``Catalog(url)`` takes a SQLAlchemy URL. ``sqlite:///path`` is the default a site
uses; ``postgresql://user@host/db`` is normalised to the psycopg 3 driver
(``postgresql+psycopg://``). Tables are in :mod:`.schema`; patient-level splits in
:mod:`.split` (re-exported here as :func:`make_split`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, inspect, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from echoscreen.errors import CatalogError
from echoscreen.store.schema import Base, Clip, Dataset, DatasetStudy, Quarantine, Study
from echoscreen.store.split import make_split

__all__ = [
    "Catalog",
    "DatasetInfo",
    "StudyDetail",
    "add_to_dataset",
    "ensure_dataset",
    "make_split",
    "normalise_url",
    "redact_url",
]


def normalise_url(url: str) -> URL:
    """Parse a catalog URL, mapping ``postgresql://``/``postgres://`` to psycopg 3.

    Raises:
        CatalogError: the URL is malformed or names an unsupported database.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise CatalogError(
            f"malformed catalog URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST/DB"
        ) from exc
    if parsed.drivername in {"postgresql", "postgres", "postgresql+psycopg"}:
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "sqlite":
        if not parsed.database:
            raise CatalogError("an in-memory SQLite catalog cannot be shared: give a file path")
        return parsed
    raise CatalogError(
        f"unsupported catalog database {parsed.drivername!r}: "
        "use sqlite:///PATH or postgresql://USER@HOST/DB"
    )


def redact_url(url: str | URL) -> str:
    """The URL with any password replaced by ``***`` (safe to print or store)."""
    parsed = url if isinstance(url, URL) else make_url(url)
    return parsed.render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


@dataclass
class StudyDetail:
    """A study, its clips and its dataset memberships ``(dataset, split)``."""

    study: Study
    clips: list[Clip]
    datasets: list[tuple[str, str | None]]


@dataclass
class DatasetInfo:
    """A dataset with its study count per split (key ``None``: not split)."""

    name: str
    created_at: datetime
    n_studies: int
    splits: dict[str | None, int] = field(default_factory=dict)


class Catalog:
    """Handle on a catalog database.

    Args:
        url: SQLAlchemy URL (``sqlite:///...`` or ``postgresql://...``).

    Raises:
        CatalogError: the URL is malformed or unsupported.
    """

    def __init__(self, url: str | URL) -> None:
        self.url = normalise_url(str(url) if isinstance(url, str) else url.render_as_string(False))
        self.engine: Engine = create_engine(self.url, pool_pre_ping=True)
        if self.url.drivername == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Catalog({redact_url(self.url)!r})"

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    def _unreachable(self, exc: Exception) -> CatalogError:
        return CatalogError(
            f"catalog database {redact_url(self.url)} is unreachable or refused the request "
            f"({str(exc).splitlines()[0]}); check the server is up and the URL/password"
        )

    def initialised(self) -> bool:
        """Whether the database holds echoscreen's tables (those ``site init`` created).

        Raises:
            CatalogError: the database is unreachable.
        """
        try:
            return bool(inspect(self.engine).has_table(Study.__tablename__))
        except (OperationalError, InterfaceError) as exc:
            raise self._unreachable(exc) from exc

    def create_all(self) -> None:
        """Create every table that is missing, and add the nullable columns a table made
        by an older echoscreen lacks (``ALTER TABLE ... ADD COLUMN``: its rows get NULL).
        Nothing is dropped or changed.

        Raises:
            CatalogError: the database is unreachable, or an existing table lacks a
                column that may not be NULL (a catalog this version cannot upgrade).
        """
        try:
            Base.metadata.create_all(self.engine)
            for table in Base.metadata.sorted_tables:
                present = {c["name"] for c in inspect(self.engine).get_columns(table.name)}
                for col in table.columns:
                    if col.name not in present:
                        self._add_column(table.name, col)
        except (OperationalError, InterfaceError) as exc:
            raise self._unreachable(exc) from exc

    def _add_column(self, table: str, col: Any) -> None:
        if not col.nullable:
            raise CatalogError(
                f"catalog {redact_url(self.url)}: table {table} lacks the column {col.name}, "
                "which this echoscreen cannot add to an existing catalog; open it with the "
                "version that made it"
            )
        kind = col.type.compile(dialect=self.engine.dialect)
        try:
            with self.engine.begin() as conn:
                conn.execute(text(f'ALTER TABLE {table} ADD COLUMN "{col.name}" {kind}'))
        except (OperationalError, ProgrammingError):
            # another process opening the same catalog may have added it first
            names = {c["name"] for c in inspect(self.engine).get_columns(table)}
            if col.name not in names:
                raise

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits when the block succeeds and rolls back when it raises."""
        with self._sessions() as s:
            try:
                yield s
                s.commit()
            except (OperationalError, InterfaceError) as exc:
                s.rollback()
                raise self._unreachable(exc) from exc
            except BaseException:
                s.rollback()
                raise

    # -- read helpers ----------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counts: studies, patients, clips, quarantined; per label, per view, per dataset/split.

        Returns:
            ``{"studies": int, "patients": int, "clips": int, "quarantined": int,
            "labels": {label|None: n}, "views": {view|None: n},
            "datasets": {name: {"studies": n, "splits": {split|None: n}}}}``
        """
        with self.session() as s:
            out: dict[str, Any] = {
                "studies": s.scalar(select(func.count()).select_from(Study)) or 0,
                "patients": s.scalar(select(func.count(func.distinct(Study.patient)))) or 0,
                "clips": s.scalar(select(func.count()).select_from(Clip)) or 0,
                "quarantined": s.scalar(select(func.count()).select_from(Quarantine)) or 0,
            }
            out["labels"] = dict(
                s.execute(select(Study.label, func.count()).group_by(Study.label)).all()
            )
            out["views"] = dict(
                s.execute(select(Clip.view, func.count()).group_by(Clip.view)).all()
            )
        out["datasets"] = {
            d.name: {"studies": d.n_studies, "splits": d.splits} for d in self.datasets()
        }
        return out

    def datasets(self) -> list[DatasetInfo]:
        """Every dataset, by name, with its studies per split."""
        with self.session() as s:
            infos = {
                d.name: DatasetInfo(d.name, d.created_at, 0)
                for d in s.scalars(select(Dataset).order_by(Dataset.name))
            }
            rows = s.execute(
                select(Dataset.name, DatasetStudy.split, func.count())
                .join(DatasetStudy, DatasetStudy.dataset_id == Dataset.id)
                .group_by(Dataset.name, DatasetStudy.split)
            ).all()
            for name, split, n in rows:
                infos[name].splits[split] = n
                infos[name].n_studies += n
        return list(infos.values())

    def study(self, study_id: str) -> StudyDetail:
        """A study by id or unique id prefix, with its clips and datasets.

        Raises:
            CatalogError: no study, or the prefix matches several.
        """
        with self.session() as s:
            q = select(Study).options(selectinload(Study.clips))
            found = s.scalars(q.where(Study.id == study_id)).all()
            if not found and study_id:
                # autoescape: % and _ in what was typed are characters, not LIKE wildcards
                prefix = Study.id.startswith(study_id, autoescape=True)
                found = s.scalars(q.where(prefix).limit(3)).all()
            if not found:
                raise CatalogError(f"no study {study_id!r} in the catalog: `site ls` lists them")
            if len(found) > 1:
                raise CatalogError(f"{study_id!r} matches several studies: give more of the id")
            st = found[0]
            member = s.execute(
                select(Dataset.name, DatasetStudy.split)
                .join(DatasetStudy, DatasetStudy.dataset_id == Dataset.id)
                .where(DatasetStudy.study_id == st.id)
                .order_by(Dataset.name)
            ).all()
            return StudyDetail(st, list(st.clips), [(name, split) for name, split in member])

    def object_refs(self) -> list[tuple[str, str, str]]:
        """Every object id the catalog references: ``(clip id, column, object id)``."""
        with self.session() as s:
            rows = s.execute(select(Clip.id, Clip.dicom_object, Clip.tensor_object)).all()
            refs = []
            for cid, dicom_oid, tensor_oid in rows:
                refs.append((cid, "dicom_object", dicom_oid))
                refs.append((cid, "tensor_object", tensor_oid))
        return refs


def ensure_dataset(session: Session, name: str) -> Dataset:
    """The dataset called ``name``, created (in ``session``) when missing."""
    if not name or len(name) > 128 or not name.isprintable():
        raise CatalogError(f"invalid dataset name {name!r}: use 1-128 printable characters")
    ds = session.scalar(select(Dataset).where(Dataset.name == name))
    if ds is None:
        ds = Dataset(name=name)
        session.add(ds)
        session.flush()
    return ds


def add_to_dataset(session: Session, name: str, study_id: str) -> None:
    """Put a study into dataset ``name`` (created when missing); a no-op if already in it."""
    ds = ensure_dataset(session, name)
    if session.get(DatasetStudy, (ds.id, study_id)) is None:
        session.add(DatasetStudy(dataset_id=ds.id, study_id=study_id))
        session.flush()
