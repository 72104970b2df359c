"""Identity: normalisation, pseudonyms and linking (property-tested where it matters)."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.adapters.hubspot import HUBSPOT
from bridge.adapters.salesforce import SALESFORCE
from bridge.identity import is_email, link_subjects, normalise_email, subject_ref
from bridge.model import CrmRecord, ObjectType

KEY = b"k" * 32
local_parts = st.sampled_from(
    ["ann", "Ann", " ANN ", "bob", "o'brien", "z+tag", "jürgen", "e\u0301"]
)
domains = st.sampled_from(["example.com", "EXAMPLE.com", "exämple.de"])
emails = st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains)


@given(st.text())
def test_normalisation_is_idempotent(text: str) -> None:
    once = normalise_email(text)
    assert normalise_email(once) == once


def test_normalisation_trims_lowercases_and_composes_unicode() -> None:
    assert normalise_email("  O'Brien@Example.COM ") == "o'brien@example.com"
    assert normalise_email("Jos\u0065\u0301@example.com") == "jos\u00e9@example.com"
    assert normalise_email("a.b+tag@gmail.com") == "a.b+tag@gmail.com"  # no provider tricks


def test_subject_ref_is_keyed_and_case_blind() -> None:
    assert subject_ref(KEY, "Ann@Example.com") == subject_ref(KEY, "ann@example.com ")
    assert subject_ref(KEY, "ann@example.com") != subject_ref(b"x" * 32, "ann@example.com")
    assert len(subject_ref(KEY, "ann@example.com")) == 64


records = st.lists(
    st.builds(
        lambda system, kind, ident, addresses: CrmRecord(
            system=system, object_type=kind, id=str(ident), emails=tuple(addresses)
        ),
        st.sampled_from([HUBSPOT, SALESFORCE]),
        st.sampled_from(list(ObjectType)),
        st.integers(0, 10_000),
        st.lists(emails, max_size=3),
    ),
    max_size=12,
    unique_by=lambda r: r.key,
)


@given(records, st.randoms())
def test_linking_does_not_depend_on_input_order(items: list[CrmRecord], rnd: Random) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert link_subjects(KEY, items) == link_subjects(KEY, shuffled)


@given(records)
def test_linking_puts_every_record_in_exactly_one_subject(items: list[CrmRecord]) -> None:
    subjects = link_subjects(KEY, items)
    linked = [r.key for s in subjects for r in s.records]
    assert sorted(linked) == sorted(r.key for r in items)
    for subject in subjects:  # records in different subjects never share an email
        others = {e for s in subjects if s is not subject for e in s.emails}
        assert not subject.emails & others


def test_linking_is_transitive_through_additional_emails() -> None:
    hubspot = CrmRecord(HUBSPOT, ObjectType.CONTACT, "1", ("ann@work.com", "ann@home.com"))
    contact = CrmRecord(SALESFORCE, ObjectType.CONTACT, "003A", ("ANN@HOME.COM",))
    lead = CrmRecord(SALESFORCE, ObjectType.LEAD, "00QB", ("ann@work.com",))
    stranger = CrmRecord(SALESFORCE, ObjectType.LEAD, "00QC", ("bob@work.com",))
    no_email = CrmRecord(SALESFORCE, ObjectType.CONTACT, "003D", ())
    subjects = link_subjects(KEY, [lead, stranger, hubspot, no_email, contact])
    by_size = sorted(subjects, key=lambda s: len(s.records))
    assert [len(s.records) for s in by_size] == [1, 1, 3]
    ann = by_size[-1]
    assert ann.emails == {"ann@work.com", "ann@home.com"}
    assert ann.subject_ref == subject_ref(KEY, "ann@home.com")  # smallest primary email


@given(emails.filter(lambda email: " " not in email.strip()))
def test_every_address_people_type_is_an_email_address(email: str) -> None:
    assert is_email(email) and is_email(email.upper()) and is_email(f"  {email}\t")


@pytest.mark.parametrize(
    "text",
    [
        "ann", "ann@", "@example.com", "ann@example", "ann@@example.com", "a n@example.com",
        "ann@exa mple.com", ".ann@example.com", "ann.@example.com", "a..n@example.com",
        "ann@-example.com", "ann@example-.com", "ann@example..com", "ann@example.com.",
        "ann@1.2.3.4", "<ann@example.com>", "ann@example_x.com", "ann@ex\x00ample.com",
        "a\x01@example.com", "ann@[1.2.3.4]", "a" * 65 + "@example.com", "", "ann,bob@example.com",
    ],
)  # fmt: skip
def test_malformed_addresses_are_not_email_addresses(text: str) -> None:
    assert not is_email(text)
