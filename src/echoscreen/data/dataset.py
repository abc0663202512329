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
calls it for the batches ahead of the one being consumed (as many as fill a fraction
of the cache), grouping several loader batches into one request of about
``request_bytes`` (a data server's per-request cost - identity checks, grant query,
audit commit - is then shared by more clips), and :func:`make_loader` builds a
DataLoader that uses it (and ``__getitems__``). Each clip is handed over as soon as it
arrives, not when its whole request has. Nothing is written to disk.
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
from echoscreen.errors import DatasiteError
from echoscreen.vocab import LABELS

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
        ahead: fraction of ``cache_bytes`` that clips fetched ahead of the consumer may
            fill (see :meth:`ahead_batches`).
        tune_memory: when fetching starts, let this process's allocator keep freed
            clip-sized buffers for reuse (:func:`~echoscreen.datasite.server.tune_allocator`:
            up to 256 MiB kept; without it every fresh clip buffer page-faulted,
            0.2-0.3 ms of CPU per MB read here).

    Memory: the cache holds at most ``cache_bytes``; clips still arriving add one clip
    buffer per request in flight (at most ``workers``), as clips are handed over one by
    one. The cache evicts in arrival order, so clips fetched ahead and not yet used
    leave last.
    """

    def __init__(self, source: SiteSource, dataset: str, split: str | None, *,
                 transform: Transform | None = None, cache_bytes: int = 512 << 20,
                 workers: int = 4, request_bytes: int = 24 << 20, ahead: float = 0.75,
                 tune_memory: bool = True) -> None:  # fmt: skip
        self.source, self.dataset, self.split = source, dataset, split
        self.transform, self.cache_bytes, self.workers = transform, cache_bytes, workers
        self.request_bytes, self.ahead, self.tune_memory = request_bytes, ahead, tune_memory
        self.clips: list[ClipInfo] = source.clips(dataset, split)
        self._setup()

    def _setup(self) -> None:
        self._cache = ByteLRU(self.cache_bytes)
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: dict[str, Future[np.ndarray]] = {}  # clip id -> its arrival
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        keep = ("source", "dataset", "split", "transform", "cache_bytes", "workers",
                "request_bytes", "ahead", "tune_memory", "clips")  # fmt: skip
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> Item:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Item]:
        """Items for many indices at once (what DataLoader calls per batch).

        Same-shape clips are copied once, each into its row of one new ``(N, 3, T, S, S)``
        batch tensor, and the items are views of those rows (private: the cache keeps
        its own arrays); :func:`collate_clips` then hands that batch on without copying
        it again. Keeping one item keeps its whole batch's memory.
        """
        infos = [self.clips[int(i)] for i in indices]
        out: list[Item] = []
        for c, t in zip(infos, _rows(self._arrays([c.id for c in infos])), strict=True):
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

    def ahead_batches(self, batch_size: int) -> int:
        """Loader batches to keep on their way, bounded by bytes, not by a fixed depth.

        As many batches of the largest clip as fill ``ahead`` x ``cache_bytes``, so
        enough requests overlap to keep the reader and the server busy while what was
        fetched ahead still fits the cache; never fewer than one request's worth of
        batches plus one. Without a cache: 2.
        """
        batch_size = max(1, batch_size)
        if self.cache_bytes <= 0 or not self.clips:
            return 2
        clip = max(math.prod(c.shape) for c in self.clips)
        least = -(-self.request_clips(batch_size) // batch_size) + 1
        return max(least, int(self.ahead * self.cache_bytes) // max(1, clip * batch_size))

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The fetching threads (started on first use)."""
        if self._pool is None:
            if self.tune_memory:
                from echoscreen.datasite.server import tune_allocator

                tune_allocator()
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="clip-fetch")
        return self._pool

    def prefetch(self, indices: Iterable[int]) -> None:
        """Start fetching the clips at ``indices`` that are neither cached nor on their way."""
        with self._lock:
            self._start([self.clips[int(i)].id for i in indices])

    def _start(self, ids: list[str]) -> dict[str, Future[np.ndarray]]:
        """Submit fetches for ids not cached nor in flight (caller holds the lock).

        Returns:
            one future per id of ``ids`` that is not cached, resolved as soon as that
            clip has arrived (not when its whole request has).
        """
        futures: dict[str, Future[np.ndarray]] = {}
        todo = []
        for cid in dict.fromkeys(ids):
            if cid in self._inflight:
                futures[cid] = self._inflight[cid]
            elif cid not in self._cache:
                todo.append(cid)
        step = max(1, self.source.max_batch)
        for k in range(0, len(todo), step):
            chunk = {cid: Future[np.ndarray]() for cid in todo[k : k + step]}
            self._inflight.update(chunk)
            futures.update(chunk)
            self.pool.submit(self._fetch_into_cache, chunk)
        return futures

    def _fetch_into_cache(self, futures: dict[str, Future[np.ndarray]]) -> None:
        """Fetch the clips of ``futures``, caching and resolving each as it arrives; a
        failure goes to every future not yet resolved (a DatasiteError, never pixels)."""

        def deliver(cid: str, arr: np.ndarray) -> None:
            self._cache.put(cid, arr)
            with self._lock:
                self._inflight.pop(cid, None)
            futures[cid].set_result(arr)

        ids = list(futures)
        try:
            self.source.fetch_each(ids, deliver)
        except BaseException as exc:
            self._fail(futures, exc)
            return
        self._fail(futures, RuntimeError(f"the source did not deliver all of {len(ids)} clips"))

    def _fail(self, futures: dict[str, Future[np.ndarray]], exc: BaseException) -> None:
        with self._lock:
            for cid, fut in futures.items():
                if self._inflight.get(cid) is fut:
                    del self._inflight[cid]
        for fut in futures.values():
            if not fut.done():
                fut.set_exception(exc)

    def _arrays(self, ids: list[str]) -> list[np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for cid in ids:
                arr = self._cache.get(cid, touch=False)  # fetched-ahead clips are evicted last
                if arr is not None:
                    found[cid] = arr
            futures = self._start([c for c in ids if c not in found])
        for cid, fut in futures.items():  # a failed fetch raises its DatasiteError here
            found[cid] = fut.result()
        return [found[c] for c in ids]

    def close(self) -> None:
        """Stop the fetching threads, drop the cache and close the source.

        Clips still waited for (their fetch was cancelled) raise ``DatasiteError``.
        """
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        with self._lock:
            orphans = dict(self._inflight)
        self._fail(orphans, DatasiteError("the clip dataset was closed before this clip came"))
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
    yielded :meth:`ClipDataset.ahead_batches` batches (a byte bound) behind the
    wrapped sampler, or ``depth`` batches plus one request's worth if ``depth`` is given.

    Args:
        batches: any sampler yielding lists of indices (e.g. ``BatchSampler``).
        dataset: the :class:`ClipDataset` to prefetch into.
        depth: a fixed number of batches on their way beyond the one being grouped
            (``None``: bounded by bytes).
    """

    def __init__(self, batches: Iterable[list[int]], dataset: ClipDataset,
                 depth: int | None = None) -> None:  # fmt: skip
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
                lead = (self.dataset.ahead_batches(len(batch)) if self.depth is None
                        else self.depth + -(-group // max(1, len(batch))))  # fmt: skip
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


def _rows(arrays: list[np.ndarray]) -> list[torch.Tensor]:
    """Private, writable copies of ``arrays``: views of the rows of one new batch tensor
    when all have one shape (one copy each, one allocation), else one tensor each."""
    if not arrays or any(a.shape != arrays[0].shape or a.dtype != arrays[0].dtype
                         for a in arrays):  # fmt: skip
        return [torch.from_numpy(np.array(a)) for a in arrays]
    batch = np.empty((len(arrays), *arrays[0].shape), dtype=arrays[0].dtype)
    for k, a in enumerate(arrays):
        batch[k] = a
    return list(torch.from_numpy(batch).unbind(0))


def _whole(tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The batch tensor whose rows ``tensors`` are, in order and all of it (see
    :func:`_rows`), as one tensor sharing their memory; ``None`` if they are not."""
    first = tensors[0]
    if first.device.type != "cpu" or first.requires_grad or first.storage_offset() != 0:
        return None
    storage, n = first.untyped_storage(), first.numel()
    if storage.nbytes() != len(tensors) * n * first.element_size():
        return None
    for k, t in enumerate(tensors):
        if (t.shape != first.shape or t.dtype != first.dtype or not t.is_contiguous()
                or t.requires_grad or t.untyped_storage().data_ptr() != storage.data_ptr()
                or t.storage_offset() != k * n):  # fmt: skip
            return None
    size, stride = (len(tensors), *first.shape), (n, *first.stride())
    return torch.empty(0, dtype=first.dtype).set_(storage, 0, size, stride)


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


def collate_tensors(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(N, *shape)`` of same-shape tensors: the batch they are the rows of, when they
    are exactly the rows of one (what :meth:`ClipDataset.__getitems__` makes; no copy),
    else :func:`stack`."""
    whole = _whole(tensors) if tensors else None
    return whole if whole is not None else stack(tensors)


def collate_clips(items: Sequence[Item]) -> tuple[Any, dict[str, Any]]:
    """Collate ``(tensor, meta)`` items: tensors by :func:`collate_tensors` (no copy for
    the rows of one batch), meta by torch's default."""
    xs = [x for x, _ in items]
    tensors = all(isinstance(x, torch.Tensor) for x in xs)
    batch = collate_tensors(xs) if tensors else default_collate(xs)
    return batch, default_collate([m for _, m in items])


def make_loader(dataset: ClipDataset, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                sampler: Sampler[int] | None = None, depth: int | None = None,
                drop_last: bool = False) -> DataLoader[Item]:  # fmt: skip
    """A single-process DataLoader whose batches are prefetched ahead (see
    :class:`PrefetchBatchSampler`: by default as far as ``dataset.ahead`` of its cache).

    Args:
        dataset: the clips.
        batch_size: clips per batch.
        shuffle: random order (ignored when ``sampler`` is given), seeded by ``seed``.
        sampler: e.g. a ``DistributedSampler`` (call ``loader.batch_sampler.set_epoch``).
        depth: a fixed number of batches fetched ahead (``None``: bounded by bytes).
        drop_last: drop a final short batch.
    """
    if sampler is None:
        gen = torch.Generator().manual_seed(seed)
        sampler = RandomSampler(dataset, generator=gen) if shuffle else _Sequential(dataset)
    batches = PrefetchBatchSampler(BatchSampler(sampler, batch_size, drop_last), dataset, depth)
    return DataLoader(dataset, batch_sampler=batches, num_workers=0, collate_fn=collate_clips)
