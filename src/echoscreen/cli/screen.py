"""``echoscreen screen STUDY_PATH --registry DIR --model NAME:V [--json]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from echoscreen.cli.common import console, out, print_warning


def _pct(p: float | None) -> str:
    return "" if p is None else f"{p:.3f}"


def _print_table(doc: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"clips ({doc['model']}, {doc['backend']})")
    for col in ("#", "file", "view", "confidence", "doppler", "evidence", "attention", "p clip"):
        table.add_column(col)
    for c in doc["clips"]:
        table.add_row(str(c["index"]), escape(c["file"]), c["view"], f"{c['confidence']:.3f}",
                      f"{'yes' if c['doppler'] else 'no'} ({c['p_doppler']:.2f})",
                      "yes" if c["evidence"] else "", _pct(c["attention"]),
                      _pct(c["p_clip_screen"]))  # fmt: skip
    for s in doc["skipped"]:
        table.add_row("-", escape(s["file"]), f"[red]skipped: {escape(s['reason'])}[/]", "", "", "",
                      "", "")  # fmt: skip
    out.print(table)
    colour = {"screen-positive": "bold red", "normal": "bold green"}.get(doc["decision"], "yellow")
    line = f"decision: [{colour}]{doc['decision']}[/]"
    if doc["p_screen"] is not None:
        line += f"  p(screen-positive) = {doc['p_screen']:.3f} (threshold {doc['threshold']:.3f})"
        line += "  " + ", ".join(f"{k} {v:.2f}" for k, v in doc["p3"].items())
    else:
        line += f"  ({escape(doc['reason'])})"
    out.print(line)
    for w in doc["warnings"]:
        print_warning(w)


def screen_command(
    study: Path = typer.Argument(..., help="A study folder, a zip of one, or a DICOM file."),
    registry: Path = typer.Option(..., "--registry", help="The registry folder."),
    model: str = typer.Option(..., "--model", help="Package as NAME:VERSION."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    backend: str = typer.Option(
        "onnx", "--backend", help="onnx (default), torch (on a GPU when there is one) or auto."
    ),
) -> None:
    """Screen one study offline: per-clip views and the study decision (writes nothing)."""
    from echoscreen.screen import Screener

    screener = Screener.open(registry, model, backend=backend)
    with console.status("screening"):
        doc = screener.screen_path(study).to_json()
    if as_json:
        out.print_json(json.dumps(doc))
    else:
        _print_table(doc)
