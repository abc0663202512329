"""Clip datasets for training, over a local site or a remote data server.

``ClipDataset(source, dataset, split, transform=None)`` is a torch Dataset whose
items are ``(uint8 tensor (3, T, S, S), meta dict)``; ``source`` is a
``LocalSite(path)`` (compute at the data site) or a ``RemoteSite(url, identity_dir)``
(a data server over mutual TLS). ``make_loader`` adds batch prefetching.

The names are loaded on first use so that importing ``echoscreen.data.remote``
(e.g. for ``datasite ls``) does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["ClipDataset", "ClipInfo", "LocalSite", "PrefetchBatchSampler", "RemoteSite",
           "make_loader"]  # fmt: skip

_HOME = {
    "ClipDataset": "echoscreen.data.dataset",
    "PrefetchBatchSampler": "echoscreen.data.dataset",
    "make_loader": "echoscreen.data.dataset",
    "ClipInfo": "echoscreen.data.sources",
    "LocalSite": "echoscreen.data.sources",
    "RemoteSite": "echoscreen.data.remote",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(import_module(_HOME[name]), name)
    raise AttributeError(f"module 'echoscreen.data' has no attribute {name!r}")
