"""Where clip tensors come from: the :class:`SiteSource` seam and the local site.

A source lists a dataset's clips (:class:`ClipInfo`) and fetches clip tensors
(``uint8`` arrays of shape ``(3, T, S, S)``: channels, frames, height, width) by
id. :class:`LocalSite` reads the encrypted store directly (compute at the data
site); :class:`~echoscreen.data.remote.RemoteSite` asks a data server over mTLS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from echoscreen.errors import DatasiteError, IntegrityError


@dataclass(frozen=True)
class ClipInfo:
    """One clip of a dataset, as listed (no pixels).

    Attributes:
        id: clip id (pseudonymised SOP Instance UID).
        study: study id (pseudonymised).
        split: ``train``/``val``/``test`` or ``None`` (not split).
        label: study label (``normal``/``borderline``/``definite``) or ``None``.
        view: echo view or ``None``; doppler: colour Doppler or ``None``.
        n_frames: frames in the source cine; fps: its frame rate.
        shape: tensor shape ``(3, T, S, S)``.
        sex, age_years: demographics kept for fairness analysis (may be ``None``).
        reader: the clip reader that made the tensor (``echoscreen.deid.READER`` at its
            ingest), or ``None`` when it was not recorded.
    """

    id: str
    study: str
    split: str | None
    label: str | None
    view: str | None
    doppler: bool | None
    n_frames: int
    fps: float
    shape: tuple[int, ...]
    sex: str | None = None
    age_years: float | None = None
    reader: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ClipInfo:
        """Build from the data server's / catalog's clip record."""
        return cls(str(d["id"]), str(d["study"]), d.get("split"), d.get("label"), d.get("view"),
                   d.get("doppler"), int(d["n_frames"]), float(d["fps"]),
                   tuple(int(x) for x in d["shape"]), d.get("sex"), d.get("age_years"),
                   d.get("reader"))  # fmt: skip


class SiteSource(Protocol):
    """Lists and fetches clips of the datasets one may read."""

    #: most ids one :meth:`fetch` call should be given
    max_batch: int

    def datasets(self) -> list[dict[str, Any]]:
        """``[{"name": str, "splits": {split: {"studies": n, "clips": n}}}]``."""
        ...

    def clips(self, dataset: str, split: str | None) -> list[ClipInfo]:
        """The clips of ``dataset`` (one split, or all with ``None``)."""
        ...

    def fetch(self, ids: Sequence[str]) -> list[np.ndarray]:
        """The tensors of ``ids`` in order, each ``uint8 (3, T, S, S)``, read-only."""
        ...

    def fetch_each(self, ids: Sequence[str], on_clip: Callable[[str, np.ndarray], None]) -> None:
        """Hand each tensor of ``ids`` to ``on_clip(id, array)`` in order, as soon as it
        is read (a clip handed over is complete and authentic; a failure raises and the
        clips after it are not handed over)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class LocalSite:
    """Clips straight from a site's encrypted store (for compute at the data site).

    Args:
        path: the site folder. Opened lazily, and again in each DataLoader worker.
    """

    max_batch = 64

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._site: Any = None

    def _open(self) -> Any:
        if self._site is None:
            from echoscreen.store.site import Site

            self._site = Site.open(self.path)
        return self._site

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_site": None}

    def datasets(self) -> list[dict[str, Any]]:
        """Every dataset of the site with studies and clips per split."""
        from echoscreen.datasite.access import visible_datasets

        with self._open().catalog.session() as s:
            return visible_datasets(s, None)

    def clips(self, dataset: str, split: str | None) -> list[ClipInfo]:
        """The clips of ``dataset``.

        Raises:
            DatasiteError: no such dataset, or a bad split name.
        """
        from echoscreen.datasite.access import dataset_clips

        try:
            with self._open().catalog.session() as s:
                rows = dataset_clips(s, None, dataset, split)
        except LookupError as exc:
            raise DatasiteError(f"no dataset {dataset!r} in {self.path}") from exc
        except ValueError as exc:
            raise DatasiteError("split must be train, val, test or unsplit") from exc
        return [ClipInfo.from_json(r) for r in rows]

    def fetch(self, ids: Sequence[str]) -> list[np.ndarray]:
        """Decrypt the tensors of ``ids``.

        Raises:
            DatasiteError: an id is unknown.
            IntegrityError: a stored object was altered.
        """
        out: list[np.ndarray] = []
        self.fetch_each(ids, lambda _cid, arr: out.append(arr))
        return out

    def fetch_each(self, ids: Sequence[str], on_clip: Callable[[str, np.ndarray], None]) -> None:
        """Decrypt the tensors of ``ids`` one by one, handing each to ``on_clip`` as it is read.

        Every id is looked up before the first is read, so an unknown id hands nothing over.

        Raises:
            DatasiteError: an id is unknown.
            IntegrityError: a stored object was altered (the clips before it were handed over).
        """
        from sqlalchemy import select

        from echoscreen.datasite.wire import npy_array
        from echoscreen.store import tensors
        from echoscreen.store.schema import Clip

        site = self._open()
        with site.catalog.session() as s:
            q = select(Clip.id, Clip.tensor_object).where(Clip.id.in_(ids))
            rows = dict(s.execute(q).all())
        missing = [cid for cid in ids if cid not in rows]
        if missing:
            raise DatasiteError(f"no clip {missing[0]!r} in {self.path}")
        for cid in ids:
            try:
                npy = tensors.npy_bytes(site.objects.read(rows[cid]))  # as stored: maybe zstd
            except tensors.TensorFormatError as exc:
                raise IntegrityError(f"clip {cid}: stored tensor is damaged ({exc})") from exc
            on_clip(cid, npy_array(npy))

    def close(self) -> None:
        """Close the site's catalog connections."""
        if self._site is not None:
            self._site.close()
            self._site = None
