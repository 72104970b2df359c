"""Faithful emulators of the vendor APIs the bridge speaks, one per vendor, by registry name."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp


def _hubspot() -> ASGIApp:
    from bridge_sandbox.emulators.hubspot import create_app

    return create_app()


def _salesforce() -> ASGIApp:
    from bridge_sandbox.emulators.salesforce import create_app

    return create_app()


EMULATORS: dict[str, Callable[[], ASGIApp]] = {"hubspot": _hubspot, "salesforce": _salesforce}
