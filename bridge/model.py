"""The common model every adapter normalises into and every policy reasons about.

No vendor names appear in field names. Fields that hold personal data carry the metadata
``personal=True``; the log processor and the audit log refuse to let their values through.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, NewType

from pydantic import BaseModel, ConfigDict, Field

PERSONAL = {"personal": True}

System = NewType("System", str)
"""A CRM, by the name the vendor registry gives it (``bridge.adapters.registry``)."""


class ObjectType(StrEnum):
    CONTACT = "contact"
    LEAD = "lead"
    INDIVIDUAL = "individual"


PEOPLE = frozenset({ObjectType.CONTACT, ObjectType.LEAD})
"""The object types whose records are people (an Individual only describes one)."""


class LawfulBasis(StrEnum):
    """GDPR Art. 6(1)(a)-(f), plus ``not_applicable`` for records outside its scope."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal_obligation"
    VITAL_INTERESTS = "vital_interests"
    PUBLIC_TASK = "public_task"
    LEGITIMATE_INTERESTS = "legitimate_interests"
    NOT_APPLICABLE = "not_applicable"


class Channel(StrEnum):
    """How a purpose reaches the person; the two with a global opt-out of their own."""

    EMAIL = "email"
    PHONE = "phone"


class ConsentStatus(StrEnum):
    GRANTED = "granted"
    WITHDRAWN = "withdrawn"
    UNKNOWN = "unknown"


class Purpose(BaseModel):
    """A processing purpose, configured once and mapped onto each vendor's own notion of it.

    The mapping comes as ``<vendor>_<key>`` entries (``[[purposes]]`` tables); each vendor
    checks and reads its own through :meth:`mapping`, so this model names no vendor.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    id: str
    description: str = ""
    channel: str = Field(
        Channel.EMAIL.value, description="how the purpose reaches the person: email, phone, ..."
    )

    def mapping(self, vendor: str) -> dict[str, Any]:
        """This purpose's ``<vendor>_*`` entries, without the prefix."""
        prefix = f"{vendor}_"
        extra = self.model_extra or {}
        return {k.removeprefix(prefix): v for k, v in extra.items() if k.startswith(prefix)}


class RelatedRecords(BaseModel):
    """Rows of ``related_object`` whose ``link_field`` points at a person's record and that
    match ``where`` (in the vendor's query language): a deal, a quote, a task that says
    something about the person the record alone does not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    related_object: str = Field(description="e.g. Opportunity, Task")
    link_field: str = Field(
        description="the field pointing at the person's record: ContactId, WhoId"
    )
    where: str = Field(
        description="condition on the related object, in the vendor's query language"
    )
    system: str | None = Field(
        None,
        description="the CRM whose rows these are (a vendor's name, as its settings section "
        "is called); None: the one configured CRM that keeps related rows",
    )

    def for_system(self, system: str) -> bool:
        """Whether ``system``'s rows are the ones meant."""
        return self.system is None or self.system == system


@dataclass(frozen=True, slots=True)
class Evidence:
    """How a consent was captured: what makes a grant an *active act* of the person."""

    capture_source: str | None = None
    captured_at: datetime | None = None
    double_opt_in_at: datetime | None = None

    @property
    def is_active_act(self) -> bool:
        return bool(self.capture_source) and self.captured_at is not None


@dataclass(frozen=True, slots=True)
class Consent:
    purpose: str
    status: ConsentStatus
    changed_at: datetime | None
    source_system: System
    source_record: str
    lawful_basis: LawfulBasis | None = None
    explanation: str | None = None
    evidence: Evidence = field(default_factory=Evidence)


@dataclass(frozen=True, slots=True)
class GlobalOptOut:
    """Opted out of all email, or of calls, whatever the purpose (each vendor's global flag)."""

    email: bool
    do_not_call: bool
    changed_at: datetime | None
    source_system: System
    source_record: str

    @property
    def any(self) -> bool:
        """Whether it opts the person out of anything."""
        return self.email or self.do_not_call

    def holds(self, channel: str) -> bool:
        """Whether this opts the person out of every purpose of ``channel``."""
        if channel == Channel.EMAIL:
            return self.email
        return channel == Channel.PHONE and self.do_not_call


@dataclass(frozen=True, slots=True)
class CrmRecord:
    system: System
    object_type: ObjectType
    id: str
    emails: tuple[str, ...] = field(default=(), metadata=PERSONAL)
    """Primary email first, then any additional ones, as the vendor holds them."""
    personal_fields: dict[str, str] = field(default_factory=dict, metadata=PERSONAL)
    lawful_basis: LawfulBasis | None = None
    consents: tuple[Consent, ...] = ()
    opt_out: GlobalOptOut | None = None
    modified_at: datetime | None = None
    created_at: datetime | None = None
    active_at: datetime | None = None
    """When someone last worked with the person on this record (a logged call, email or
    meeting), as the vendor tracks it; never the bridge's own writes."""
    purge_due: date | None = None
    """The day a retention rule will purge the person, as marked on this record."""
    attributes: dict[str, str] = field(default_factory=dict, metadata=PERSONAL)
    """Vendor fields the retention rules look at, by vendor name (values as text)."""

    object_name: str = ""
    """The vendor's own name of the object (``Contact``), as settings name it; default the
    common object type."""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.system, self.object_type.value, self.id)

    @property
    def object_key(self) -> str:
        """``<system>.<object>``, the way settings (allow-lists, retention rules) name it."""
        return f"{self.system}.{self.object_name or self.object_type.value}"


@dataclass(frozen=True, slots=True)
class Subject:
    """A person: every record, in every system, that shares a normalised email with another."""

    subject_ref: str
    records: tuple[CrmRecord, ...]
    emails: frozenset[str] = field(default=frozenset(), metadata=PERSONAL)
    """Every normalised email of the subject (needed to erase and to suppress them all)."""


@dataclass(frozen=True)
class AuditEvent:
    """One fact for the audit log: who did what, where, to whom, with what outcome and why.

    ``subject_ref`` is the pseudonym; no field ever holds an email, name or phone.
    """

    actor: str
    action: str
    outcome: str
    system: str | None = None
    record_id: str | None = None
    subject_ref: str | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def personal_field_names() -> frozenset[str]:
    """Names of model fields marked personal, so logs can redact them wherever they appear."""
    names = {"email", "first_name", "last_name", "name", "phone", "mobile_phone"}
    for cls in (CrmRecord, Subject):
        names.update(f.name for f in dataclasses.fields(cls) if f.metadata.get("personal"))
    return frozenset(names)
