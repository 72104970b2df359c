"""What every command module shares: the Typer app, the console, JSON output."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import typer
from rich.console import Console

app = typer.Typer(
    name="bridge",
    help="Keeps your CRMs honest about GDPR.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)


def print_json(value: Any) -> None:
    """One JSON object on stdout: the ``--json`` output of every command."""
    print(json.dumps(value, ensure_ascii=False, default=str))


_ONE_LINE = str.maketrans("\t\n\r", "   ")  # a value never breaks a tab-separated line


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    empty: str,
    title: str | None = None,
    bold: Callable[[Sequence[str]], bool] | None = None,
) -> None:
    """Every table of every command. On a terminal, a rich table whose long values fold onto
    further lines, never cut; anywhere else (a pipe, a file), a header line and one line per
    row, tab-separated, every value whole, for ``grep``, ``cut -f`` and spreadsheets. No rows:
    the line ``empty`` instead, saying so. ``bold`` picks rows to stress on a terminal."""
    if title is not None:
        out.print(title, markup=False, highlight=False)
    if not rows:
        out.print(empty, markup=False, highlight=False)
        return
    if not out.is_terminal:
        for row in (columns, *rows):
            print("\t".join(value.translate(_ONE_LINE) for value in row))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        # Text, not str: a value is never read as rich markup.
        table.add_row(*(Text(value) for value in row), style="bold" if bold and bold(row) else None)
    out.print(table)
