"""What a vendor brings to the bridge besides its adapter: its settings section, defaults,
its webhook intake and how it names its people. One :class:`Vendor` per folder under
``bridge/adapters/``, listed in :mod:`bridge.adapters.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from bridge.adapters.base import CrmAdapter
from bridge.model import Purpose


class VendorSettings(BaseModel):
    """What every vendor's settings section holds besides its own keys."""

    model_config = ConfigDict(extra="forbid")

    give_up_after_seconds: float = Field(
        15,
        gt=0,
        le=3600,
        description="how long a call that gets no answer, a 5xx or a rate limit is retried "
        "before the command fails with one line naming the CRM (a call in flight is bounded by "
        "its own timeout); the daemon's jobs try again on their next run",
    )


@dataclass(frozen=True)
class AdapterOptions:
    """What every adapter takes from the common settings."""

    purposes: Sequence[Purpose]
    keep_on_anonymize: Mapping[str, Sequence[str]]
    """Per ``<system>.<object>``: the non-personal fields anonymising keeps."""
    read_fields: Callable[[str], list[str]] = lambda _object_key: []
    """The fields of ``<system>.<object>`` the retention rules look at."""
    mark_due: bool = False
    """Retention rules exist: read and write the purge-due mark."""


class Rejected(Exception):
    """A webhook request refused before anything was stored; ``reason`` is short and
    countable, ``detail`` says more (never personal data)."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.status, self.reason, self.detail = status, reason, detail


@dataclass(frozen=True)
class WebhookRequest:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


# The event kinds the bridge acts on; a vendor's intake classifies each event once.
CONSENT = "consent"  # an opt-out, consent or lawful basis changed on a record
DELETION = "deletion"  # the person behind a record is to be forgotten (or already was)
OTHER = "other"  # recorded and dropped


@dataclass(frozen=True)
class IncomingEvent:
    key: str
    """The vendor's delivery-independent id: redeliveries share it."""
    event_type: str
    """The vendor's name for what happened; its last dotted part names a deletion's trigger."""
    kind: str
    object_type: str
    object_id: str
    occurred_at: str | None
    payload: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Accepted:
    events: list[IncomingEvent]
    reply: Callable[[int, int], tuple[bytes, str]]
    """(stored, duplicates) -> the body and media type the vendor expects back."""


class Intake(Protocol):
    """A vendor's webhook endpoint: who may call it, and what its events mean."""

    path: str
    """The route, e.g. ``/webhooks/<vendor>`` (path parameters in braces)."""

    def admit(self, section: Any, path_params: Mapping[str, str]) -> None:
        """Refuse (raise :class:`Rejected`) before the body is read."""

    def accept(self, section: Any, request: WebhookRequest, now_ms: int) -> Accepted:
        """Verify and parse; raise :class:`Rejected` for anything not genuine or malformed."""


@dataclass(frozen=True)
class Vendor:
    name: str
    """The settings section, ``System`` value and CLI choice."""
    title: str
    """The vendor's name as people write it, in text for people."""
    settings: type[BaseModel]
    connect: Callable[[Any, AdapterOptions], CrmAdapter]
    """(its settings section, options) -> an adapter; imports the vendor's client lazily."""
    configured: Callable[[Any], bool]
    """Whether the section holds credentials, so the CRM is in use."""
    credentials_hint: str
    intake: Intake
    person_objects: tuple[str, ...]
    """``<vendor>.<object>`` names of the records that are people (retention judges them)."""
    allowed_fields: Mapping[str, Sequence[str]]
    """Default minimisation allow-list per ``<vendor>.<object>``."""
    keep_on_anonymize: Mapping[str, Sequence[str]]
    purpose_keys: type[BaseModel]
    """The ``<vendor>_<key>`` entries a ``[[purposes]]`` table may hold for this vendor."""
    channel_of: Callable[[Any], str | None] = lambda _keys: None
    """The purpose's channel as the vendor's mapping implies it, if it does."""
    link_hint: str = ""
    """What to set so that reports can link to the vendor's records, if anything."""
    related_rows: bool = False
    """Whether legal holds and retention rules can name rows of this CRM (``related``)."""
    last_activity: bool = True
    """Whether its records say when someone last worked with the person (``active_at``);
    without, a retention rule must name a ``since`` date for them."""
    moved_keys: Mapping[str, str] = field(default_factory=dict)
    """Older dotted setting names -> their place in this vendor's section."""
