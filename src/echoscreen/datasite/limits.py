"""Request bounds of the data server: batch size and a per-tenant token bucket.

A request costs one token per clip it returns (a listing costs one). Each tenant
has its own bucket of ``burst`` tokens refilled at ``rate`` tokens per second; a
request that finds too few tokens is refused with 429 and ``Retry-After`` (whole
seconds until enough tokens will be there) and costs nothing.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Bounds one server enforces.

    Attributes:
        max_batch: most clip ids one ``clips:batch`` request may name (413 above).
        rate: clips (tokens) per second each tenant may fetch on average.
        burst: bucket size: the most a tenant may fetch at once after a pause.
        max_body: largest request body accepted, in bytes (413 above).
    """

    max_batch: int = 64
    rate: float = 2000.0
    burst: float = 4000.0
    max_body: int = 64 * 1024


class RateLimiter:
    """One token bucket per tenant (thread-safe).

    Args:
        limits: rate and burst of every bucket.
        clock: monotonic time source in seconds (injectable for tests).
    """

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(limits.rate)
        self.burst = float(max(limits.burst, 1.0))
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at)

    def take(self, tenant: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens from ``tenant``'s bucket.

        Returns:
            0.0 when granted; otherwise the seconds to wait before retrying (nothing taken).
        """
        now = self._clock()
        cost = min(float(cost), self.burst)
        with self._lock:
            tokens, at = self._buckets.get(tenant, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= cost:
                self._buckets[tenant] = (tokens - cost, now)
                return 0.0
            self._buckets[tenant] = (tokens, now)
        return (cost - tokens) / self.rate if self.rate > 0 else math.inf
