"""``echoscreen evaluate RUN``: metrics, confidence intervals and an HTML report for a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from echoscreen.cli.common import console, out


def _fmt(e: dict[str, Any] | None) -> str:
    if e is None or e.get("value") is None:
        return f"[dim]n/a ({e.get('reason') if e else 'not computed'})[/]"
    ci = e.get("ci")
    return f"{e['value']:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def _rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    if m["task"] == "view":
        return [
            ("clips", str(m["n_clips"])),
            ("view accuracy", _fmt(m["view_accuracy"])),
            ("view top-label ECE", _fmt(m["view_calibration"]["ece"])),
            ("Doppler accuracy", _fmt(m["doppler_accuracy"])),
            ("Doppler AUROC", _fmt(m["doppler"]["auroc"])),
        ]
    op = m["operating_point"]
    thr = op.get("threshold")
    rows = [
        ("studies (prevalence)", f"{m['n_studies']} ({m['prevalence'] or 0:.3f})"),
        ("AUROC", _fmt(m["auroc"])),
        ("average precision", _fmt(m["average_precision"])),
        ("operating point", f"{thr:.4f} (from validation)" if thr is not None else op["reason"]),
        ("sensitivity", _fmt(m["sensitivity"])),
        ("specificity", _fmt(m["specificity"])),
        ("ECE", _fmt(m["calibration"]["ece"])),
    ]
    for attr, table in m["subgroups"].items():
        for rate in ("fnr", "fpr"):
            gap = table["parity"][rate]["gap"]
            rows.append((f"{rate.upper()} gap by {attr}", "n/a" if gap is None else f"{gap:.3f}"))
    for name, e in m["aggregation"].items():
        rows.append((f"AUROC, {name} aggregation", _fmt(e["auroc"])))
    return rows


def evaluate_command(
    run: Path = typer.Argument(..., help="The run folder (holds predictions_{val,test}.json)."),
    split: str = typer.Option("test", "--split", help="Split to report on (val or test)."),
    n_boot: int = typer.Option(
        1000, "--bootstrap", min=10, max=100_000, help="Bootstrap replicates (10 to 100000)."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Bootstrap seed (>= 0)."),
    target: float = typer.Option(
        0.90, "--target-sensitivity", min=0.0, max=1.0, help="Operating point's sensitivity."
    ),
) -> None:
    """Evaluate a run: AUROC/AP with CIs, operating point, calibration, subgroups, report."""
    from rich.table import Table

    from echoscreen.evaluate import EvalConfig, evaluate_run

    with console.status(f"evaluating {run} ({split})"):
        m = evaluate_run(run, split, EvalConfig(n_boot=n_boot, seed=seed,
                                                target_sensitivity=target))  # fmt: skip
    table = Table(title=f"{m['task']} model, {split} split (95 % CI)")
    table.add_column("metric")
    table.add_column("value")
    for name, value in _rows(m):
        table.add_row(name, value)
    out.print(table)
    out.print(f"report: {run / m['report']}")
    out.print(f"metrics: {run / 'metrics.json'}")
