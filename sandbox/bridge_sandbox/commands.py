"""The ``bridge demo`` and ``bridge emulate`` commands, which the sandbox adds to the
``bridge`` command line (entry point group ``bridge.commands``)."""

from __future__ import annotations

from typing import Annotated

import typer

from bridge.errors import ConfigError


def demo(
    people: Annotated[
        int, typer.Option("--people", min=10, max=20_000, help="How many people to seed.")
    ] = 300,
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            help="Leave the emulators and receiver up and print their URLs; Ctrl-C stops them.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """The whole story against both emulators on loopback, every claim checked by reading
    both CRMs back (exit 1 if a check fails). Nothing to configure; nothing left running."""
    from bridge_sandbox.demo import run

    code = run(people, keep_running=keep_running, as_json=as_json)
    if code:
        raise typer.Exit(code)


DEFAULT_PORTS = {"hubspot": 8765, "salesforce": 8766}  # one each, so both can run side by side


def emulate(
    vendor: Annotated[str, typer.Argument(help="Which vendor API: hubspot, salesforce.")],
    port: Annotated[
        int | None,
        typer.Option(
            help="Port on 127.0.0.1 (default "
            + ", ".join(f"{port} for {name}" for name, port in DEFAULT_PORTS.items())
            + ").",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve a faithful vendor API emulator on loopback: no account needed to try the bridge.
    It starts empty (but for the vendor's defaults); its admin API, to seed it and point its
    webhooks at the bridge, is described at /__emulator/docs."""
    import uvicorn

    from bridge.cli.serve import stop_quietly_on_signals
    from bridge_sandbox.emulators import EMULATORS

    if vendor not in EMULATORS:
        raise ConfigError([f"emulate: no {vendor!r} emulator; use one of {', '.join(EMULATORS)}"])
    stop_quietly_on_signals()
    chosen = DEFAULT_PORTS.get(vendor, 8765) if port is None else port
    uvicorn.run(
        EMULATORS[vendor](), host="127.0.0.1", port=chosen, log_config=None, access_log=False
    )
