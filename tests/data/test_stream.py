"""ClipDataset takes each clip as soon as it arrives, and fetches ahead by bytes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tests.datasite.sitefix import SHAPE, Served, tamper

from echoscreen.data import ClipDataset, RemoteSite, make_loader
from echoscreen.data.cache import ByteLRU
from echoscreen.errors import DatasiteError


def test_clips_before_a_broken_one_are_used_the_broken_one_raises(served: Served) -> None:
    with ClipDataset(RemoteSite(served.url, served.ids["alice"]), "cohort-t", None) as ds:
        tamper(served.site, ds.clips[1].id)
        ds.prefetch([0, 1])  # one request for both; its second clip fails at the site
        x, meta = ds[0]
        assert np.array_equal(x.numpy(), served.truth["cohort-t"][meta["clip"]])
        with pytest.raises(DatasiteError, match="cut its answer short"):
            ds[1]
        assert ds.clips[1].id not in ds._cache and not ds._inflight


def test_loader_fetches_ahead_within_a_fraction_of_the_cache(served: Served) -> None:
    clip = math.prod(SHAPE) + 128  # .npy bytes of one clip
    truth = served.truth["cohort-a"]
    src = RemoteSite(served.url, served.ids["alice"])
    with ClipDataset(src, "cohort-a", None, cache_bytes=8 * clip, ahead=0.75) as ds:
        assert ds.ahead_batches(2) == 3  # 6 of the cache's 8 clips, in batches of 2
        assert ds.ahead_batches(8) == 2  # never under one request + one batch
        seen = []
        for x, meta in make_loader(ds, batch_size=2):
            seen += meta["clip"]
            assert all(np.array_equal(a.numpy(), truth[c])
                       for a, c in zip(x, meta["clip"], strict=True))  # fmt: skip
            assert ds._cache.nbytes <= 8 * clip
        assert sorted(seen) == sorted(truth)


def test_cache_without_touch_evicts_in_arrival_order() -> None:
    cache = ByteLRU(3 * 1000)
    for i in range(3):
        cache.put(str(i), np.zeros(1000, np.uint8))
    assert cache.get("0", touch=False) is not None
    cache.put("3", np.zeros(1000, np.uint8))
    assert "0" not in cache and "1" in cache  # reading "0" did not keep it


def test_closing_fails_clips_still_on_their_way(served: Served) -> None:
    ds = ClipDataset(RemoteSite(served.url, served.ids["alice"]), "cohort-a", None, workers=1)
    ids = [c.id for c in ds.clips]
    with ds._lock:  # two requests behind one worker; closing may cancel the second
        futures = {**ds._start(ids[:4]), **ds._start(ids[4:])}
    ds.close()
    assert futures and all(f.done() for f in futures.values()) and not ds._inflight
    for cid, f in futures.items():  # each came whole, or raises: never waits forever
        err = f.exception()
        assert isinstance(err, DatasiteError) if err else np.array_equal(
            f.result(), served.truth["cohort-a"][cid])  # fmt: skip
