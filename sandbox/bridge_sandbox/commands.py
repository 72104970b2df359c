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
            help="Leave the emulators and receiver up and print their URLs (the console's and "
            "the privacy page's too, and the folder the emails land in); Ctrl-C stops them.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    hubspot_tier: Annotated[
        str,
        typer.Option(
            "--hubspot-tier",
            help="The emulated portal's Marketing Hub tier: starter, professional or "
            "enterprise (below enterprise, no batch consent scopes).",
        ),
    ] = "enterprise",
    salesforce_org: Annotated[
        str,
        typer.Option(
            "--salesforce-org",
            help="The emulated org: privacy (Data Protection and Privacy on) or basic "
            "(without the privacy objects, so no per-purpose consent).",
        ),
    ] = "privacy",
    crms: Annotated[
        str,
        typer.Option(
            "--crms",
            help="Which CRMs to emulate, two or more of hubspot, salesforce, dynamics, "
            "comma-separated (default: all three).",
        ),
    ] = "hubspot,salesforce,dynamics",
) -> None:
    """The whole story against the chosen emulators on loopback, every claim checked by
    reading every CRM back (exit 1 if a check fails). Nothing to configure; nothing left
    running."""
    from bridge_sandbox.demo import run
    from bridge_sandbox.demo_crms import SYSTEMS
    from bridge_sandbox.emulators.accounts import Accounts
    from bridge_sandbox.emulators.hubspot_tiers import TIERS
    from bridge_sandbox.emulators.salesforce_config import ORGS

    tier = next((name for name in TIERS if name == hubspot_tier), None)
    org = next((name for name in ORGS if name == salesforce_org), None)
    if tier is None:
        raise ConfigError([f"demo: --hubspot-tier is one of {', '.join(TIERS)}"])
    if org is None:
        raise ConfigError([f"demo: --salesforce-org is one of {', '.join(ORGS)}"])
    chosen = [name.strip() for name in crms.split(",")]
    if len(set(chosen)) < 2 or len(set(chosen)) != len(chosen) or set(chosen) - set(SYSTEMS):
        raise ConfigError([f"demo: --crms is two or more of {', '.join(SYSTEMS)}, comma-separated"])
    code = run(
        people,
        accounts=Accounts(tier, org),
        crms=chosen,
        keep_running=keep_running,
        as_json=as_json,
    )
    if code:
        raise typer.Exit(code)


# One each, so that all can run side by side.
DEFAULT_PORTS = {"hubspot": 8765, "salesforce": 8766, "dynamics": 8767}


def emulate(
    vendor: Annotated[str, typer.Argument(help="Which vendor API: hubspot, salesforce, dynamics.")],
    port: Annotated[
        int | None,
        typer.Option(
            help="Port on 127.0.0.1 (default "
            + ", ".join(f"{port} for {name}" for name, port in DEFAULT_PORTS.items())
            + ").",
            show_default=False,
        ),
    ] = None,
    tier: Annotated[
        str | None,
        typer.Option(
            help="HubSpot only: the portal's Marketing Hub tier, starter, professional or "
            "enterprise (default): its published rate limits and, below enterprise, a token "
            "without the batch communication-preference scopes.",
            show_default=False,
        ),
    ] = None,
    org: Annotated[
        str | None,
        typer.Option(
            help="Salesforce only: the org's profile, privacy (default: Data Protection and "
            "Privacy on) or basic (no Individual, ContactPointTypeConsent, DataUsePurpose: "
            "they answer INVALID_TYPE, as in most orgs).",
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
    from bridge_sandbox.emulators.hubspot_tiers import TIERS
    from bridge_sandbox.emulators.salesforce_config import ORGS

    if vendor not in EMULATORS:
        raise ConfigError([f"emulate: no {vendor!r} emulator; use one of {', '.join(EMULATORS)}"])
    if tier is not None and (vendor != "hubspot" or tier not in TIERS):
        raise ConfigError([f"emulate: --tier is one of {', '.join(TIERS)}, for hubspot only"])
    if org is not None and (vendor != "salesforce" or org not in ORGS):
        raise ConfigError([f"emulate: --org is one of {', '.join(ORGS)}, for salesforce only"])
    profile = {name: value for name, value in (("tier", tier), ("org", org)) if value}
    stop_quietly_on_signals()
    chosen = DEFAULT_PORTS.get(vendor, 8765) if port is None else port
    uvicorn.run(
        EMULATORS[vendor](**profile),
        host="127.0.0.1",
        port=chosen,
        log_config=None,
        access_log=False,
    )
