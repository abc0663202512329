"""A thread-safe LRU cache of numpy arrays bounded in bytes (memory only, never disk)."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np


class ByteLRU:
    """Least-recently-used cache of arrays whose total ``nbytes`` stays under a bound.

    Args:
        max_bytes: the bound; 0 disables caching (every ``put`` is dropped).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: str, *, touch: bool = True) -> np.ndarray | None:
        """The cached array, or ``None``; ``touch`` marks it most recently used (without
        it, arrays leave in the order they came: first in, first out)."""
        with self._lock:
            arr = self._items.get(key)
            if arr is not None and touch:
                self._items.move_to_end(key)
            return arr

    def put(self, key: str, arr: np.ndarray) -> None:
        """Cache ``arr``, evicting least recently used arrays to stay under the bound."""
        if arr.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
            self._items[key] = arr
            self.nbytes += arr.nbytes
            while self.nbytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.nbytes -= dropped.nbytes

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._items.clear()
            self.nbytes = 0
