"""``bridge run`` and ``bridge serve``: the daemon, the webhook receiver and the console."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Annotated

import typer

from bridge.runtime.wiring import Wiring

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp

    from bridge.store.db import Store

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
    """The daemon: scheduled work (inbox, erasure, sync) beside the webhook receiver and
    the console (/console; on a listener of its own with web.console_host/console_port).

    SIGTERM: the items under way finish, exit 0 within 30 s. Instances may share PostgreSQL;
    on SQLite a second daemon on the same database file is refused (exit 2).
    """
    from bridge.runtime.daemon import Daemon
    from bridge.runtime.daemon import serve as serve_daemon
    from bridge.store.leader import LeaderLock, hold_sqlite_database

    context: Wiring = ctx.obj
    settings = context.settings
    store = context.store()  # refuses an old schema
    hold_sqlite_database(store)  # on SQLite, the only daemon on the file until this one exits
    daemon = Daemon(
        context.daemon_jobs(), LeaderLock(store), settings.schedule.leader_check_seconds
    )
    listener = context.wake_on_new_work(daemon)  # new work runs at once, not at the poll
    receiver, console = web_apps(context, store)
    host, port = host or settings.web.host, port or settings.web.port
    try:
        serve_daemon(daemon, receiver, settings.web, host, port, console)
    finally:
        if listener is not None:
            listener.stop()


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Run the webhook receiver and the console alone (the daemon runs them beside the
    scheduler)."""
    import uvicorn  # imported here: the server stack is slow to load for other commands

    from bridge.runtime import listener

    context: Wiring = ctx.obj
    settings = context.settings
    receiver, console = web_apps(context, context.store())
    host, port = host or settings.web.host, port or settings.web.port
    listening = listener.listening(receiver, settings.web, host, port, 20, console)
    stop_quietly_on_signals()
    server = uvicorn.Server(listening.config)
    server.run(sockets=listening.sockets)
    if not server.started:  # uvicorn could not listen; it has logged why
        raise SystemExit(3)


def web_apps(context: Wiring, store: Store) -> tuple[FastAPI, ASGIApp | None]:
    """The receiver, and the console's app for a listener of its own when ``[web]
    console_host`` and ``console_port`` give it one (it answers nothing but /console, and the
    receiver 404 there); else None, the console mounted in the receiver under /console."""
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse
    from starlette.routing import Mount, Route

    from bridge.runtime.receiver import create_app
    from bridge.web.console.app import create_console
    from bridge.web.console.auth import PATH

    receiver = create_app(context.settings, store)
    console = create_console(context)
    if context.settings.web.console_port is None:
        receiver.mount(PATH, console)
        return receiver, None

    async def home(_request: object) -> RedirectResponse:
        return RedirectResponse(f"{PATH}/", 303)

    return receiver, Starlette(routes=[Route("/", home), Mount(PATH, console)])


def stop_quietly_on_signals() -> None:
    """After a graceful shutdown uvicorn re-raises SIGTERM/SIGINT to the previous handlers;
    with these no-op handlers in place the process then exits 0, as an orderly stop should."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: None)
