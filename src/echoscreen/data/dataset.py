"""``ClipDataset``: a torch Dataset of clip tensors over a local site or a remote data server.

Item ``i`` is ``(tensor, meta)``:

- ``tensor``: ``torch.uint8`` of shape ``(3, T, S, S)`` (channels, frames, height,
  width), a fresh copy, unless ``transform`` maps it to something else (e.g. float).
- ``meta``: ``{"clip": str, "study": str, "split": str, "label": str,
  "label_index": int, "view": str, "doppler": int}`` where unknown strings are
  ``""``, ``label_index`` is the position in ``("normal", "borderline",
  "definite")`` or -1, and ``doppler`` is 1, 0 or -1 (unknown): every value
  collates with torch's default ``collate_fn``. :func:`collate_clips` (what
  :func:`make_loader` uses) stacks the tensors with :func:`stack`.

Reads go through a byte-bounded in-memory LRU cache and a thread pool:
:meth:`ClipDataset.prefetch` starts fetching clips before they are asked for, in
requests of at most the source's ``max_batch`` clips. :class:`PrefetchBatchSampler`
calls it for the batches ahead of the one being consumed, grouping several loader
batches into one request of about ``request_bytes`` (a data server's per-request
cost - identity checks, grant query, audit commit - is then shared by more clips),
and :func:`make_loader` builds a DataLoader that uses it (and ``__getitems__``).
Nothing is written to disk.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    default_collate,
)
from torch.utils.data import SequentialSampler as _Sequential

from echoscreen.data.cache import ByteLRU
from echoscreen.data.sources import ClipInfo, SiteSource

LABELS = ("normal", "borderline", "definite")
Transform = Callable[[torch.Tensor], Any]
Item = tuple[Any, dict[str, Any]]


def clip_meta(c: ClipInfo) -> dict[str, Any]:
    """The collate-friendly metadata dict of one clip (see the module docstring)."""
    return {
        "clip": c.id, "study": c.study, "split": c.split or "", "label": c.label or "",
        "label_index": LABELS.index(c.label) if c.label in LABELS else -1,
        "view": c.view or "", "doppler": -1 if c.doppler is None else int(c.doppler),
    }  # fmt: skip


class ClipDataset(Dataset[Item]):
    """Clips of one dataset split, from a :class:`~echoscreen.data.sources.SiteSource`.

    Args:
        source: :class:`~echoscreen.data.LocalSite` or :class:`~echoscreen.data.RemoteSite`.
        dataset: dataset name.
        split: ``train``/``val``/``test``/``unsplit``, or ``None`` for every clip.
        transform: applied to each ``uint8 (3, T, S, S)`` tensor.
        cache_bytes: bound of the in-memory cache (0: no cache; prefetch then only
            overlaps requests within one ``__getitems__``).
        workers: threads fetching in parallel.
        request_bytes: about how many bytes of clips one prefetch request asks for
            (see :meth:`request_clips`).
    """

    def __init__(self, source: SiteSource, dataset: str, split: str | None, *,
                 transform: Transform | None = None, cache_bytes: int = 512 << 20,
                 workers: int = 4, request_bytes: int = 24 << 20) -> None:  # fmt: skip
        self.source, self.dataset, self.split = source, dataset, split
        self.transform, self.cache_bytes, self.workers = transform, cache_bytes, workers
        self.request_bytes = request_bytes
        self.clips: list[ClipInfo] = source.clips(dataset, split)
        self._setup()

    def _setup(self) -> None:
        self._cache = ByteLRU(self.cache_bytes)
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: dict[str, Future[dict[str, np.ndarray]]] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        keep = ("source", "dataset", "split", "transform", "cache_bytes", "workers",
                "request_bytes", "clips")  # fmt: skip
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> Item:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Item]:
        """Items for many indices at once (what DataLoader calls per batch)."""
        infos = [self.clips[int(i)] for i in indices]
        arrays = self._arrays([c.id for c in infos])
        out: list[Item] = []
        for c, arr in zip(infos, arrays, strict=True):
            t: Any = torch.from_numpy(np.array(arr))  # a private, writable copy
            out.append((self.transform(t) if self.transform else t, clip_meta(c)))
        return out

    def request_clips(self, batch_size: int) -> int:
        """Clips per prefetch request when loader batches hold ``batch_size`` clips.

        About ``request_bytes`` of the largest clip, at most a quarter of the cache (so
        clips fetched ahead are not evicted before they are used), at most four batches
        (so several requests overlap with the consumer) and at most the source's
        ``max_batch``; never fewer than ``batch_size`` (nor 1). Without a cache
        it is ``batch_size``: clips fetched ahead would have nowhere to wait.
        """
        if self.cache_bytes <= 0 or not self.clips:
            return max(1, batch_size)
        clip = max(math.prod(c.shape) for c in self.clips)
        want = min(self.request_bytes, self.cache_bytes // 4) // max(1, clip)
        return max(1, batch_size, min(int(want), 4 * batch_size, self.source.max_batch))

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The fetching threads (started on first use)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="clip-fetch")
        return self._pool

    def prefetch(self, indices: Iterable[int]) -> None:
        """Start fetching the clips at ``indices`` that are neither cached nor on their way."""
        with self._lock:
            self._start([self.clips[int(i)].id for i in indices])

    def _start(self, ids: list[str]) -> set[Future[dict[str, np.ndarray]]]:
        """Submit fetches for ids not cached nor in flight (caller holds the lock).

        Returns:
            the futures that will deliver every id of ``ids`` that is not cached.
        """
        futures: set[Future[dict[str, np.ndarray]]] = set()
        todo = []
        for cid in dict.fromkeys(ids):
            if cid in self._inflight:
                futures.add(self._inflight[cid])
            elif cid not in self._cache:
                todo.append(cid)
        step = max(1, self.source.max_batch)
        for k in range(0, len(todo), step):
            chunk = todo[k : k + step]
            fut = self.pool.submit(self._fetch_into_cache, chunk)
            futures.add(fut)
            for cid in chunk:
                self._inflight[cid] = fut
        return futures

    def _fetch_into_cache(self, ids: list[str]) -> dict[str, np.ndarray]:
        try:
            arrays = dict(zip(ids, self.source.fetch(ids), strict=True))
            for cid, arr in arrays.items():
                self._cache.put(cid, arr)
            return arrays
        finally:
            with self._lock:
                for cid in ids:
                    self._inflight.pop(cid, None)

    def _arrays(self, ids: list[str]) -> list[np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for cid in ids:
                arr = self._cache.get(cid)
                if arr is not None:
                    found[cid] = arr
            futures = self._start([c for c in ids if c not in found])
        for fut in futures:  # a failed fetch raises its DatasiteError here
            found.update(fut.result())
        return [found[c] for c in ids]

    def close(self) -> None:
        """Stop the fetching threads, drop the cache and close the source."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._cache.clear()
        self.source.close()

    def __enter__(self) -> ClipDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PrefetchBatchSampler(Sampler[list[int]]):
    """Wraps a batch sampler so the dataset fetches ahead, several batches per request.

    Indices of upcoming batches are gathered until they make one request of
    :meth:`ClipDataset.request_clips` clips, which is then started; batches are
    yielded ``depth`` batches (plus one request's worth) behind the wrapped sampler.

    Args:
        batches: any sampler yielding lists of indices (e.g. ``BatchSampler``).
        dataset: the :class:`ClipDataset` to prefetch into.
        depth: batches to keep on their way beyond the one being grouped.
    """

    def __init__(self, batches: Iterable[list[int]], dataset: ClipDataset, depth: int = 2) -> None:
        self.batches, self.dataset, self.depth = batches, dataset, depth

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """Forward ``set_epoch`` to the wrapped sampler chain (DistributedSampler)."""
        inner = getattr(self.batches, "sampler", self.batches)
        if hasattr(inner, "set_epoch"):
            inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        ahead: list[list[int]] = []
        pending: list[int] = []  # indices gathered for the next request, not yet started
        group = lead = 0
        for batch in self.batches:
            batch = list(batch)
            if not group:
                group = self.dataset.request_clips(len(batch))
                lead = self.depth + -(-group // max(1, len(batch)))
            ahead.append(batch)
            pending += batch
            if len(pending) >= group:
                self.dataset.prefetch(pending)
                pending = []
            if len(ahead) > lead:
                out = ahead.pop(0)
                if pending and not set(pending).isdisjoint(out):  # due now: start it
                    self.dataset.prefetch(pending)
                    pending = []
                yield out
        if pending:
            self.dataset.prefetch(pending)
        yield from ahead


def stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.stack`` of same-shape CPU tensors, done by numpy: ``(N, *shape)``.

    One plain copy per tensor and no intra-op threads. ``torch.stack`` of clip-sized
    tensors measured 3x (one thread) to 20x (two threads, other work on the cores)
    slower here, and was most of the data path's CPU time; tensors that need autograd
    or are not on the CPU go to ``torch.stack``.
    """
    if any(t.requires_grad or t.device.type != "cpu" for t in tensors):
        return torch.stack(list(tensors))
    return torch.from_numpy(np.stack([t.numpy() for t in tensors]))


def collate_clips(items: Sequence[Item]) -> tuple[Any, dict[str, Any]]:
    """Collate ``(tensor, meta)`` items: tensors by :func:`stack`, meta by torch's default."""
    xs = [x for x, _ in items]
    batch = stack(xs) if all(isinstance(x, torch.Tensor) for x in xs) else default_collate(xs)
    return batch, default_collate([m for _, m in items])


def make_loader(dataset: ClipDataset, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                sampler: Sampler[int] | None = None, depth: int = 2,
                drop_last: bool = False) -> DataLoader[Item]:  # fmt: skip
    """A single-process DataLoader whose batches are prefetched ``depth`` ahead.

    Args:
        dataset: the clips.
        batch_size: clips per batch.
        shuffle: random order (ignored when ``sampler`` is given), seeded by ``seed``.
        sampler: e.g. a ``DistributedSampler`` (call ``loader.batch_sampler.set_epoch``).
        depth: batches fetched ahead of the one being consumed.
        drop_last: drop a final short batch.
    """
    if sampler is None:
        gen = torch.Generator().manual_seed(seed)
        sampler = RandomSampler(dataset, generator=gen) if shuffle else _Sequential(dataset)
    batches = PrefetchBatchSampler(BatchSampler(sampler, batch_size, drop_last), dataset, depth)
    return DataLoader(dataset, batch_sampler=batches, num_workers=0, collate_fn=collate_clips)
