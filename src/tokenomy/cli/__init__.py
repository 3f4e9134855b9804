"""The `tokenomy` command. Each area registers its own commands from its own module.

Modules import their heavy dependencies inside the command functions, so `tokenomy --help`
stays fast. User errors (TokenomyError) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import typer

from tokenomy.errors import TokenomyError

app = typer.Typer(
    name="tokenomy",
    help="Unit economics of LLM inference: gateway, metering, unit cost, planning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One module per area; each exposes register(app). Order is the order in --help.
_AREAS = ("gateway", "keys", "emulate", "perf", "cost", "costs", "catalog", "route", "fleet", "bench", "billing", "export")


def _register_all() -> None:
    import importlib

    for area in _AREAS:
        module = importlib.import_module(f"tokenomy.cli.{area}")
        module.register(app)


_register_all()


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"tokenomy {version('tokenomy')}")
        except PackageNotFoundError:  # running from a source tree that was never installed
            typer.echo("tokenomy (not installed)")
        raise typer.Exit()


@app.callback()
def _root(_version_flag: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                              help="Print the version and exit.")) -> None:
    """Unit economics of LLM inference: gateway, metering, unit cost, planning."""


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print one clear line to stderr and return an Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def main() -> None:
    try:
        app()
    except TokenomyError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
