"""Who is who: email normalisation, keyed pseudonyms, and linking records into subjects."""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable

from bridge.model import CrmRecord, Subject


def normalise_email(email: str) -> str:
    """Trimmed, NFC, lower-cased. No provider tricks (dots and plus tags stay as they are)."""
    return unicodedata.normalize("NFC", email.strip()).lower()


# What a CRM takes as an address, checked before a request is stored: an unquoted local part
# (no spaces, brackets or separators; dots only between characters) and a domain of two or
# more labels (letters of any script, digits, inner hyphens) whose last is not a number.
_LOCAL = re.compile(r"(?!\.)(?!.*\.\.)[^\s@\"(),:;<>\[\\\]\x00-\x1f\x7f]{1,64}(?<!\.)")
_LABEL = r"[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+(?!\d+$){_LABEL}")


def is_email(text: str) -> bool:
    """Whether ``text`` is an email address (after normalisation), as far as its form goes.
    Hand-written: the email-validator package would add itself and a DNS library to the
    dependencies for a check of form alone."""
    local, at, domain = normalise_email(text).rpartition("@")
    return (
        bool(at)
        and len(local) + len(domain) < 254
        and _LOCAL.fullmatch(local) is not None
        and _DOMAIN.fullmatch(domain) is not None
    )


def subject_ref(key: bytes, email: str) -> str:
    """The keyed pseudonym of an email: HMAC-SHA256(key, normalised email), hex.

    Stable for one key, meaningless without it, and safe to log, audit and store.
    """
    return hmac.new(key, normalise_email(email).encode(), hashlib.sha256).hexdigest()


def _record_ref(key: bytes, record: CrmRecord) -> str:
    """Pseudonym for a record without any email: it is a subject of its own."""
    label = "record:" + "/".join(record.key)
    return hmac.new(key, label.encode(), hashlib.sha256).hexdigest()


class _DisjointSet:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        self.parent.setdefault(item, item)
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: str, b: str) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            # The smaller root wins so that the result does not depend on input order.
            low, high = sorted((root_a, root_b))
            self.parent[high] = low


def link_subjects(key: bytes, records: Iterable[CrmRecord]) -> list[Subject]:
    """Group records into subjects, transitively through any shared normalised email.

    The subject's ``subject_ref`` is the pseudonym of the smallest normalised *primary* email
    among its records, so the same records give the same subjects in any order.
    """
    emails_of: dict[tuple[str, str, str], list[str]] = {}
    unique: dict[tuple[str, str, str], CrmRecord] = {}
    sets = _DisjointSet()
    for record in records:
        unique[record.key] = record
        emails = [normalise_email(e) for e in record.emails if e.strip()]
        emails_of[record.key] = emails
        for email in emails:
            sets.union(emails[0], email)

    groups: dict[str, list[CrmRecord]] = {}
    lonely: list[Subject] = []
    for record_key, record in unique.items():
        emails = emails_of[record_key]
        if emails:
            groups.setdefault(sets.find(emails[0]), []).append(record)
        else:
            lonely.append(Subject(subject_ref=_record_ref(key, record), records=(record,)))

    subjects = []
    for members in groups.values():
        members.sort(key=lambda r: r.key)
        all_emails = frozenset(e for r in members for e in emails_of[r.key])
        primary = min(emails_of[r.key][0] for r in members if emails_of[r.key])
        subjects.append(
            Subject(
                subject_ref=subject_ref(key, primary), records=tuple(members), emails=all_emails
            )
        )
    return sorted(subjects + lonely, key=lambda s: s.subject_ref)
