"""The SOQL tokenizer, parser and semantics of the Salesforce emulator, without HTTP.

The property tests pin the contract adapters rely on: whatever text simple-salesforce's
``format_soql`` quotes comes back unchanged, in ``=`` and in ``LIKE``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simple_salesforce import format_soql

from bridge_sandbox.emulators.salesforce_config import SalesforceEmulatorConfig
from bridge_sandbox.emulators.salesforce_model import SalesforceError
from bridge_sandbox.emulators.salesforce_soql import (
    Comparison,
    InList,
    Junction,
    Not,
    SoqlSyntaxError,
    StringLiteral,
    like_pattern,
    parse,
    tokenize,
)
from bridge_sandbox.emulators.salesforce_state import SalesforceState


def string_token(source: str) -> StringLiteral:
    tokens = tokenize(source)
    assert [t.kind for t in tokens] == ["string", "eof"]
    value = tokens[0].value
    assert isinstance(value, StringLiteral)
    return value


@given(st.text())
def test_format_soql_output_round_trips_through_the_tokenizer(text: str) -> None:
    assert string_token(format_soql("{}", text)).value == text


@given(st.text(), st.text())
def test_format_soql_like_escapes_make_wildcards_literal(text: str, tail: str) -> None:
    exact = like_pattern(string_token(format_soql("'{:like}'", text)))
    assert exact.fullmatch(text)
    assert exact.fullmatch(text + "x") is None
    prefix = like_pattern(string_token(format_soql("'{:like}%'", text)))
    assert prefix.fullmatch(text + tail)


def test_escapes_decode_as_salesforce_documents() -> None:
    literal = string_token(r"'O\'Brien \\ \"x\" \n\t \%\_ %_'")
    assert literal.value == 'O\'Brien \\ "x" \n\t %_ %_'
    assert literal.escaped_wildcards == {17, 18}
    assert like_pattern(literal).fullmatch('O\'Brien \\ "x" \n\t %_ anything!')
    assert not like_pattern(literal).fullmatch('O\'Brien \\ "x" \n\t ab anything!')


def test_literals_are_typed() -> None:
    kinds = [
        (t.kind, t.value)
        for t in tokenize("2024-01-01T00:00:00Z 2024-01-01T01:00:00+01:00 2024-02-29 -5 2.5")
    ]
    utc_midnight = datetime(2024, 1, 1, tzinfo=UTC)
    assert kinds == [
        ("datetime", utc_midnight),
        ("datetime", utc_midnight),
        ("date", date(2024, 2, 29)),
        ("number", -5),
        ("number", 2.5),
        ("eof", None),
    ]
    offset = tokenize("2024-01-01T00:00:00.123-05:30")[0].value
    assert offset == datetime(2024, 1, 1, 0, 0, 0, 123000, tzinfo=timezone(-timedelta(hours=5.5)))


def test_parser_builds_the_expected_tree() -> None:
    query = parse(
        "select Id, Individual.ShouldForget from Contact "
        "where not (Email like 'a%' or Email = null) and Id NOT IN ('a', 'b') "
        "order by LastName desc nulls first, Id limit 10 offset 5"
    )
    assert [f.dotted for f in query.fields] == ["Id", "Individual.ShouldForget"]
    assert query.sobject == "Contact"
    assert isinstance(query.where, Junction) and query.where.operator == "AND"
    negation, membership = query.where.operands
    assert isinstance(negation, Not) and isinstance(negation.operand, Junction)
    like, is_null = negation.operand.operands
    assert isinstance(like, Comparison) and like.operator == "LIKE"
    assert isinstance(is_null, Comparison) and is_null.value is None
    assert isinstance(membership, InList) and membership.negated
    assert [(o.field.dotted, o.descending, o.nulls_first) for o in query.order_by] == [
        ("LastName", True, True),
        ("Id", False, True),
    ]
    assert (query.limit, query.offset) == (10, 5)
    assert parse("SELECT COUNT() FROM Lead").is_count


@pytest.mark.parametrize(
    ("soql", "column", "token"),
    [
        ("SELECT Id FROM Contact WHERE", 29, "<EOF>"),
        ("SELECT Id FROMM Contact", 11, "FROMM"),
        ("SELECT Id FROM Contact WHERE a = 1 AND b = 2 OR c = 3", 46, "OR"),
        ("SELECT Id FROM Contact WHERE Email IN ()", 40, ")"),
        ("SELECT Id FROM Contact LIMIT -1", 30, "-1"),
        ("SELECT Id, FROM Contact", 12, "FROM"),
        ('SELECT Id FROM Contact WHERE Email = "x"', 38, '"'),
        ("SELECT Id FROM Contact GROUP BY Id", 24, "GROUP"),
    ],
)
def test_syntax_errors_point_at_the_offending_token(soql: str, column: int, token: str) -> None:
    with pytest.raises(SoqlSyntaxError) as caught:
        parse(soql)
    assert caught.value.message == f"unexpected token: '{token}'"
    assert caught.value.position == column - 1


def test_bad_string_literals_are_malformed() -> None:
    with pytest.raises(SoqlSyntaxError, match="Illegal character sequence"):
        parse(r"SELECT Id FROM Contact WHERE Email = 'a\qb'")
    with pytest.raises(SoqlSyntaxError, match="mismatched character '<EOF>'"):
        parse("SELECT Id FROM Contact WHERE Email = 'open")


# Semantics, against the emulator's state (no HTTP).


@pytest.fixture
def state() -> SalesforceState:
    state = SalesforceState(SalesforceEmulatorConfig())
    individual = state.create("Individual", {"LastName": "Forget", "ShouldForget": True})
    rows: list[dict[str, Any]] = [
        {"LastName": "Able", "Email": "ABLE@example.com", "IndividualId": individual},
        {"LastName": "baker", "Email": "o'brien@example.com", "HasOptedOutOfEmail": True},
        {"LastName": "Carter"},
    ]
    for row in rows:
        state.create("Contact", row)
    return state


def names(state: SalesforceState, soql: str) -> list[str]:
    page = state.query(soql, include_deleted=False, batch_size=None, version="59.0")
    return [record["LastName"] for record in page["records"]]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("Email = 'able@EXAMPLE.com'", ["Able"]),
        (format_soql("Email = {}", "O'Brien@example.com"), ["baker"]),
        ("Email != 'able@example.com'", ["baker", "Carter"]),
        ("Email = null", ["Carter"]),
        ("Email NOT IN ('able@example.com')", ["baker", "Carter"]),
        ("Email LIKE '%@EXAMPLE.COM'", ["Able", "baker"]),
        ("Email LIKE 'a_le@%'", ["Able"]),
        ("HasOptedOutOfEmail = true", ["baker"]),
        ("NOT HasOptedOutOfEmail = true", ["Able", "Carter"]),
        ("Individual.ShouldForget = true", ["Able"]),
        ("(LastName = 'Able' OR LastName = 'Carter') AND Email != null", ["Able"]),
        ("LastName > 'B'", ["baker", "Carter"]),
        ("CreatedDate > 2000-01-01T00:00:00Z", ["Able", "baker", "Carter"]),
        ("Contact.LastName = 'carter'", ["Carter"]),
    ],
)
def test_filters_follow_soql_rules(state: SalesforceState, where: str, expected: list[str]) -> None:
    assert names(state, f"SELECT LastName FROM Contact WHERE {where}") == expected  # noqa: S608


def test_order_by_puts_nulls_first_ascending_and_last_descending(state: SalesforceState) -> None:
    assert names(state, "SELECT LastName FROM Contact ORDER BY Email") == [
        "Carter",
        "Able",
        "baker",
    ]
    assert names(state, "SELECT LastName FROM Contact ORDER BY Email DESC") == [
        "baker",
        "Able",
        "Carter",
    ]
    assert names(state, "SELECT LastName FROM Contact ORDER BY Email DESC NULLS FIRST LIMIT 2") == [
        "Carter",
        "baker",
    ]
    assert names(state, "SELECT LastName FROM Contact ORDER BY LastName LIMIT 2 OFFSET 1") == [
        "baker",
        "Carter",
    ]


def test_relationship_fields_come_back_nested(state: SalesforceState) -> None:
    page = state.query(
        "SELECT Id, Individual.ShouldForget, Individual.Name FROM Contact ORDER BY LastName",
        include_deleted=False,
        batch_size=None,
        version="59.0",
    )
    first, second = page["records"][:2]
    assert first["Individual"]["attributes"]["type"] == "Individual"
    assert first["Individual"]["ShouldForget"] is True
    assert first["Individual"]["Name"] == "Forget"
    assert second["Individual"] is None


@pytest.mark.parametrize(
    ("soql", "code", "fragment"),
    [
        ("SELECT Idx FROM Contact", "INVALID_FIELD", "No such column 'Idx' on entity 'Contact'"),
        ("SELECT Id FROM Contactz", "INVALID_TYPE", "sObject type 'Contactz' is not supported"),
        (
            "SELECT Indiv.Name FROM Contact",
            "INVALID_FIELD",
            "Didn't understand relationship 'Indiv'",
        ),
        (
            "SELECT Id FROM Contact WHERE HasOptedOutOfEmail = 'true'",
            "INVALID_QUERY_FILTER_OPERATOR",
            "must be of type boolean and should not be enclosed in quotes",
        ),
        (
            "SELECT Id FROM Contact WHERE CreatedDate > 2024-01-01",
            "INVALID_QUERY_FILTER_OPERATOR",
            "must be of type dateTime",
        ),
        ("SELECT Id FROM Contact WHERE Id = 'nope'", "INVALID_QUERY_FILTER_OPERATOR", "invalid ID"),
        ("SELECT Id, id FROM Contact", "MALFORMED_QUERY", "duplicate field selected: Id"),
        ("SELECT Id FROM Contact WHERE", "MALFORMED_QUERY", "unexpected token: '<EOF>'"),
    ],
)
def test_query_errors_are_worded_as_salesforce(
    state: SalesforceState, soql: str, code: str, fragment: str
) -> None:
    with pytest.raises(SalesforceError) as caught:
        state.query(soql, include_deleted=False, batch_size=None, version="59.0")
    (error,) = caught.value.errors
    assert caught.value.status == 400
    assert error.code == code
    assert fragment in error.message
    assert "ERROR at Row:1:Column:" in error.message


def test_count_query_returns_only_the_total(state: SalesforceState) -> None:
    page = state.query(
        "SELECT COUNT() FROM Contact WHERE Email != null", False, batch_size=None, version="59.0"
    )
    assert page == {"totalSize": 2, "done": True, "records": []}
