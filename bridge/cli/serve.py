"""``bridge run`` and ``bridge serve``: the daemon and the webhook receiver."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Annotated

import typer

from bridge.runtime.wiring import Wiring

if TYPE_CHECKING:
    pass

from bridge.cli.common import app

HostOption = Annotated[
    str | None, typer.Option(help="Interface (default: web.host, 127.0.0.1)", show_default=False)
]
PortOption = Annotated[
    int | None, typer.Option(help="Port (default: web.port, 8080)", show_default=False)
]


@app.command("run")
def run(
    ctx: typer.Context,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """The daemon: scheduled work (inbox, erasure, sync) beside the webhook receiver.

    SIGTERM: the items under way finish, exit 0 within 30 s. Instances may share PostgreSQL;
    on SQLite a second daemon on the same database file is refused (exit 2).
    """
    from bridge.runtime.daemon import Daemon
    from bridge.runtime.daemon import serve as serve_daemon
    from bridge.runtime.receiver import create_app
    from bridge.store.leader import LeaderLock, hold_sqlite_database

    context: Wiring = ctx.obj
    settings = context.settings
    store = context.store()  # refuses an old schema
    hold_sqlite_database(store)  # on SQLite, the only daemon on the file until this one exits
    daemon = Daemon(
        context.daemon_jobs(), LeaderLock(store), settings.schedule.leader_check_seconds
    )
    receiver = create_app(settings, store)
    serve_daemon(
        daemon, receiver, settings.web, host or settings.web.host, port or settings.web.port
    )


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Run the webhook receiver alone (the daemon runs it beside the scheduler)."""
    import uvicorn  # imported here: the server stack is slow to load for other commands

    from bridge.runtime import listener
    from bridge.runtime.receiver import create_app

    context: Wiring = ctx.obj
    settings = context.settings
    receiver = create_app(settings, context.store())
    stop_quietly_on_signals()
    host, port = host or settings.web.host, port or settings.web.port
    server = uvicorn.Server(listener.config(receiver, settings.web, host, port, 20))
    server.run()
    if not server.started:  # uvicorn could not listen; it has logged why
        raise SystemExit(3)


def stop_quietly_on_signals() -> None:
    """After a graceful shutdown uvicorn re-raises SIGTERM/SIGINT to the previous handlers;
    with these no-op handlers in place the process then exits 0, as an orderly stop should."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: None)
