"""Rich tables the CLI prints for the data server's commands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from echoscreen.datasite.schema import AuditRecord


def audit_table(records: Sequence[AuditRecord]) -> Table:
    """One row per audit record, refusals in red."""
    table = Table("seq", "at (UTC)", "who", "action", "target", "status", "bytes", "detail",
                  title="audit log")  # fmt: skip
    for r in records:
        style = "green" if r.allowed else "red"
        cells = [str(r.seq), r.at[:23], r.who, r.action, (r.target or "")[:60],
                 str(r.status or ""), str(r.nbytes), (r.detail or "")[:80]]  # fmt: skip
        table.add_row(*(Text(c, style=style if i == 5 else "") for i, c in enumerate(cells)))
    return table


def problems_table(problems: Sequence[tuple[int, str]]) -> Table:
    """The breaks :meth:`AuditLog.verify` found."""
    table = Table("seq", "problem", title="audit log verification failed")
    for seq, why in problems:
        table.add_row(str(seq) if seq else "-", Text(why, style="red"))
    return table


def datasets_table(datasets: Sequence[dict[str, Any]], title: str) -> Table:
    """Datasets with studies and clips per split."""
    table = Table("dataset", "split", "studies", "clips", title=title)
    for d in datasets:
        for split, n in sorted(d["splits"].items()):
            table.add_row(d["name"], split, str(n["studies"]), str(n["clips"]))
        if not d["splits"]:
            table.add_row(d["name"], "-", "0", "0")
    return table
