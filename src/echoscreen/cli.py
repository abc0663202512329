"""The ``echoscreen`` command line: parses arguments into config objects and calls library code.

Every command is thin. Errors derived from :class:`echoscreen.errors.EchoscreenError`
are printed as one red line with the hint they carry, and the process exits
non-zero; they never surface as a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from echoscreen import __version__
from echoscreen.errors import EchoscreenError

app = typer.Typer(
    name="echoscreen",
    help="Rheumatic Heart Disease screening from echocardiograms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()


def _version(value: bool) -> None:
    if value:
        out.print(f"echoscreen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Rheumatic Heart Disease screening from echocardiograms."""


# ---- demo ---------------------------------------------------------------------------------


@app.command()
def demo(
    workdir: Path = typer.Option(
        Path("demo-work"), "--workdir", help="Folder for everything the demo makes."
    ),
) -> None:
    """Run the main job end to end on embedded defaults."""
    from echoscreen.demo import DemoConfig, run_demo

    run_demo(DemoConfig(workdir=workdir), out)


# ---- synth (phantom) ----------------------------------------------------------------------

# ---- dicom --------------------------------------------------------------------------------


def main() -> None:
    """Console-script entry point: run the app, turning echoscreen errors into clean exits."""
    try:
        app(standalone_mode=False)
    except EchoscreenError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.print("[yellow]aborted[/]")
        sys.exit(1)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
