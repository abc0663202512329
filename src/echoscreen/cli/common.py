"""What every command module shares: the two consoles, the ``--site`` option, name checks."""

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


def dataset_name(value: str | None) -> str | None:
    """typer callback of an option or argument naming a dataset to write (ingest, grant, split).

    The rule is the data server's (:func:`echoscreen.datasite.access.valid_dataset_name`):
    a name it would refuse on the wire (``../x``, slashes, control characters) is refused
    here, before anything is stored under it.
    """
    from echoscreen.datasite.access import valid_dataset_name

    if value is not None and not valid_dataset_name(value):
        raise typer.BadParameter(
            f"{value!r} is not a dataset name: use 1-128 letters, digits, spaces, '.', '-' and "
            "'_', starting with a letter or digit, without '..'"
        )
    return value
