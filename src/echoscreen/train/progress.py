"""Rich progress bars of a run (shown by rank 0 only; a no-op elsewhere)."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Bars:
    """A rich ``Progress`` on stderr when ``enabled``; :meth:`task` returns an advance callback.

    Args:
        enabled: show bars (False: every method is a no-op).
    """

    def __init__(self, enabled: bool) -> None:
        self.progress: Progress | None = None
        if enabled:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(),
                                     console=Console(stderr=True))  # fmt: skip

    def task(self, description: str, total: int) -> Callable[[int], None] | None:
        """Add a bar; returns ``advance(n)`` (None when disabled)."""
        if self.progress is None:
            return None
        tid = self.progress.add_task(description, total=total)
        progress = self.progress
        return lambda n: progress.advance(tid, n)

    def __enter__(self) -> Bars:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        if self.progress is not None:
            self.progress.stop()
