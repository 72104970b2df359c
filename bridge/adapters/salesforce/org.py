"""What one Salesforce org lets the bridge hold: per-purpose consent, or the flags only.

Data Protection and Privacy brings ``Individual``, ``ContactPointTypeConsent``,
``DataUsePurpose`` and ``DataUseLegalBasis`` (and ``IndividualId`` on Contact and Lead); many
orgs never turn it on, and an integration user may not be granted them. The global describe
lists only the objects the org has *and* the user may use, with what the user may do to each,
so it decides the path once; the describes of Contact and Lead show whether field-level
security hides the link to the Individual. The facts: docs/vendors/salesforce.md ("Orgs
without the privacy objects").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# What the privacy path does with each object, as the global describe's flags say it.
PRIVACY_OBJECTS: dict[str, tuple[str, ...]] = {
    "Individual": ("queryable", "createable", "updateable"),
    "ContactPointTypeConsent": ("queryable", "createable", "updateable"),
    "DataUsePurpose": ("queryable",),
    "DataUseLegalBasis": ("queryable",),  # read as DataUsePurpose.LegalBasis.Name
    "ContactPointEmail": ("queryable",),
}
LINK = "IndividualId"  # on Contact and Lead: a person's Individual
LINKED = ("Contact", "Lead")
VERBS = {"queryable": "read", "createable": "create", "updateable": "edit"}
SETUP = (
    "turn on Setup › Data Protection and Privacy and deploy "
    "config/salesforce/consent_bridge.permissionset-meta.xml"
)


@dataclass(frozen=True)
class OrgProfile:
    """The path chosen for one org: ``privacy`` when it holds per-purpose consent, else
    the flags and the lawful basis on Contact and Lead only, ``missing`` saying why."""

    privacy: bool
    missing: str = ""

    @property
    def name(self) -> str:
        return "privacy" if self.privacy else "basic"

    def lines(self, lawful_basis_field: str | None) -> list[str]:
        """What the bridge syncs in this org, one line each (``bridge check --crm``)."""
        basis = (
            f"lawful basis: {lawful_basis_field} on Contact and Lead"
            if lawful_basis_field
            else "lawful basis: not held (salesforce.lawful_basis_field is unset)"
        )
        if self.privacy:
            consent = (
                "per-purpose consent: ContactPointTypeConsent rows of each person's Individual "
                "(Data Protection and Privacy is on)"
            )
        else:
            consent = f"per-purpose consent: not holdable in this org ({self.missing}); {SETUP}"
        return [
            f"path: {self.name}",
            consent,
            "email opt-out: HasOptedOutOfEmail on Contact and Lead",
            "do not call: DoNotCall on Contact and Lead",
            basis,
        ]


def detect(
    objects: Iterable[Mapping[str, Any]], fields_of: Callable[[str], Sequence[Mapping[str, Any]]]
) -> OrgProfile:
    """The path from the global describe's ``sobjects`` and, when every privacy object is
    there, the fields Contact and Lead show this user (``fields_of``, a describe)."""
    described = {str(o.get("name")): o for o in objects}
    for name, flags in PRIVACY_OBJECTS.items():
        found = described.get(name)
        if found is None:
            return OrgProfile(
                False,
                f"{name} is not available to the integration user: Data Protection and "
                "Privacy is off, or no permission set grants it",
            )
        refused = [VERBS[flag] for flag in flags if not found.get(flag)]
        if refused:
            return OrgProfile(False, f"the integration user may not {' or '.join(refused)} {name}")
    for sobject in LINKED:
        link = next((f for f in fields_of(sobject) if f.get("name") == LINK), None)
        if link is None or not link.get("updateable"):
            return OrgProfile(
                False,
                f"{sobject}.{LINK} is hidden from the integration user or read-only "
                "(field-level security)",
            )
    return OrgProfile(True)
