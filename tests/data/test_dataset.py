"""ClipDataset over the local site and over the real mTLS data server; nothing persisted."""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import select
from tests.datasite.sitefix import SHAPE, Served

from echoscreen.data import ClipDataset, LocalSite, RemoteSite, make_loader
from echoscreen.data.cache import ByteLRU
from echoscreen.data.dataset import collate_clips, stack
from echoscreen.errors import DatasiteError
from echoscreen.store.schema import Clip


def test_local_dataset_items_are_the_stored_tensors(served: Served) -> None:
    truth = served.truth["cohort-a"]
    with ClipDataset(LocalSite(served.site.path), "cohort-a", None) as ds:
        assert len(ds) == len(truth)
        x, meta = ds[0]
        assert x.dtype == torch.uint8 and tuple(x.shape) == SHAPE
        assert np.array_equal(x.numpy(), truth[meta["clip"]])
        assert set(meta) == {"clip", "study", "split", "label", "label_index", "view", "doppler"}
        assert {m["label_index"] for _, m in ds.__getitems__(range(len(ds)))} == {-1, 0, 1, 2}
        x[:] = 0  # items are private copies: the cache is not changed
        assert np.array_equal(ds[0][0].numpy(), truth[meta["clip"]])


def test_remote_dataset_matches_local_clip_for_clip(served: Served) -> None:
    local = ClipDataset(LocalSite(served.site.path), "cohort-a", None)
    remote = ClipDataset(RemoteSite(served.url, served.ids["alice"]), "cohort-a", None,
                         transform=lambda t: t.float() / 255)  # fmt: skip
    with local, remote:
        assert [c.id for c in remote.clips] == [c.id for c in local.clips]
        both = zip(local.__getitems__(range(len(local))),
                   remote.__getitems__(range(len(remote))), strict=True)  # fmt: skip
        for (xl, ml), (xr, mr) in both:
            assert ml == mr and xr.dtype == torch.float32
            assert torch.equal(xr, xl.float() / 255)


def test_both_sources_hand_clips_over_one_by_one_in_order(served: Served) -> None:
    truth = served.truth["cohort-a"]
    ids = sorted(truth)[:5][::-1]
    for source in (LocalSite(served.site.path), RemoteSite(served.url, served.ids["alice"])):
        try:
            handed: list[tuple[str, np.ndarray]] = []
            source.fetch_each(ids, lambda cid, arr, h=handed: h.append((cid, arr)))
            assert [cid for cid, _ in handed] == ids
            assert all(np.array_equal(arr, truth[cid]) for cid, arr in handed)
            assert [a.tobytes() for a in source.fetch(ids)] == [a.tobytes() for _, a in handed]
            handed.clear()
            with pytest.raises(DatasiteError):  # an unknown id: nothing is handed over
                source.fetch_each([ids[0], "1.2.3.4.999"], lambda c, a, h=handed: h.append((c, a)))
            assert handed == []
        finally:
            source.close()


def test_loader_prefetches_batches_into_the_memory_cache(served: Served) -> None:
    ds = ClipDataset(RemoteSite(served.url, served.ids["alice"]), "cohort-a", None)
    with ds:
        ds.prefetch(range(3))
        loader = make_loader(ds, batch_size=3, shuffle=True, seed=1, depth=2)
        seen = []
        for x, meta in loader:
            assert x.shape[1:] == SHAPE and x.dtype == torch.uint8
            seen += meta["clip"]
        assert sorted(seen) == sorted(served.truth["cohort-a"])
        assert len(ds._cache) == len(ds)  # everything went through the cache, in memory


def test_collate_stacks_like_torch_and_keeps_meta() -> None:
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randint(0, 256, (3, 4, 8, 8), dtype=torch.uint8, generator=gen) for _ in range(3)]
    floats = [x.float() / 255 for x in xs]
    metas = [{"clip": f"c{i}", "label_index": i - 1} for i in range(3)]
    batch, meta = collate_clips(list(zip(xs, metas, strict=True)))
    assert torch.equal(batch, torch.stack(xs)) and batch.dtype == torch.uint8
    assert meta["clip"] == ["c0", "c1", "c2"] and meta["label_index"].tolist() == [-1, 0, 1]
    assert torch.equal(stack(floats), torch.stack(floats))
    leaf = floats[0].clone().requires_grad_()
    assert stack([leaf, floats[1]]).requires_grad  # autograd keeps torch.stack


def test_cache_is_bounded_in_bytes() -> None:
    cache = ByteLRU(3 * 1000)
    for i in range(5):
        cache.put(str(i), np.zeros(1000, np.uint8))
    assert cache.nbytes <= 3000 and "0" not in cache and "4" in cache
    cache.get("2")
    cache.put("5", np.zeros(1000, np.uint8))
    assert "2" in cache and "3" not in cache


def test_remote_dataset_pickles_for_worker_processes(served: Served) -> None:
    ds = ClipDataset(RemoteSite(served.url, served.ids["alice"]), "cohort-a", "unsplit")
    ds[0]
    copy = pickle.loads(pickle.dumps(ds))
    with ds, copy:
        assert len(copy._cache) == 0
        assert torch.equal(copy[1][0], ds[1][0])


def test_remote_errors_are_clear(served: Served, tmp_path: Path) -> None:
    with pytest.raises(DatasiteError, match="pki issue"):
        RemoteSite(served.url, tmp_path)
    with pytest.raises(DatasiteError, match="https://"):
        RemoteSite(served.url.replace("https", "http"), served.ids["alice"])
    with pytest.raises(DatasiteError, match="404"):
        ClipDataset(RemoteSite(served.url, served.ids["alice"]), "cohort-b", None)
    with pytest.raises(DatasiteError, match="identity is from another site"):
        RemoteSite(served.url, served.ids["foreign"]).datasets()
    with pytest.raises(DatasiteError, match="no dataset"):
        ClipDataset(LocalSite(served.site.path), "nope", None)


@pytest.mark.parametrize("broken", ["another tenant's key", "not PEM", "CA not PEM"])
def test_an_identity_bundle_that_cannot_load_is_named(served: Served, tmp_path: Path,
                                                      broken: str) -> None:  # fmt: skip
    import shutil

    bundle = tmp_path / "id"
    shutil.copytree(served.ids["alice"], bundle)
    if broken == "another tenant's key":
        shutil.copy(served.ids["bob"] / "client.key", bundle / "client.key")
        why = "client.key is not the key of its client.crt"
    else:
        (bundle / ("ca.crt" if broken.startswith("CA") else "client.key")).write_text("junk\n")
        why = "not a PEM certificate or key"
    with pytest.raises(DatasiteError, match=f"identity in {bundle}: .*{why}.*pki issue"):
        RemoteSite(served.url, bundle).datasets()


def _new_files(roots: list[Path], since: float) -> list[Path]:
    found = []
    for root in roots:
        for dirpath, dirnames, files in os.walk(root, onerror=lambda e: None):
            dirnames[:] = [d for d in dirnames if d not in {"proc", ".git"}]
            for f in files:
                p = Path(dirpath) / f
                try:
                    st = p.lstat()
                except OSError:
                    continue
                if p.is_file() and not p.is_symlink() and st.st_mtime >= since and \
                        st.st_size < 256 << 20:  # fmt: skip
                    found.append(p)
    return found


def test_training_from_remote_persists_nothing_decrypted(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "compute"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    t0 = time.time() - 1
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv3d(3, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool3d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 3),
    )  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ds = ClipDataset(RemoteSite(served.url, served.ids["alice"]), "cohort-a", None,
                     transform=lambda t: t.float().div(255))  # fmt: skip
    with ds:
        losses = []
        for _ in range(2):
            for x, meta in make_loader(ds, batch_size=4, shuffle=True):
                y = meta["label_index"].clamp(min=0)
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
    assert len(losses) == 4 and all(np.isfinite(losses))
    # what a leak would look like: any 64 pixel bytes of any clip served, 64 bytes of a
    # compressed clip as it travelled (zstd, as stored), or an .npy header
    needles = [a.tobytes()[40_000:40_064] for a in served.truth["cohort-a"].values()]
    with served.site.catalog.session() as s:
        oids = s.scalars(select(Clip.tensor_object).where(
            Clip.id.in_(served.truth["cohort-a"]), Clip.tensor_codec == "zstd")).all()  # fmt: skip
    frames = [served.site.objects.get(o) for o in oids]
    assert frames, "sitefix stores some clips compressed"
    needles += [f[len(f) // 2 : len(f) // 2 + 64] for f in frames]
    roots = [workdir, Path(tempfile.gettempdir()), Path.home()]
    leaks = []
    for p in _new_files(roots, t0):
        try:
            data = p.read_bytes()
        except OSError:
            continue
        if any(n in data for n in needles) or (p.is_relative_to(workdir) and b"NUMPY" in data):
            leaks.append(p)
    assert leaks == []
    assert list(workdir.iterdir()) == []
