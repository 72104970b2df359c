"""Which consent path the portal and the token allow, learnt once and reported.

HubSpot's v4 batch endpoints for subscription statuses (100 addresses per call) need the
``communication_preferences.statuses.batch.*`` scopes, which only Marketing Hub Enterprise
can grant. Without them consent is read from the contacts' opt-out properties, with a
single-address status read where those cannot tell, and withdrawals go one address per
call (docs/vendors/hubspot.md, "Tiers and scopes"). Reads and writes are decided
separately: from the scopes HubSpot lists for the token, asked on first use; or, when it
will not say, by trying the batch endpoint, whose 403 ``MISSING_SCOPES`` switches that
capability for good. Each decision is one info line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

from bridge.logs import get_logger

BATCH_READ = "communication_preferences.statuses.batch.read"
BATCH_WRITE = "communication_preferences.statuses.batch.write"
PREFERENCES_READ = "communication_preferences.read"
PREFERENCES_WRITE = "communication_preferences.write"
PREFERENCES_READ_WRITE = "communication_preferences.read_write"  # stands for both of the above

# The scopes the private app needs, with the Marketing Hub tiers that need each: the list
# config/hubspot-scopes.txt ships (tests hold the two together). Below Enterprise HubSpot
# cannot grant the batch scopes, and the bridge goes one address per call without them.
TIERS = ("starter", "professional", "enterprise")
SCOPES: dict[str, tuple[str, ...]] = {
    "crm.objects.contacts.read": TIERS,
    "crm.objects.contacts.write": TIERS,
    "crm.schemas.contacts.read": TIERS,
    "crm.schemas.contacts.write": TIERS,
    PREFERENCES_READ: TIERS,
    PREFERENCES_WRITE: TIERS,
    BATCH_READ: ("enterprise",),
    BATCH_WRITE: ("enterprise",),
}


def missing_scopes(granted: frozenset[str]) -> list[str]:
    """The scopes every tier needs that ``granted`` lacks (``.read_write`` standing for
    ``communication_preferences.read`` and ``.write``)."""
    held = set(granted)
    if PREFERENCES_READ_WRITE in held:
        held |= {PREFERENCES_READ, PREFERENCES_WRITE}
    return [scope for scope, tiers in SCOPES.items() if tiers == TIERS and scope not in held]


log = get_logger(__name__)


class Path(StrEnum):
    BATCH = "batch"  # v4 batch endpoints, 100 addresses per call
    SINGLE = "single"  # endpoints every tier has, one address per call where it must


_READS = {
    Path.BATCH: "v4 batch status reads, 100 addresses per call",
    Path.SINGLE: "the contacts' opt-out properties (100 contacts per call), and a v4 "
    "single-address status read only for an address whose properties show a status",
}
_WRITES = {
    Path.BATCH: "v4 batch writes, 100 addresses per call",
    Path.SINGLE: "v4 single-address writes, one call per address, paced",
}
GRANTS = "v3 subscribe, one address per call: it refuses to resubscribe an opt-out"


@dataclass(frozen=True)
class Capabilities:
    """The consent paths in use, and how they were learnt: what a check of the set-up shows."""

    reads: Path
    writes: Path
    scopes: frozenset[str] | None
    """The scopes HubSpot listed for the token; None when it would not say."""
    learnt: str

    def lines(self) -> list[str]:
        """One human-readable line per capability, then where the choice came from."""
        return [
            f"consent reads: {_READS[self.reads]}",
            f"withdrawals and unsubscribe-all: {_WRITES[self.writes]}",
            f"grants: {GRANTS}",
            f"chosen from {self.learnt}",
        ]


def _from_scopes(scopes: frozenset[str] | None) -> Capabilities:
    if scopes is None:
        learnt = "no scopes (HubSpot lists none for this token): batch until HubSpot refuses"
        return Capabilities(Path.BATCH, Path.BATCH, None, learnt)
    reads = Path.BATCH if BATCH_READ in scopes else Path.SINGLE
    writes = Path.BATCH if BATCH_WRITE in scopes else Path.SINGLE
    missing = [scope for scope in (BATCH_READ, BATCH_WRITE) if scope not in scopes]
    learnt = "the token's scopes" + (f" (without {', '.join(missing)})" if missing else "")
    return Capabilities(reads, writes, scopes, learnt)


class ConsentPaths:
    """The adapter's current ``Capabilities``: probed on first use, narrowed on refusal.

    ``probe`` returns the token's scopes (None: unknown); without one, batch is assumed.
    """

    def __init__(self, probe: Callable[[], frozenset[str] | None] | None = None) -> None:
        self._probe = probe
        self._lock = threading.Lock()
        self._known: Capabilities | None = None

    def current(self) -> Capabilities:
        with self._lock:
            if self._known is None:
                scopes = self._probe() if self._probe else None
                self._known = _from_scopes(scopes)
                self._log(self._known)
            return self._known

    @property
    def reads(self) -> Path:
        return self.current().reads

    @property
    def writes(self) -> Path:
        return self.current().writes

    def refused(self, capability: Literal["reads", "writes"]) -> None:
        """HubSpot answered a batch call of ``capability`` with 403 ``MISSING_SCOPES``: from
        now on it takes the single-address path."""
        known = self.current()
        reads = Path.SINGLE if capability == "reads" else known.reads
        writes = Path.SINGLE if capability == "writes" else known.writes
        learnt = f"HubSpot's 403 MISSING_SCOPES to a batch {capability.removesuffix('s')}"
        with self._lock:
            self._known = replace(known, reads=reads, writes=writes, learnt=learnt)
            self._log(self._known)

    @staticmethod
    def _log(known: Capabilities) -> None:
        log.info(
            "hubspot.consent_paths",
            reads=known.reads.value,
            writes=known.writes.value,
            learnt=known.learnt,
        )
