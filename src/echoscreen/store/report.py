"""Rich renderings of a site for the command line: summary, study detail, failures, progress."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from echoscreen.store.catalog import StudyDetail
from echoscreen.store.objects import Progress as ProgressFn


def _counts(title: str, column: str, counts: dict[Any, int]) -> Table:
    table = Table(title=title)
    table.add_column(column)
    table.add_column("n", justify="right")
    for key, n in sorted(counts.items(), key=lambda kv: (kv[0] is None, str(kv[0]))):
        table.add_row("-" if key is None else str(key), str(n))
    return table


def summary_tables(summary: dict[str, Any]) -> list[Table]:
    """Tables for ``Site.summary()``: totals, labels, views, datasets with their splits."""
    totals = Table(title="site")
    totals.add_column("item")
    totals.add_column("value", justify="right")
    for key in ("studies", "patients", "clips", "objects", "quarantined", "active_key"):
        if key in summary:
            totals.add_row(key, str(summary[key]))
    datasets = Table(title="datasets")
    for col in ("dataset", "studies", "train", "val", "test", "unsplit"):
        datasets.add_column(col, justify="left" if col == "dataset" else "right")
    for name, info in summary["datasets"].items():
        sp = info["splits"]
        counts = [sp.get(k, 0) for k in ("train", "val", "test", None)]
        datasets.add_row(name, str(info["studies"]), *map(str, counts))
    return [
        totals,
        _counts("labels (studies)", "label", summary["labels"]),
        _counts("views (clips)", "view", summary["views"]),
        datasets,
    ]


def study_tables(detail: StudyDetail) -> list[Table]:
    """Tables for one study: its attributes and datasets, then one row per clip."""
    st = detail.study
    info = Table(title=f"study {st.id}")
    info.add_column("field")
    info.add_column("value")
    fields = ("patient", "label", "sex", "age_years", "weight_kg", "height_cm", "n_clips")
    for name in (*fields, "source_kind", "ingested_at"):
        value = getattr(st, name)
        info.add_row(name, "-" if value is None else str(value))
    for ds, split in detail.datasets:
        info.add_row("dataset", f"{ds} ({split or 'unsplit'})")
    clips = Table(title="clips")
    for col in ("clip", "view", "doppler", "frames", "fps", "size", "syntax", "tensor", "findings"):
        clips.add_column(col)
    for c in detail.clips:
        clips.add_row(
            c.id[:24], c.view or "-", "-" if c.doppler is None else str(c.doppler),
            str(c.n_frames), f"{c.fps:g}", f"{c.rows}x{c.cols}", c.transfer_syntax,
            c.tensor_shape, c.findings or "-",
        )  # fmt: skip
    return [info, clips]


def failures_table(failures: list[tuple[str, str]]) -> Table:
    """A table of ``(what, reason)`` verification failures."""
    table = Table(title=f"{len(failures)} failure(s)")
    table.add_column("object")
    table.add_column("reason")
    for what, reason in failures:
        table.add_row(what, reason)
    return table


@contextmanager
def progress_bar(console: Console, description: str) -> Iterator[ProgressFn]:
    """A rich progress bar, exposed as the ``(done, total)`` callback the store takes."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
