"""``ByteBudget``: one bound on the study bytes the service holds in memory at once.

Every accepted job keeps its files in memory until it finishes, so without a bound
``queue_size`` jobs of ``max_upload_bytes`` each could be held (64 x 512 MiB = 32 GiB).
An upload takes a :class:`Hold` on the budget before its body is kept (its declared
Content-Length at once, else chunk by chunk as it arrives), grows it by the copies made
while the body is parsed (multipart parts, a zip's files: body and files are both alive
then), resizes it to the bytes of the files once the body is dropped, and hands it to the
job, which releases it when it finishes or
fails. A DICOM association of the C-STORE SCP grows its hold as each instance arrives
and splits it between the studies it delivers, each handed to its job likewise. A hold
that would take the total over the bound raises :class:`OverloadedError` (503,
Retry-After; 0xA700 for a C-STORE): the upload is refused, nothing accepted is lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from echoscreen.errors import OverloadedError, ServiceError

#: seconds a refused client is told to wait
RETRY_AFTER = 5


def mib(n: int) -> str:
    """``n`` bytes in MiB for a message: whole MiB as such, else to 0.1 MiB (0.1 at least,
    so a few bytes never read as "0 MiB")."""
    if n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    return f"{max(n / (1 << 20), 0.1):.1f} MiB"


class ByteBudget:
    """A thread-safe count of held bytes, refused past ``limit``.

    Args:
        limit: most bytes held at once (``ServiceConfig.max_queued_bytes``).
        on_change: called with the new total after every change (a metrics gauge).
    """

    def __init__(self, limit: int, on_change: Callable[[int], None] | None = None) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()
        self._on_change = on_change

    @property
    def used(self) -> int:
        """Bytes held now."""
        with self._lock:
            return self._used

    def hold(self, n: int = 0) -> Hold:
        """A new hold of ``n`` bytes (raises as :meth:`Hold.resize`)."""
        h = Hold(self)
        h.resize(n)
        return h

    def _change(self, delta: int) -> None:
        with self._lock:
            if delta > 0 and self._used + delta > self.limit:
                raise OverloadedError(
                    f"the service holds {mib(self._used)} of studies not yet screened; "
                    f"{mib(delta)} more would pass its limit of {mib(self.limit)}; "
                    "retry shortly", retry_after=RETRY_AFTER,
                )  # fmt: skip
            self._used += delta
            used = self._used
        if self._on_change is not None:
            self._on_change(used)


class Hold:
    """Bytes held on a :class:`ByteBudget` for one upload or job (0 once released)."""

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.n = 0
        #: the job that owns the hold once the engine accepted it (it releases it then)
        self.job: str | None = None

    def resize(self, n: int) -> None:
        """Hold ``n`` bytes instead of :attr:`n`.

        Raises:
            OverloadedError: growing would take the budget over its limit (503; the hold
                keeps its old size).
            ServiceError: 413 when ``n`` alone is more than the limit.
        """
        limit = self.budget.limit
        if n > limit:  # would never fit: not a matter of waiting
            raise ServiceError(f"the study is {mib(n)}, more than the {mib(limit)} "
                               "the service holds at once; send a smaller study", 413)
        self.budget._change(n - self.n)
        self.n = n

    def split(self, n: int) -> Hold:
        """A new hold of ``n`` of this hold's bytes, which this one no longer holds (the
        total is unchanged: each study of a DICOM association takes its share along)."""
        if not 0 <= n <= self.n:
            raise ValueError(f"cannot split {n} bytes off a hold of {self.n}")
        part = Hold(self.budget)
        self.n -= n
        part.n = n
        return part

    def release(self) -> None:
        """Give the bytes back (idempotent)."""
        self.resize(0)
