"""What every command module shares: the Typer app, the console, JSON output."""

from __future__ import annotations

import json
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
