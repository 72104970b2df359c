"""What ``bridge demo`` checks with: the chosen emulators read back, and acted on as people would.

Every check of the demo reads the emulators' state here, through their admin APIs, never
through the bridge's adapters: the bridge's own account of what it did is what is being
checked. The people's acts go through the vendors' public APIs where the vendor has one for
them (a rep editing a Salesforce record, a seller editing a Dynamics 365 row, an
integration creating a HubSpot contact), and through the admin API where a vendor's own UI
would act (an unsubscribe link in HubSpot).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import httpx

from bridge_sandbox.emulators.lawful_bases import UnknownBasis, hubspot_basis, salesforce_basis
from bridge_sandbox.emulators.people import (
    DYNAMICS_BASIS_FIELD,
    DYNAMICS_CONSENT,
    DYNAMICS_LAWFUL_BASIS,
    DYNAMICS_PURPOSE_KEY,
    HUBSPOT_SUBSCRIPTION_KEY,
    SALESFORCE_PURPOSE_KEY,
    ConfiguredPurpose,
    normalise_email,
    purpose_names,
)

API = "/services/data/v59.0"
SALESFORCE_PEOPLE = ("Contact", "Lead")
CONSENT_ROWS = "ContactPointTypeConsent"
SALESFORCE_TYPES = (*SALESFORCE_PEOPLE, "Individual", CONSENT_ROWS)
GRANTED, WITHDRAWN, UNKNOWN = "granted", "withdrawn", "unknown"
_STATUS = {"SUBSCRIBED": GRANTED, "UNSUBSCRIBED": WITHDRAWN, "OptIn": GRANTED, "OptOut": WITHDRAWN}
# The CRMs the demo can run, in the order it names them.
HUBSPOT, SALESFORCE, DYNAMICS = "hubspot", "salesforce", "dynamics"
SYSTEMS = (HUBSPOT, SALESFORCE, DYNAMICS)
TITLES = {HUBSPOT: "HubSpot", SALESFORCE: "Salesforce", DYNAMICS: "Dynamics"}
# Dataverse: the Web API's root, the people's tables and their key columns, the address
# columns, and consent4's values read back in common terms.
DATAVERSE_API = "/api/data/v9.2"
DYNAMICS_PEOPLE = {"contacts": ("contact", "contactid"), "leads": ("lead", "leadid")}
DYNAMICS_EMAILS = ("emailaddress1", "emailaddress2", "emailaddress3")
CONSENT4 = "msdynmkt_contactpointconsent4s"
_DYNAMICS_STATUS = {value: status for status, value in DYNAMICS_CONSENT.items()}
_DYNAMICS_BASIS = {option: basis for basis, option in DYNAMICS_LAWFUL_BASIS.items()}
# The app a seller's session stands for: a second app registration in the emulated tenant.
SELLER_APP = ("demo-seller", "demo-seller-secret")


@dataclass(frozen=True)
class Held:
    """One record of a person as its CRM holds it, in common terms."""

    system: str
    object_type: str
    id: str
    opted_out: bool
    consent: dict[str, str]
    """purpose id -> granted or withdrawn, where the record holds a status."""
    basis: str | None
    """The common basis (``consent``, ...); a vendor value that names none, as it is."""
    stamp: str = ""
    holds_consent: bool = True
    """Whether the record's CRM can hold per-purpose consent for it: a Salesforce org
    without the privacy objects holds only the flags and the lawful basis."""

    def effective(self, purpose: str) -> str:
        """What the record says about email for a purpose: an opt-out of all email wins."""
        return WITHDRAWN if self.opted_out else self.consent.get(purpose, UNKNOWN)

    @property
    def label(self) -> str:
        """``HubSpot contact 12``, ``Salesforce Contact 003...``: no personal data."""
        return f"{TITLES[self.system]} {self.object_type} {self.id}"


@dataclass(frozen=True)
class Person:
    """Every record the chosen CRMs hold for one normalised address."""

    records: tuple[Held, ...]

    @property
    def hubspot(self) -> list[Held]:
        return self.held_in(HUBSPOT)

    @property
    def salesforce(self) -> list[Held]:
        return self.held_in(SALESFORCE)

    @property
    def dynamics(self) -> list[Held]:
        return self.held_in(DYNAMICS)

    def held_in(self, system: str) -> list[Held]:
        return [r for r in self.records if r.system == system]

    @property
    def systems(self) -> set[str]:
        """The CRMs holding the person."""
        return {r.system for r in self.records}

    def disagreements(self, purposes: Iterable[str]) -> list[tuple[str, str, str]]:
        """``(what, this, that)`` for each way two of the records tell different stories:
        the opt-out of all email, each purpose's consent (between records that can hold
        it), the lawful basis."""
        found = []
        first, *others = self.records
        consenting = [r for r in self.records if r.holds_consent]
        for other in others:
            if first.opted_out != other.opted_out:
                found.append(("opt_out", str(first.opted_out), str(other.opted_out)))
            if first.basis != other.basis:
                found.append(("lawful_basis", str(first.basis), str(other.basis)))
        for other in consenting[1:]:
            for purpose in purposes:
                this, that = consenting[0].effective(purpose), other.effective(purpose)
                if this != that:
                    found.append((f"consent:{purpose}", this, that))
        return found


class Crms:
    """The chosen emulators (two or three), through their admin APIs (reading) and public
    APIs (acting). A CRM not chosen has no client, and none of its records is read."""

    def __init__(
        self,
        clients: Mapping[str, httpx.Client],
        purposes: Sequence[ConfiguredPurpose],
        tenant_id: str = "",
    ) -> None:
        self.clients = dict(clients)
        self.chosen = tuple(system for system in SYSTEMS if system in clients)
        self.purposes = list(purposes)
        self.tenant_id = tenant_id
        self._rep_token: str | None = None
        self._seller_token: str | None = None

    @property
    def hubspot(self) -> httpx.Client:
        return self.clients[HUBSPOT]

    @property
    def salesforce(self) -> httpx.Client:
        return self.clients[SALESFORCE]

    @property
    def dynamics(self) -> httpx.Client:
        return self.clients[DYNAMICS]

    def has(self, system: str) -> bool:
        return system in self.clients

    # -- reading back -------------------------------------------------------------------

    def hubspot_state(self) -> dict[str, Any]:
        return _json(self.hubspot.get("/__emulator/state"))

    def hubspot_calls(self) -> Counter[str]:
        """The vendor calls HubSpot has answered so far, by ``METHOD /route``."""
        return Counter(_json(self.hubspot.get("/__emulator/counters"))["calls"])

    @cached_property
    def salesforce_objects(self) -> frozenset[str]:
        """The objects the Salesforce org has (one without the privacy objects lacks
        Individual, ContactPointTypeConsent and their kin)."""
        return frozenset(_json(self.salesforce.get("/__emulator/org"))["sobjects"])

    @property
    def privacy(self) -> bool:
        """Whether the Salesforce org can hold per-purpose consent (true without one)."""
        return not self.has(SALESFORCE) or CONSENT_ROWS in self.salesforce_objects

    def salesforce_rows(self, sobject: str, include_deleted: bool = False) -> list[dict[str, Any]]:
        params = {"type": sobject} | ({"include_deleted": "true"} if include_deleted else {})
        rows: list[dict[str, Any]] = _json(
            self.salesforce.get("/__emulator/records", params=params)
        )["records"]
        return rows

    def dynamics_state(self) -> dict[str, Any]:
        """Every table of the environment, its recycle bin and its audit history."""
        return _json(self.dynamics.get("/__emulator/state"))

    def fingerprint(self) -> str:
        """A digest of everything the chosen CRMs hold about people: equal digests, no
        change (Dataverse's service protection usage left out: reading counts there)."""
        state: dict[str, Any] = {}
        if self.has(HUBSPOT):
            state["hubspot"] = self.hubspot_state()
        if self.has(SALESFORCE):
            state |= {
                t: self.salesforce_rows(t, include_deleted=True)
                for t in SALESFORCE_TYPES
                if t in self.salesforce_objects
            }
        if self.has(DYNAMICS):
            environment = self.dynamics_state()
            state["dynamics"] = {k: environment[k] for k in ("tables", "recycle_bin", "audit")}
        return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()

    def people(self) -> dict[str, Person]:
        """Every person the chosen CRMs hold, by normalised address."""
        records: dict[str, list[Held]] = defaultdict(list)
        found = []
        if self.has(HUBSPOT):
            found += self._hubspot_records()
        if self.has(SALESFORCE):
            found += self._salesforce_records()
        if self.has(DYNAMICS):
            found += self._dynamics_records()
        for email, held in found:
            records[normalise_email(email)].append(held)
        return {email: Person(tuple(held)) for email, held in records.items()}

    def person(self, email: str) -> Person:
        return self.people().get(normalise_email(email), Person(()))

    def _hubspot_records(self) -> list[tuple[str, Held]]:
        state = self.hubspot_state()
        subscriptions = purpose_names(self.purposes, HUBSPOT_SUBSCRIPTION_KEY)
        purpose_of = {subscription: purpose for purpose, subscription in subscriptions.items()}
        statuses: dict[str, dict[str | None, str]] = defaultdict(dict)
        for row in state["subscriptions"]:
            statuses[normalise_email(row["email"])][row["subscriptionId"]] = row["status"]
        found = []
        for contact in state["contacts"]:
            properties = contact["properties"]
            email = normalise_email(properties["email"])
            mine = statuses.get(email, {})
            consent = {
                purpose_of[sub]: _STATUS[status]
                for sub, status in mine.items()
                if sub in purpose_of and status in _STATUS
            }
            basis = _basis(hubspot_basis, properties.get("hs_legal_basis"))
            held = Held("hubspot", "contact", str(contact["id"]),
                        mine.get(None) == "UNSUBSCRIBED", consent, basis,
                        properties.get("lastmodifieddate") or "")  # fmt: skip
            found.append((email, held))
        return found

    def _salesforce_records(self) -> list[tuple[str, Held]]:
        consent = self._salesforce_consent() if self.privacy else {}
        found = []
        for sobject in SALESFORCE_PEOPLE:
            for row in self.salesforce_rows(sobject):
                if not row["Email"]:
                    continue
                basis = _basis(salesforce_basis, row.get("Lawful_Basis__c"))
                held = Held("salesforce", sobject, row["Id"], bool(row["HasOptedOutOfEmail"]),
                            dict(consent.get(row.get("IndividualId") or "", {})), basis,
                            row["SystemModstamp"], holds_consent=self.privacy)  # fmt: skip
                found.append((row["Email"], held))
        return found

    def _salesforce_consent(self) -> dict[str, dict[str, str]]:
        """Individual id -> purpose id -> the status of its latest consent row."""
        purposes = purpose_names(self.purposes, SALESFORCE_PURPOSE_KEY)
        names = {name: purpose for purpose, name in purposes.items()}
        purpose_of = {
            row["Id"]: names[row["Name"]]
            for row in self.salesforce_rows("DataUsePurpose")
            if row["Name"] in names
        }
        consent: dict[str, dict[str, str]] = defaultdict(dict)
        rows = self.salesforce_rows(CONSENT_ROWS)
        for row in sorted(rows, key=lambda r: (r["CaptureDate"] or "", r["CreatedDate"] or "")):
            purpose = purpose_of.get(row["DataUsePurposeId"])
            if purpose and row["PrivacyConsentStatus"] in _STATUS:
                consent[row["PartyId"]][purpose] = _STATUS[row["PrivacyConsentStatus"]]
        return consent

    def _dynamics_records(self) -> list[tuple[str, Held]]:
        """Contacts and leads: the opt-out of bulk email, the lawful-basis column, and each
        purpose's latest consent4 row among the row's addresses."""
        tables = self.dynamics_state()["tables"]
        consent = self._dynamics_consent(tables)
        found = []
        for entity_set, (table, key) in DYNAMICS_PEOPLE.items():
            for row in tables[entity_set]:
                addresses = [row[c] for c in DYNAMICS_EMAILS if row.get(c)]
                if not addresses:
                    continue
                latest: dict[str, tuple[str, str]] = {}
                for address in addresses:
                    for purpose, (stamp, status) in consent.get(
                        normalise_email(address), {}
                    ).items():
                        if purpose not in latest or stamp > latest[purpose][0]:
                            latest[purpose] = (stamp, status)
                basis = _DYNAMICS_BASIS.get(row.get(DYNAMICS_BASIS_FIELD) or 0)
                held = Held(DYNAMICS, table, row[key], bool(row.get("donotbulkemail")),
                            {p: status for p, (_, status) in latest.items()}, basis,
                            row.get("modifiedon") or "")  # fmt: skip
                found.append((addresses[0], held))
        return found

    def _dynamics_consent(
        self, tables: Mapping[str, list[dict[str, Any]]]
    ) -> dict[str, dict[str, tuple[str, str]]]:
        """Address -> purpose id -> (when, status) of its latest opted-in or opted-out row."""
        names = {name: p for p, name in purpose_names(self.purposes, DYNAMICS_PURPOSE_KEY).items()}
        purpose_of = {
            row["msdynmkt_purposeid"]: names[row["msdynmkt_name"]]
            for row in tables["msdynmkt_purposes"]
            if row.get("msdynmkt_name") in names
        }
        consent: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
        for row in tables[CONSENT4]:
            purpose = purpose_of.get(row.get("_msdynmkt_purposeid_value"))
            status = _DYNAMICS_STATUS.get(row.get("msdynmkt_value") or 0)
            if purpose is None or status is None:
                continue
            mine = consent[normalise_email(row.get("msdynmkt_contactpointvalue") or "")]
            stamp = row.get("modifiedon") or ""
            if purpose not in mine or stamp >= mine[purpose][0]:
                mine[purpose] = (stamp, status)
        return consent

    def opted_out(self, records: Iterable[Held]) -> bool:
        """Whether every one of these records is opted out of all email now: a narrower read
        than :meth:`people`, for polling."""
        wanted = list(records)
        hubspot = [r for r in wanted if r.system == "hubspot"]
        flags: dict[str, bool] = {}
        if hubspot:
            state = self.hubspot_state()
            out = {
                normalise_email(row["email"])
                for row in state["subscriptions"]
                if row["subscriptionId"] is None and row["status"] == "UNSUBSCRIBED"
            }
            for contact in state["contacts"]:
                email = normalise_email(contact["properties"]["email"])
                flags[str(contact["id"])] = email in out
        for sobject in {r.object_type for r in wanted if r.system == "salesforce"}:
            flags |= {row["Id"]: row["HasOptedOutOfEmail"] for row in self.salesforce_rows(sobject)}
        if any(r.system == DYNAMICS for r in wanted):
            tables = self.dynamics_state()["tables"]
            for entity_set, (_, key) in DYNAMICS_PEOPLE.items():
                flags |= {row[key]: bool(row["donotbulkemail"]) for row in tables[entity_set]}
        return all(flags.get(r.id, False) for r in wanted)

    def holding(self, email: str) -> list[str]:
        """Every record the chosen CRMs still hold under this address, in any case, as a
        label; Salesforce's and Dataverse's recycle bins included (a hard delete leaves
        nothing there), and Dataverse's consent4 rows of the address (deleting a contact
        leaves them behind)."""
        address = normalise_email(email)
        found: list[str] = []
        if self.has(HUBSPOT):
            found += [
                f"HubSpot contact {c['id']}"
                for c in self.hubspot_state()["contacts"]
                if address
                in {
                    normalise_email(e)
                    for e in [
                        c["properties"].get("email") or "",
                        *(c["properties"].get("hs_additional_emails") or "").split(";"),
                    ]
                }
            ]
        for sobject in SALESFORCE_PEOPLE if self.has(SALESFORCE) else ():
            found += [
                f"Salesforce {sobject} {row['Id']}"
                for row in self.salesforce_rows(sobject, include_deleted=True)
                if normalise_email(row["Email"] or "") == address
            ]
        if self.has(DYNAMICS):
            found += self._dynamics_holding(address)
        return found

    def _dynamics_holding(self, address: str) -> list[str]:
        state = self.dynamics_state()
        binned = [(item["entity_set"], item["row"]) for item in state["recycle_bin"]]
        rows = [(name, row) for name in DYNAMICS_PEOPLE for row in state["tables"][name]]
        found = [
            f"Dynamics {DYNAMICS_PEOPLE[name][0]} {row[DYNAMICS_PEOPLE[name][1]]}"
            + (" (recycle bin)" if (name, row) in binned else "")
            for name, row in [*rows, *((n, r) for n, r in binned if n in DYNAMICS_PEOPLE)]
            if address in {normalise_email(row.get(c) or "") for c in DYNAMICS_EMAILS}
        ]
        found += [
            f"Dynamics consent row {row['msdynmkt_contactpointconsent4id']}"
            for row in state["tables"][CONSENT4]
            if normalise_email(row.get("msdynmkt_contactpointvalue") or "") == address
        ]
        return found

    def surviving(self, sobject: str, ids: Iterable[str]) -> list[str]:
        """Which of these Salesforce records still exist, recycle bin included."""
        wanted = set(ids)
        if not wanted:  # nothing to look for (perhaps in an org without ``sobject``)
            return []
        rows = self.salesforce_rows(sobject, include_deleted=True)
        return [row["Id"] for row in rows if row["Id"] in wanted]

    def webhooks(self) -> dict[str, Any]:
        return _json(self.hubspot.get("/__emulator/webhooks"))

    def outbound(self) -> dict[str, Any]:
        return _json(self.salesforce.get("/__emulator/outbound"))

    # -- acting as people do ----------------------------------------------------------------

    def unsubscribe_all_in_hubspot(self, email: str) -> None:
        """The person follows the unsubscribe link in a HubSpot email: out of all email."""
        status = {"email": email, "status": "UNSUBSCRIBED", "timestamp": _now()}
        reply = self.hubspot.post(
            "/__emulator/seed", json={"statuses": [status], "source": "SUBSCRIPTION_PAGE"}
        )
        reply.raise_for_status()

    def create_hubspot_contact(self, properties: dict[str, str]) -> str:
        """An integration creates a contact through HubSpot's CRM API (which, unlike forms
        and imports, is not stopped by HubSpot's GDPR blocklist)."""
        reply = self.hubspot.post(
            "/crm/v3/objects/contacts",
            json={"properties": properties},
            headers={"Authorization": "Bearer demo-integration"},
        )
        return str(_json(reply)["id"])

    def rep_update(self, sobject: str, record_id: str, fields: dict[str, Any]) -> None:
        """A sales rep edits a record in Salesforce (the REST API, as the UI does)."""
        reply = self.salesforce.patch(
            f"{API}/sobjects/{sobject}/{record_id}", json=fields, headers=self._rep()
        )
        reply.raise_for_status()

    def rep_create(self, sobject: str, fields: dict[str, Any]) -> str:
        reply = self.salesforce.post(f"{API}/sobjects/{sobject}", json=fields, headers=self._rep())
        return str(_json(reply)["id"])

    def seller_update(self, entity_set: str, record_id: str, fields: dict[str, Any]) -> None:
        """A seller edits a row in the Dynamics 365 app (the Web API, as the app does);
        ``If-Match: *`` so that a deleted row is not re-created."""
        reply = self.dynamics.patch(
            f"{DATAVERSE_API}/{entity_set}({record_id})",
            json=fields,
            headers=self._seller() | {"If-Match": "*"},
        )
        reply.raise_for_status()

    def seller_create(self, entity_set: str, fields: dict[str, Any]) -> str:
        """A seller adds a row; its id, from the ``OData-EntityId`` the Web API answers."""
        reply = self.dynamics.post(
            f"{DATAVERSE_API}/{entity_set}", json=fields, headers=self._seller()
        )
        reply.raise_for_status()
        return reply.headers["OData-EntityId"].rpartition("(")[2].rstrip(")")

    def _seller(self) -> dict[str, str]:
        """A seller's session: a token of the seller's app registration from Entra ID."""
        if self._seller_token is None:
            client_id, secret = SELLER_APP
            reply = self.dynamics.post(
                f"/{self.tenant_id}/oauth2/v2.0/token",
                data={"grant_type": "client_credentials", "client_id": client_id,
                      "client_secret": secret,
                      "scope": f"{self.dynamics.base_url}/.default"},
            )  # fmt: skip
            self._seller_token = str(_json(reply)["access_token"])
        return {"Authorization": f"Bearer {self._seller_token}"}

    def dynamics_deliveries(self) -> dict[str, Any]:
        """What each webhook delivery of the environment answered, and how many wait."""
        return _json(self.dynamics.get("/__emulator/webhooks/deliveries"))

    def _rep(self) -> dict[str, str]:
        """A rep's session, from an OAuth username-password login."""
        if self._rep_token is None:
            reply = self.salesforce.post(
                "/services/oauth2/token",
                data={"grant_type": "password", "username": "rep@example.com",
                      "password": "rep-password", "client_id": "demo-ui",
                      "client_secret": "demo-ui-secret"},
            )  # fmt: skip
            self._rep_token = str(_json(reply)["access_token"])
        return {"Authorization": f"Bearer {self._rep_token}"}


def wait_for(condition: Callable[[], bool], timeout: float, every: float = 0.1) -> float | None:
    """Seconds until ``condition()`` held, polling; None if it did not within ``timeout``."""
    start = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        time.sleep(every)


def _basis(read: Callable[[str | None], str | None], value: str | None) -> str | None:
    try:
        return read(value)
    except UnknownBasis:
        return value


def _json(reply: httpx.Response) -> dict[str, Any]:
    reply.raise_for_status()
    body: dict[str, Any] = reply.json()
    return body


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
