"""Rich tables that summarise an ingest run for the command line."""

from __future__ import annotations

from collections import Counter

from rich.table import Table

from echoscreen.ingest.pipeline import IngestReport


def report_tables(report: IngestReport, source: str, *, max_refs: int = 20) -> list[Table]:
    """The run's totals, and the quarantine grouped by reason.

    Args:
        report: what :func:`echoscreen.ingest.pipeline.ingest` returned.
        source: the source description for the title.
        max_refs: list at most this many quarantine references.
    """
    totals = Table(title=f"Ingest of {source}")
    for col in ("ingested", "skipped", "quarantined", "clips", "seconds", "studies/min"):
        totals.add_column(col, justify="right")
    rate = 60.0 * report.ingested / report.seconds if report.seconds > 0 else 0.0
    totals.add_row(
        str(report.ingested),
        str(report.skipped),
        str(len(report.quarantined)),
        str(report.clips),
        f"{report.seconds:.1f}",
        f"{rate:.1f}",
    )
    tables = [totals]
    if report.quarantined:
        reasons = Counter(reason for _, reason in report.quarantined)
        why = Table(title="Quarantined (by reason)")
        why.add_column("files", justify="right")
        why.add_column("reason")
        for reason, n in reasons.most_common():
            why.add_row(str(n), reason)
        tables.append(why)
        refs = Table(title=f"Quarantine references (first {max_refs})")
        refs.add_column("reference")
        refs.add_column("reason")
        for ref, reason in report.quarantined[:max_refs]:
            refs.add_row(ref, reason)
        tables.append(refs)
    return tables
