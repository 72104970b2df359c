"""``bridge keys``: the keys that seal personal data held while work is in flight."""

from __future__ import annotations

from typing import Annotated

import typer

from bridge.cli.common import app, out, print_json
from bridge.errors import BridgeError
from bridge.runtime.wiring import Wiring

keys_app = typer.Typer(help="Encryption keys (BRIDGE_ENCRYPTION_KEY).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("rotate")
def rotate(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Re-encrypt everything held under the newest key (the first in BRIDGE_ENCRYPTION_KEY),
    so that the older keys can then be removed; audited."""
    from bridge.services.keys import rotate as rotate_keys

    context: Wiring = ctx.obj
    rotation = rotate_keys(context.store(), context.keyring(), actor="cli")
    if as_json:
        print_json(rotation.counts() | {"unreadable": rotation.unreadable})
    else:
        out.print(
            f"under the newest key: {rotation.rewrapped} data keys re-wrapped, "
            f"{rotation.converted} values stored before data keys converted",
            markup=False,
            highlight=False,
        )
        for what in rotation.unreadable:
            out.print(f"no configured key opens {what}", markup=False, highlight=False)
    if rotation.unreadable:
        count = len(rotation.unreadable)
        raise BridgeError(
            f"{count} held value{'s' if count != 1 else ''} no configured key opens; add the "
            "old key after the new one in BRIDGE_ENCRYPTION_KEY, then run `bridge keys rotate` "
            "again"
        )
