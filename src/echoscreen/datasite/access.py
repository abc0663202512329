"""Who may read what: grants (tenant -> dataset) and the catalog queries the server makes.

Access is per dataset. Every query here is scoped by the tenant, so a dataset or
clip the tenant holds no grant for is indistinguishable from one that does not
exist (the server answers 404 for both).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from echoscreen.datasite.audit import AuditLog, Event
from echoscreen.datasite.pki import check_tenant
from echoscreen.datasite.schema import Grant, IssuedCert, Tenant, ensure_tables
from echoscreen.errors import DatasiteError
from echoscreen.store.schema import SPLITS, Clip, Dataset, DatasetStudy, Study
from echoscreen.store.site import Site

#: clip ids are pseudonymised UIDs: digits, letters, dots, '-' and '_'
CLIP_ID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")
DATASET_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z ._-]{0,127}$")


def valid_clip_id(cid: object) -> bool:
    """Whether ``cid`` has the shape of a clip id (no ``..``, slashes or control chars)."""
    return isinstance(cid, str) and bool(CLIP_ID_RE.match(cid)) and ".." not in cid


def valid_dataset_name(name: object) -> bool:
    """Whether ``name`` may name a dataset on the wire (no ``..``, slashes or control chars)."""
    return isinstance(name, str) and bool(DATASET_RE.match(name)) and ".." not in name


def grant(site: Site, tenant: str, dataset: str) -> bool:
    """Let ``tenant`` read ``dataset``; returns False when it already could.

    Raises:
        DatasiteError: bad tenant name, unknown tenant or unknown dataset.
    """
    check_tenant(tenant)
    ensure_tables(site.catalog)
    with site.catalog.session() as s:
        ds = _known(s, tenant, dataset)
        exists = s.scalar(select(Grant).where(Grant.tenant == tenant, Grant.dataset_id == ds.id))
        if exists is None:
            s.add(Grant(tenant=tenant, dataset_id=ds.id))
    AuditLog(site).append(Event("site-admin", "grant", True, target=f"{tenant} {dataset}",
                                detail=None if exists is None else "already granted"))  # fmt: skip
    return exists is None


def _known(s: Session, tenant: str, dataset: str) -> Dataset:
    """The dataset named ``dataset``, once both it and ``tenant`` are known.

    Raises:
        DatasiteError: unknown tenant or unknown dataset.
    """
    if s.get(Tenant, tenant) is None:
        raise DatasiteError(f"no tenant {tenant!r}: issue it an identity with `pki issue`")
    ds = s.scalar(select(Dataset).where(Dataset.name == dataset))
    if ds is None:
        raise DatasiteError(f"no dataset {dataset!r}: `site ls` lists the datasets")
    return ds


def revoke_grant(site: Site, tenant: str, dataset: str) -> bool:
    """Withdraw ``tenant``'s access to ``dataset``; returns False when it had none.

    Raises:
        DatasiteError: bad tenant name, unknown tenant or unknown dataset (a typo must
            not look like a withdrawn grant while the real one stays).
    """
    check_tenant(tenant)
    ensure_tables(site.catalog)
    with site.catalog.session() as s:
        _known(s, tenant, dataset)
        rows = s.scalars(
            select(Grant).join(Dataset, Dataset.id == Grant.dataset_id)
            .where(Grant.tenant == tenant, Dataset.name == dataset)
        ).all()  # fmt: skip
        for g in rows:
            s.delete(g)
    AuditLog(site).append(Event("site-admin", "revoke-grant", True, target=f"{tenant} {dataset}",
                                detail=None if rows else "had no grant"))  # fmt: skip
    return bool(rows)


def grants(site: Site) -> list[tuple[str, str]]:
    """Every ``(tenant, dataset)`` grant, sorted."""
    ensure_tables(site.catalog)
    with site.catalog.session() as s:
        rows = s.execute(
            select(Grant.tenant, Dataset.name).join(Dataset, Dataset.id == Grant.dataset_id)
            .order_by(Grant.tenant, Dataset.name)
        ).all()  # fmt: skip
    return [(t, d) for t, d in rows]


# -- queries the server makes, each scoped by tenant ---------------------------------------


@dataclass(frozen=True)
class CertStatus:
    """What the catalog says about a presented client certificate."""

    known: bool
    tenant: str | None
    revoked: bool


#: the per-request queries, built once: building a statement and its cache key again
#: for every request was about half of their CPU (execution binds the parameters)
_CERT_STATUS = select(IssuedCert.tenant, IssuedCert.revoked_at).where(
    IssuedCert.serial == bindparam("serial"))  # fmt: skip
_GRANTED_OBJECTS = (
    select(Clip.id, Clip.tensor_object, Clip.tensor_shape, Clip.tensor_codec,
           Clip.tensor_nbytes)
    .join(DatasetStudy, DatasetStudy.study_id == Clip.study_id)
    .where(Clip.id.in_(bindparam("ids", expanding=True)),
           DatasetStudy.dataset_id.in_(
               select(Grant.dataset_id).where(Grant.tenant == bindparam("tenant"))))
)  # fmt: skip


def cert_status(s: Session | Connection, serial: str) -> CertStatus:
    """Look up an issued certificate by serial (hex)."""
    row = s.execute(_CERT_STATUS, {"serial": serial}).first()
    if row is None:
        return CertStatus(False, None, False)
    return CertStatus(True, row[0], row[1] is not None)


def _granted(tenant: str) -> Any:
    return select(Grant.dataset_id).where(Grant.tenant == tenant)


def visible_datasets(s: Session, tenant: str | None) -> list[dict[str, Any]]:
    """The tenant's datasets with studies and clips per split (key ``"unsplit"``: none).

    ``tenant=None`` lists every dataset (only for reads at the site itself).
    """
    mine = Dataset.id.in_(_granted(tenant)) if tenant is not None else Dataset.id.is_not(None)
    rows = s.execute(
        select(Dataset.name, DatasetStudy.split, func.count(func.distinct(Study.id)),
               func.count(Clip.id))
        .join(DatasetStudy, DatasetStudy.dataset_id == Dataset.id)
        .join(Study, Study.id == DatasetStudy.study_id)
        .outerjoin(Clip, Clip.study_id == Study.id)
        .where(mine)
        .group_by(Dataset.name, DatasetStudy.split)
    ).all()  # fmt: skip
    names = s.scalars(select(Dataset.name).where(mine).order_by(Dataset.name)).all()
    out: dict[str, dict[str, Any]] = {n: {"name": n, "splits": {}} for n in names}
    for name, split, n_studies, n_clips in rows:
        out[name]["splits"][split or "unsplit"] = {"studies": n_studies, "clips": n_clips}
    return list(out.values())


def dataset_clips(
    s: Session, tenant: str | None, dataset: str, split: str | None
) -> list[dict[str, Any]]:
    """Clips of a granted dataset (optionally one split), with labels and metadata.

    Args:
        s: catalog session.
        tenant: whose grants apply; ``None`` only for reads at the site itself.
        dataset: dataset name.
        split: ``train``/``val``/``test``/``unsplit`` or ``None`` for all.

    Raises:
        LookupError: no such dataset among the tenant's grants.
        ValueError: ``split`` is not train/val/test/unsplit.
    """
    q_ds = select(Dataset.id).where(Dataset.name == dataset)
    if tenant is not None:
        q_ds = q_ds.where(Dataset.id.in_(_granted(tenant)))
    ds_id = s.scalar(q_ds)
    if ds_id is None:
        raise LookupError(dataset)
    q = (
        select(Clip, Study, DatasetStudy.split)
        .join(Study, Study.id == Clip.study_id)
        .join(DatasetStudy, DatasetStudy.study_id == Study.id)
        .where(DatasetStudy.dataset_id == ds_id)
        .order_by(Study.id, Clip.id)
    )
    if split is not None:
        if split not in (*SPLITS, "unsplit"):
            raise ValueError(split)
        q = q.where(DatasetStudy.split.is_(None) if split == "unsplit" else
                    DatasetStudy.split == split)  # fmt: skip
    return [_clip_meta(c, st, sp) for c, st, sp in s.execute(q).all()]


def _clip_meta(c: Clip, st: Study, split: str | None) -> dict[str, Any]:
    return {
        "id": c.id, "study": c.study_id, "split": split, "label": st.label,
        "view": c.view, "doppler": c.doppler, "n_frames": c.n_frames, "fps": c.fps,
        "shape": [int(d) for d in c.tensor_shape.split("x")], "reader": c.reader,
        "sex": st.sex, "age_years": st.age_years,
    }  # fmt: skip


@dataclass(frozen=True)
class StoredTensor:
    """Where a clip's tensor is and what it looks like, from the catalog.

    Attributes:
        oid: the tensor object's id.
        shape: the tensor's shape, e.g. ``(3, 32, 64, 64)``.
        codec: the stored form (:mod:`echoscreen.store.tensors`); ``npy`` for clips
            stored before forms were recorded.
        nbytes: the stored size in bytes; ``None`` when not recorded (an ``npy``).
    """

    oid: str
    shape: tuple[int, ...]
    codec: str
    nbytes: int | None


def granted_objects(s: Session | Connection, tenant: str,
                    ids: list[str]) -> dict[str, StoredTensor]:  # fmt: skip
    """``clip id -> its stored tensor`` for the ids the tenant may read.

    Ids not returned are unknown or outside the tenant's grants (the caller cannot tell).
    """
    rows = s.execute(_GRANTED_OBJECTS, {"ids": list(ids), "tenant": tenant}).all()
    return {cid: StoredTensor(oid, tuple(int(d) for d in shape.split("x")), codec or "npy",
                              nbytes)
            for cid, oid, shape, codec, nbytes in rows}  # fmt: skip
