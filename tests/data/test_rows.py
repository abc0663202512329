"""A batch is copied once: items are rows of one private batch tensor, collate keeps it."""

from __future__ import annotations

import numpy as np
import torch
from tests.datasite.sitefix import SHAPE, Served

from echoscreen.data import ClipDataset, RemoteSite, make_loader
from echoscreen.data.dataset import collate_clips, collate_tensors


def test_loader_batches_are_private_and_collated_without_a_second_copy(served: Served) -> None:
    truth = served.truth["cohort-a"]
    with ClipDataset(RemoteSite(served.url, served.ids["alice"]), "cohort-a", None) as ds:
        items = ds.__getitems__([2, 0, 1])
        xs = [x for x, _ in items]
        batch, meta = collate_clips(items)
        assert batch.shape == (3, *SHAPE) and batch.dtype == torch.uint8
        assert batch.data_ptr() == xs[0].data_ptr()  # the items' own batch, not a copy
        for x, cid in zip(batch, meta["clip"], strict=True):
            assert np.array_equal(x.numpy(), truth[cid])
        batch.zero_()  # private: the cached clips (and the next read) are untouched
        again, meta2 = collate_clips(ds.__getitems__([2, 0, 1]))
        assert meta2["clip"] == meta["clip"]
        for x, cid in zip(again, meta["clip"], strict=True):
            assert np.array_equal(x.numpy(), truth[cid])
        seen = []
        for x, m in make_loader(ds, batch_size=3, shuffle=True, seed=2):
            seen += m["clip"]
            for row, cid in zip(x, m["clip"], strict=True):
                assert np.array_equal(row.numpy(), truth[cid])
        assert sorted(seen) == sorted(truth)


def test_rows_not_making_up_one_whole_batch_are_stacked(served: Served) -> None:
    with ClipDataset(RemoteSite(served.url, served.ids["alice"]), "cohort-a", None) as ds:
        xs = [x for x, _ in ds.__getitems__([0, 1, 2, 3])]
        for picked in (xs[:3], xs[1:], xs[::-1], [xs[0], xs[0]]):
            out = collate_tensors(picked)
            assert torch.equal(out, torch.stack(picked))
            assert out.untyped_storage().data_ptr() != xs[0].untyped_storage().data_ptr()
        assert collate_tensors(xs).data_ptr() == xs[0].data_ptr()
