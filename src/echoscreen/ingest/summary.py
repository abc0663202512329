"""Rich tables and warnings that summarise an ingest run for the command line."""

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


def report_warnings(report: IngestReport, *, max_lines: int = 10) -> list[str]:
    """One line per labels.csv / clips.csv whose rows matched nothing the run read.

    Rows are named by line number, never by their (original, identifying) UIDs; at most
    ``max_lines`` numbers are listed, then how many more.
    """
    warnings = []
    for miss in report.unmatched:
        n, what, many = len(miss.lines), miss.rows.what, len(miss.lines) > 1
        shown = ", ".join(map(str, miss.lines[:max_lines]))
        more = f" and {n - max_lines} more" if n > max_lines else ""
        others = "studies" if what == "study" else "clips"
        warnings.append(
            f"{n} {'rows' if many else 'row'} of {miss.rows.path} "
            f"{'match' if many else 'matches'} no {what} of this ingest: "
            f"{'lines' if many else 'line'} {shown}{more}; check {'their' if many else 'its'} "
            f"{miss.rows.key} (the file may also list {others} of other sources)"
        )
    return warnings
