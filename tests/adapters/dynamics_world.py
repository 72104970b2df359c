"""The conformance World for Dynamics 365: a Dataverse emulator read behind the adapter's back.

A person is a contact; consent is one ``msdynmkt_contactpointconsent4`` row per address and
purpose, as Customer Insights - Journeys keeps it (docs/vendors/dynamics.md, "Contact point
consent"). The world reads everything through the emulator's admin API, never the Web API,
so the adapter never grades its own work.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
from pydantic import SecretStr

from bridge.adapters.base import CrmAdapter, RecordRef
from bridge.adapters.dynamics import DYNAMICS
from bridge.adapters.dynamics.settings import LAWFUL_BASIS_OPTIONS, DynamicsSettings
from bridge.identity import normalise_email
from bridge.model import ConsentStatus, LawfulBasis, Purpose, RelatedRecords
from bridge.testing.conformance import Faults, Held, Holds, Person, open_connections
from bridge_sandbox.emulators.common import RunningServer, serve_in_thread
from bridge_sandbox.emulators.dynamics import DynamicsEmulatorConfig, ServiceLimits, create_app
from bridge_sandbox.emulators.dynamics_auth import Apps
from bridge_sandbox.emulators.dynamics_http import API_ROOT

TENANT = DynamicsEmulatorConfig().tenant_id
_DEFAULT_APP = Apps().apps[0]  # the emulator's default application user
CLIENT_ID, CLIENT_SECRET = _DEFAULT_APP.client_id, _DEFAULT_APP.client_secret
PURPOSES = (
    Purpose(id="newsletter", dynamics_purpose="Newsletter"),
    Purpose(id="product_updates", dynamics_purpose="Product updates"),
)
# consent4's msdynmkt_value: Not Set, Opted In, Opted Out.
CONSENT_VALUES = {
    ConsentStatus.UNKNOWN: 534120000,
    ConsentStatus.GRANTED: 534120001,
    ConsentStatus.WITHDRAWN: 534120002,
}
CONSENT_STATES = {value: status for status, value in CONSENT_VALUES.items()}
BASES = {option: basis for basis, option in LAWFUL_BASIS_OPTIONS.items()}
EMAIL_CHANNEL, INTERNAL_SOURCE, NO_REASONS = 534120000, 534120000, 534119999
EMAIL_COLUMNS = ("emailaddress1", "emailaddress2", "emailaddress3")
ENTITY_SETS = {
    "contact": "contacts",
    "lead": "leads",
    "opportunity": "opportunities",
    "msdynmkt_contactpointconsent4": "msdynmkt_contactpointconsent4s",
    "msdynmkt_purpose": "msdynmkt_purposes",
}


def web_api(url: str) -> httpx.Client:
    """The emulated environment's Web API as another user of it calls it (someone in the
    app, a plug-in, a flow): changes behind the bridge's back. The caller closes it."""
    answer = httpx.post(
        f"{url}/{TENANT}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scope": f"{url}/.default",
        },
    )
    answer.raise_for_status()
    return httpx.Client(
        base_url=f"{url}{API_ROOT}/",
        headers={"Authorization": f"Bearer {answer.json()['access_token']}"},
        timeout=30,
    )


def contact_json(person: Person) -> dict[str, Any]:
    """A ``Person`` as a contact row of the emulator's seed API."""
    if len(person.additional_emails) > 2:
        raise ValueError("a contact holds at most two additional addresses")
    extra = dict(zip(EMAIL_COLUMNS[1:], person.additional_emails, strict=False))
    basis = person.lawful_basis
    stamp = person.modified_at.isoformat() if person.modified_at else None
    return {
        "firstname": person.first_name,
        "lastname": person.last_name,
        "emailaddress1": person.email,
        **extra,
        "donotbulkemail": person.opted_out,
        "donotphone": person.do_not_call,
        "cb_lawfulbasis": LAWFUL_BASIS_OPTIONS[basis] if basis else None,
        "createdon": stamp,
        "modifiedon": stamp,
    }


def reset(admin: httpx.Client) -> None:
    """An empty environment: no rows, faults, counters or webhooks; default limits and
    settings (no recycle bin, every table tracked)."""
    admin.post("/__emulator/reset").raise_for_status()
    admin.delete("/__emulator/faults").raise_for_status()
    admin.delete("/__emulator/counters").raise_for_status()
    admin.put("/__emulator/limits", json=ServiceLimits().model_dump()).raise_for_status()
    admin.put("/__emulator/settings", json={"recycle_bin_days": None}).raise_for_status()
    admin.put("/__emulator/webhooks", json=[]).raise_for_status()


@contextmanager
def serve_dynamics(
    config: DynamicsEmulatorConfig | None = None,
) -> Iterator[tuple[RunningServer, httpx.Client]]:
    """A Dataverse emulator and a client of its admin API, for a module-scoped fixture;
    make each test's world with :meth:`DynamicsWorld.fresh`."""
    with (
        serve_in_thread(create_app(config or DynamicsEmulatorConfig())) as running,
        httpx.Client(base_url=running.url, timeout=120) as admin,
    ):
        yield running, admin


class DynamicsWorld:
    """The conformance world (:class:`bridge.testing.conformance.World`) over the emulator."""

    purposes: Sequence[Purpose] = PURPOSES

    def __init__(self, server: RunningServer, admin: httpx.Client) -> None:
        """The world over the environment as it is; seeds the purposes' rows."""
        self.server = server
        self.admin = admin
        self.url = server.url
        self._adapters: dict[tuple[str, int], CrmAdapter] = {}
        names = [{"msdynmkt_name": p.mapping(DYNAMICS)["purpose"]} for p in PURPOSES]
        made = self._seed(msdynmkt_purposes=names)["msdynmkt_purposes"]
        self.purpose_rows = dict(zip(made, (p.id for p in PURPOSES), strict=True))

    @classmethod
    def fresh(cls, server: RunningServer, admin: httpx.Client) -> DynamicsWorld:
        """A world over an emulator reset to empty (see :func:`reset`)."""
        reset(admin)
        return cls(server, admin)

    # -- adapters -------------------------------------------------------------------------------

    def settings(self, secret: str = CLIENT_SECRET) -> DynamicsSettings:
        return DynamicsSettings(
            tenant_id=TENANT,
            client_id=CLIENT_ID,
            client_secret=SecretStr(secret),
            environment_url=self.url,
            base_url=self.url,
        )

    def _cached(self, secret: str, attempts: int) -> CrmAdapter:
        from bridge.adapters.dynamics.adapter import DynamicsAdapter

        key = (secret, attempts)
        if key not in self._adapters:
            self._adapters[key] = DynamicsAdapter(
                self.settings(secret),
                PURPOSES,
                keep_on_anonymize={},
                read_fields=[],
                due_field="cb_purgedue",
                attempts=attempts,
            )
        return self._adapters[key]

    def adapter(self, *, attempts: int = 8) -> CrmAdapter:
        return self._cached(CLIENT_SECRET, attempts)

    def unauthorised_adapter(self) -> CrmAdapter:
        return self._cached("not-the-secret", 1)

    def close(self) -> None:
        for adapter in self._adapters.values():
            adapter.close()
        self._adapters.clear()

    # -- seeding ----------------------------------------------------------------------------------

    def _seed(self, **tables: list[dict[str, Any]]) -> dict[str, list[str]]:
        response = self.admin.post("/__emulator/seed", json=tables)
        response.raise_for_status()
        made: dict[str, list[str]] = response.json()
        return made

    def _purpose_row(self, purpose_id: str) -> str:
        return next(row for row, known in self.purpose_rows.items() if known == purpose_id)

    def consent_json(self, email: str, purpose_id: str, status: ConsentStatus) -> dict[str, Any]:
        """One consent4 row: the address's consent to one purpose, set internally."""
        return {
            "msdynmkt_contactpointvalue": email,
            "msdynmkt_contactpointtype": EMAIL_CHANNEL,
            "msdynmkt_value": CONSENT_VALUES[status],
            "msdynmkt_purposeid@odata.bind": f"/msdynmkt_purposes({self._purpose_row(purpose_id)})",
            "msdynmkt_source": INTERNAL_SOURCE,
            "msdynmkt_logicalreason": NO_REASONS,
        }

    def seed(self, people: Sequence[Person]) -> list[str]:
        consents = [
            self.consent_json(person.email, purpose_id, status)
            for person in people
            for purpose_id, status in person.consents.items()
        ]
        made = self._seed(
            contacts=[contact_json(p) for p in people], msdynmkt_contactpointconsent4s=consents
        )
        return made["contacts"]

    def holds(self, record_id: str) -> Holds:
        """A won opportunity of the contact: a legal hold's related row."""
        self._seed(
            opportunities=[
                {
                    "name": "Deal",
                    "statecode": 1,
                    "parentcontactid@odata.bind": f"/contacts({record_id})",
                }
            ]
        )

        def condition(name: str, state: int) -> RelatedRecords:
            return RelatedRecords(
                name=name,
                related_object="opportunities",
                link_field="_parentcontactid_value",
                where=f"statecode eq {state}",
            )

        return Holds(condition("won_opportunity", 1), condition("lost_opportunity", 2))

    # -- reading behind the adapter's back --------------------------------------------------------

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        response = self.admin.get("/__emulator/state")
        response.raise_for_status()
        tables: dict[str, list[dict[str, Any]]] = response.json()["tables"]
        return tables

    def rows(self, vendor_object: str, /) -> list[dict[str, Any]]:
        """Every live row of a table, by logical name (``contact``, ``lead``, ...)."""
        return self.tables()[ENTITY_SETS[vendor_object]]

    def held(self, email: str) -> Held:
        address = normalise_email(email)
        tables = self.tables()
        people = [
            row
            for name in ("contacts", "leads")
            for row in tables[name]
            if any(normalise_email(row.get(c) or "") == address for c in EMAIL_COLUMNS)
        ]
        consents: Mapping[str, ConsentStatus] = {
            self.purpose_rows[row["_msdynmkt_purposeid_value"]]: CONSENT_STATES[
                row["msdynmkt_value"]
            ]
            for row in tables["msdynmkt_contactpointconsent4s"]
            if normalise_email(row["msdynmkt_contactpointvalue"] or "") == address
            and row["_msdynmkt_purposeid_value"] in self.purpose_rows
        }
        bases = [row["cb_lawfulbasis"] for row in people if row.get("cb_lawfulbasis") is not None]
        basis: LawfulBasis | None = BASES[bases[0]] if bases else None
        return Held(
            record_ids=frozenset(row.get("contactid") or row["leadid"] for row in people),
            consents=consents,
            opted_out=any(row["donotbulkemail"] for row in people),
            lawful_basis=basis,
            last_names=frozenset(row["lastname"] for row in people if row.get("lastname")),
            do_not_call=any(row["donotphone"] for row in people),
        )

    def ref(self, record_id: str) -> RecordRef:
        return RecordRef(DYNAMICS, "contact", record_id)

    def ui_url(self, record_id: str) -> str:
        """The model-driven app's record form on the environment (here, the emulator)."""
        return f"{self.url}/main.aspx?pagetype=entityrecord&etn=contact&id={record_id}"

    # -- the emulator ----------------------------------------------------------------------------

    def connections(self) -> frozenset[Hashable]:
        return open_connections(self.server.server)

    def set_faults(self, faults: Faults | None) -> None:
        """Faults in Dataverse's calls; Entra ID (the token) is another service."""
        if faults is None:
            self.admin.delete("/__emulator/faults").raise_for_status()
        else:
            injected = vars(faults) | {"endpoints": [f"* {API_ROOT}/*"]}
            self.admin.put("/__emulator/faults", json=injected).raise_for_status()
