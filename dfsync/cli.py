"""The ``dfsync`` command line."""

from __future__ import annotations

import typer

app = typer.Typer(help="dfsync: keep a destination in sync with your data.", no_args_is_help=True,
                  add_completion=False)


@app.command()
def demo(
    directory: str = typer.Option("dfsync-demo", help="where to put the demo workspace and warehouse"),
    data: str = typer.Option(None, help="the sample data directory (default: ./data)"),
) -> None:
    """Run a real two-run sync of the sample data into a DuckDB file and show what happened."""
    from .demo import run_demo

    raise typer.Exit(run_demo(directory, data))


@app.callback()
def _root() -> None:
    """dfsync: keep a destination in sync with your data."""


def main() -> None:
    app()
