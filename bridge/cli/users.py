"""``bridge users``: the console's operator accounts. There is no default account: the
first password of each is printed once, here, and never stored in clear."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from bridge.cli.common import app, out, print_json, print_table
from bridge.runtime.wiring import Wiring

if TYPE_CHECKING:
    from bridge.services.operators import Operators

users_app = typer.Typer(help="Console accounts: add, list, disable, reset.", no_args_is_help=True)
app.add_typer(users_app, name="users")
ACTOR = "cli"


def _operators(ctx: typer.Context) -> Operators:
    context: Wiring = ctx.obj
    return context.operators()


@users_app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Lowercase letters, digits, '.', '_', '-'.")],
    role: Annotated[str, typer.Option(help="viewer (reads), operator (acts), admin (users).")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Add an account; its first password is printed once."""
    password = _operators(ctx).add(name, role, ACTOR)
    _show_password(name, password, as_json, "added")


@users_app.command("list")
def list_users(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Every account, its role and whether it is disabled."""
    accounts = _operators(ctx).accounts()
    if as_json:
        print_json({"users": accounts})
        return
    rows = [
        [a["name"] or "", a["role"] or "", (a["created_at"] or "")[:19],
         f"disabled {(a['disabled_at'] or '')[:19]}" if a["disabled_at"] else "active"]
        for a in accounts
    ]  # fmt: skip
    print_table(
        ["name", "role", "created", "state"], rows, empty="no console accounts: bridge users add"
    )


@users_app.command("disable")
def disable(ctx: typer.Context, name: str) -> None:
    """No more sign-ins; the account's sessions end at their next request."""
    _operators(ctx).disable(name, ACTOR)
    out.print(f"account {name} disabled", markup=False, highlight=False)


@users_app.command("reset")
def reset(
    ctx: typer.Context,
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """A new password, printed once; enables the account again and lifts its lockout."""
    password = _operators(ctx).reset(name, ACTOR)
    _show_password(name, password, as_json, "reset")


def _show_password(name: str, password: str, as_json: bool, done: str) -> None:
    if as_json:
        print_json({"name": name, "password": password})
        return
    out.print(
        f"account {name} {done}; its password (shown once, not stored): {password}",
        markup=False,
        highlight=False,
    )
