"""What every command module shares: the two consoles and the ``--site`` option."""

from __future__ import annotations

import typer
from rich.console import Console

#: messages, progress and errors
console = Console(stderr=True)
#: results (tables, identifiers) that a script may capture
out = Console()

SITE_OPTION = typer.Option(
    ..., "--site", envvar="ECHOSCREEN_SITE", help="The site folder (or $ECHOSCREEN_SITE)."
)
