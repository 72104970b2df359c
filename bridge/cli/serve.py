"""``bridge run`` and ``bridge serve``: the daemon, the webhook receiver, the console and the
privacy portal."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Annotated

import typer

from bridge.runtime.wiring import Wiring

if TYPE_CHECKING:
    from fastapi import FastAPI

    from bridge.runtime.listener import Face
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
    """The daemon: scheduled work (inbox, erasure, sync) beside the webhook receiver, the
    console (/console) and the privacy portal (/privacy), each of these on a listener of its
    own with web.console_host/console_port and web.portal_host/portal_port.

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
    receiver, faces = web_apps(context, store)
    host, port = host or settings.web.host, port or settings.web.port
    try:
        serve_daemon(daemon, receiver, settings.web, host, port, faces)
    finally:
        if listener is not None:
            listener.stop()


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Run the webhook receiver, the console and the privacy portal alone (the daemon runs
    them beside the scheduler)."""
    import uvicorn  # imported here: the server stack is slow to load for other commands

    from bridge.runtime import listener

    context: Wiring = ctx.obj
    settings = context.settings
    receiver, faces = web_apps(context, context.store())
    host, port = host or settings.web.host, port or settings.web.port
    listening = listener.listening(receiver, settings.web, host, port, 20, faces)
    stop_quietly_on_signals()
    server = uvicorn.Server(listening.config)
    server.run(sockets=listening.sockets)
    if not server.started:  # uvicorn could not listen; it has logged why
        raise SystemExit(3)


def web_apps(context: Wiring, store: Store) -> tuple[FastAPI, list[Face]]:
    """The receiver, and the faces people use: the console (/console) and the privacy portal
    (/privacy). A face whose ``[web] <face>_host``/``<face>_port`` give it a listener of its
    own is returned for it (there it answers nothing but its path, and the receiver 404s
    there); any other is mounted in the receiver under its path."""
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse
    from starlette.routing import Mount, Route

    from bridge.runtime.listener import Face
    from bridge.runtime.receiver import create_app
    from bridge.web.console import auth
    from bridge.web.console.app import create_console
    from bridge.web.portal import session
    from bridge.web.portal.app import create_portal

    web = context.settings.web
    receiver = create_app(context.settings, store)
    faces = []
    for name, path, face in (
        ("console", auth.PATH, create_console(context)),
        ("portal", session.PATH, create_portal(context)),
    ):
        host, port = getattr(web, f"{name}_host"), getattr(web, f"{name}_port")
        if host is None or port is None:
            receiver.mount(path, face)
            continue

        async def home(_request: object, path: str = path) -> RedirectResponse:
            return RedirectResponse(f"{path}/", 303)

        routes = [Route("/", home), Mount(path, face)]
        faces.append(Face(name, Starlette(routes=routes), host, port))
    return receiver, faces


def stop_quietly_on_signals() -> None:
    """After a graceful shutdown uvicorn re-raises SIGTERM/SIGINT to the previous handlers;
    with these no-op handlers in place the process then exits 0, as an orderly stop should."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: None)
