"""The ``echoscreen`` command line: parses arguments into config objects and calls library code.

Every command is thin. Errors derived from :class:`echoscreen.errors.EchoscreenError`
are printed as one red line with the hint they carry, and the process exits
non-zero; they never surface as a traceback.
"""

from __future__ import annotations

import sys

import typer

from echoscreen import __version__
from echoscreen.cli import cluster, datasite, evaluate, files, ingest, site, train
from echoscreen.cli import publish as publish_cli
from echoscreen.cli import screen as screen_cli
from echoscreen.cli import serve as serve_cli
from echoscreen.cli.common import console, out, print_error
from echoscreen.errors import EchoscreenError

app = typer.Typer(
    name="echoscreen",
    help="Rheumatic Heart Disease screening from echocardiograms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


# Commands are registered here, explicitly; the modules only define them.
app.command()(files.demo)
app.command()(files.synth)
app.command()(files.inspect)
app.command("ingest")(ingest.ingest_command)
app.command("listen")(ingest.listen_command)
app.add_typer(site.site_app, name="site")
app.add_typer(datasite.pki_app, name="pki")
app.add_typer(datasite.datasite_app, name="datasite")
app.add_typer(train.train_app, name="train")
app.command("evaluate")(evaluate.evaluate_command)
app.command("publish")(publish_cli.publish_command)
app.command("screen")(screen_cli.screen_command)
app.add_typer(cluster.cluster_app, name="cluster")
app.command("sweep")(cluster.sweep_command)
app.command("serve")(serve_cli.serve_command)
app.add_typer(serve_cli.tokens_app, name="tokens")


def main() -> None:
    """Console-script entry point: run the app, turning echoscreen errors into clean exits."""
    from echoscreen.dicom.header import silence_value_warnings

    silence_value_warnings()  # commands read untrusted headers: never quote their values
    try:
        # Outside standalone mode click returns (not raises) the code of a typer.Exit.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except EchoscreenError as exc:
        print_error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.print("[yellow]aborted[/]")
        sys.exit(1)
    except typer.TyperException as exc:  # usage errors (bad option values) in non-standalone mode
        show = getattr(exc, "show", None)  # typer's bundled click exceptions render usage + hint
        if callable(show):
            show()
        else:
            print_error(exc.format_message())
        sys.exit(exc.exit_code)
    except Exception as exc:
        if not _environment_error(exc):
            raise
        print_error(_describe(exc))
        sys.exit(2)


def _environment_error(exc: BaseException) -> bool:
    """Errors of the machine, not of echoscreen: a path that is a file where a folder is
    wanted, a port in use, an unreadable key file, a damaged database, a malformed URL.
    They get one line and exit status 2 rather than a traceback."""
    if isinstance(exc, (typer.Exit, typer.Abort, typer.TyperException)):
        return False
    if isinstance(exc, OSError):
        return True
    return type(exc).__module__.split(".")[0] in {"sqlite3", "sqlalchemy", "httpx"}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or exc}: {exc.filename} ({type(exc).__name__})"
    first = (str(exc).splitlines() or [""])[0]
    if type(exc).__module__.startswith(("sqlite3", "sqlalchemy")):
        return f"a database file is damaged or not a database ({first}); restore it from backup"
    return f"{first} ({type(exc).__name__})"
