"""Who a person is across systems: the one lookup that sync, erasure, export and rectify share.

A person is every record that shares a normalised email with another of theirs, transitively
(ARCHITECTURE.md, "A sync"): one CRM's additional address of a person may be another CRM's
only one, and that record's address a third record's. ``find_person`` asks every
system, round by round, for the addresses it has not asked about yet, until a round brings no
new address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bridge.adapters.base import RecordReader
from bridge.errors import BridgeError
from bridge.identity import normalise_email
from bridge.model import CrmRecord, System

MAX_ROUNDS = 10
"""Lookups through shared emails before giving up: a real person's addresses link within
two or three; a chain longer than this is more likely an address several people share (a
team mailbox) than one person."""


@dataclass(frozen=True)
class Person:
    """Every record found, once each, and every address known: those asked about and those
    the records hold, normalised and sorted."""

    records: list[CrmRecord]
    emails: list[str]


class LookupBoundReached(BridgeError):
    """The addresses still led to new ones after ``MAX_ROUNDS`` rounds; ``partial`` holds
    what was found so far, for a caller that can go on with less (the sync)."""

    def __init__(self, rounds: int, partial: Person, unsearched: int) -> None:
        super().__init__(
            f"a person's addresses still led to new ones after {rounds} rounds of lookups "
            f"through shared emails ({len(partial.emails)} addresses and "
            f"{len(partial.records)} records so far, {unsearched} addresses not searched); "
            "an address several people share (a team mailbox) may be linking them: correct "
            "the records, then ask again"
        )
        self.rounds = rounds
        self.partial = partial
        self.unsearched = unsearched


def find_person(
    adapters: Mapping[System, RecordReader],
    emails: Iterable[str],
    *,
    max_rounds: int | None = None,
) -> Person:
    """Every record, in every system, of the people these emails reach, and all of their
    addresses: the transitive closure through shared emails. Each round asks each system
    (``find_by_emails``, in bulk) only about the addresses found in the round before.

    Raises ``LookupBoundReached`` (with the partial result) when addresses not yet searched
    remain after ``max_rounds`` (default ``MAX_ROUNDS``) rounds; adapter errors pass through.
    """
    rounds = MAX_ROUNDS if max_rounds is None else max_rounds
    known = _normalised(emails)
    asked: set[str] = set()
    by_key: dict[tuple[str, str, str], CrmRecord] = {}
    for _ in range(rounds):
        fresh = sorted(known - asked)
        if not fresh:
            break
        asked.update(fresh)
        for adapter in adapters.values():
            for record in adapter.find_by_emails(fresh):
                by_key[record.key] = record
                known |= _normalised(record.emails)
    person = Person(records=list(by_key.values()), emails=sorted(known))
    if unsearched := known - asked:
        raise LookupBoundReached(rounds, person, len(unsearched))
    return person


def find_holders(adapters: Mapping[System, RecordReader], emails: Iterable[str]) -> Person:
    """Every record that holds one of these emails, and those emails alone: no closure
    through the records' other addresses. For a person acting on the addresses they proved
    (the portal), to whom an address they did not prove gives nothing."""
    given = _normalised(emails)
    by_key: dict[tuple[str, str, str], CrmRecord] = {}
    for adapter in adapters.values():
        for record in adapter.find_by_emails(sorted(given)) if given else ():
            if given & _normalised(record.emails):
                by_key[record.key] = record
    return Person(records=list(by_key.values()), emails=sorted(given))


def find_people(
    adapters: Mapping[System, RecordReader], people: Sequence[Iterable[str]]
) -> list[Person]:
    """``find_person`` for each of many people, the lookups shared: one closure over every
    address (each system asked in bulk, round by round), then each person's own closure
    walked within the records found, which hold every record the person's alone would.

    Raises ``LookupBoundReached`` as ``find_person`` does, for all of them together: the
    caller asks about each alone to learn whose addresses run on."""
    wanted = [_normalised(emails) for emails in people]
    found = find_person(adapters, set().union(*wanted))
    holding: dict[str, list[CrmRecord]] = {}
    for record in found.records:
        for email in _normalised(record.emails):
            holding.setdefault(email, []).append(record)
    persons = []
    for known in wanted:
        queue, records = list(known), {}
        while queue:
            for record in holding.get(queue.pop(), ()):
                if record.key not in records:
                    records[record.key] = record
                    fresh = _normalised(record.emails) - known
                    known |= fresh
                    queue.extend(fresh)
        persons.append(Person(records=list(records.values()), emails=sorted(known)))
    return persons


def _normalised(emails: Iterable[str]) -> set[str]:
    return {normalise_email(e) for e in emails if e.strip()}
