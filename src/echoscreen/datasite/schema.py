"""Catalog tables of the data server: tenants, their certificates, grants and the audit log.

They live on the catalog's :class:`~echoscreen.store.schema.Base` (same database,
same transactions as studies and datasets). :func:`ensure_tables` creates the ones
a site made before the data server existed is missing; it is idempotent and every
datasite entry point calls it, so nothing depends on import order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from echoscreen.errors import CatalogError
from echoscreen.store.catalog import Catalog
from echoscreen.store.schema import Base, utcnow

HASH_LEN = 64


class Tenant(Base):
    """A compute workload owner that may be issued identities and granted datasets."""

    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IssuedCert(Base):
    """A client certificate the site CA issued; ``revoked_at`` set once revoked."""

    __tablename__ = "issued_certs"

    serial: Mapped[str] = mapped_column(String(48), primary_key=True)  # hex
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.name"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(HASH_LEN))  # sha256 of the DER, hex
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    not_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Grant(Base):
    """Tenant ``tenant`` may read dataset ``dataset_id`` (the unit a site shares)."""

    __tablename__ = "grants"
    __table_args__ = (UniqueConstraint("tenant", "dataset_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.name"), index=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditRecord(Base):
    """One entry of the hash-chained, append-only audit log (see :mod:`.audit`)."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(40))  # ISO 8601 UTC, microseconds
    who: Mapped[str] = mapped_column(String(80))  # tenant, "unauthenticated", "site-admin"
    serial: Mapped[str | None] = mapped_column(String(48))
    client: Mapped[str | None] = mapped_column(String(64))  # peer address
    action: Mapped[str] = mapped_column(String(200))  # e.g. "GET /v1/clips/{id}"
    target: Mapped[str | None] = mapped_column(Text)
    status: Mapped[int] = mapped_column(Integer)  # HTTP status; 0 for TLS / admin events
    allowed: Mapped[bool] = mapped_column(Boolean)
    nbytes: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(HASH_LEN))
    hash: Mapped[str] = mapped_column(String(HASH_LEN), unique=True)


TABLE_NAMES = ("tenants", "issued_certs", "grants", "audit_log")


def ensure_tables(catalog: Catalog) -> None:
    """Create the data-server tables that are missing (idempotent; others untouched).

    Raises:
        CatalogError: the catalog is unreachable.
    """
    from sqlalchemy.exc import InterfaceError, OperationalError

    try:
        tables = [Base.metadata.tables[n] for n in TABLE_NAMES]
        Base.metadata.create_all(catalog.engine, tables=tables)
    except (OperationalError, InterfaceError) as exc:
        raise CatalogError(
            f"cannot create the data-server tables in {catalog!r} ({exc.__class__.__name__}); "
            "check the catalog server is up"
        ) from exc


@contextmanager
def connect(catalog: Catalog, *, write: bool = False) -> Iterator[Connection]:
    """A plain Core connection for the server's per-request queries: no ORM session,
    which cost about twice the CPU of the query itself here. With ``write``, one
    transaction, committed when the block succeeds.

    Raises:
        CatalogError: the catalog is unreachable (the server answers 503).
    """
    from sqlalchemy.exc import InterfaceError, OperationalError

    try:
        with catalog.engine.begin() if write else catalog.engine.connect() as conn:
            yield conn
    except (OperationalError, InterfaceError) as exc:
        raise CatalogError(
            f"the catalog {catalog!r} is unreachable ({str(exc).splitlines()[0]}); "
            "check the catalog server is up"
        ) from exc
