"""What every command module shares: the two consoles, the ``--site`` option, name checks."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

#: messages, progress and errors
console = Console(stderr=True)
#: results (tables, identifiers) that a script may capture
out = Console()


def print_error(message: str) -> None:
    """One ``error: ...`` line on stderr, the message printed as it is.

    Not hard-wrapped: written to a file or a pipe (CI logs, a script's capture), a
    console of 80 columns would break long paths across lines, so neither a reader's
    copy-paste nor a ``grep`` finds them whole; a terminal wraps the line itself. Not
    read as markup: a path or id holding ``[...]`` is shown, not styled away.
    """
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_warning(message: str) -> None:
    """One ``warning: ...`` line on stderr, printed as :func:`print_error` prints errors."""
    console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


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
