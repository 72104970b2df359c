"""SQL for the privacy portal's sign-in proofs and sessions (``bridge/services/proofs.py``).

Each row's address(es) are sealed under a data key of their own (``store.data_keys``):
spending a proof or ending a session destroys it. Rows before keys, as everywhere.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import Connection, delete, func, insert, select, update

from bridge.sealing import Sealed
from bridge.store import data_keys
from bridge.store.db import Store
from bridge.store.tables import portal_proofs, portal_sessions

Found = Literal["id", "token_hash"]  # how a proof or a session is looked up
Asker = Literal["subject_ref", "client_ref"]  # whom the caps count proofs of
# A proof, or a session, with the data key of what it holds (``wrapped_key``).
_PROOFS = select(portal_proofs, data_keys.WRAPPED.label("wrapped_key")).select_from(
    data_keys.with_keys(data_keys.PORTAL_PROOF)
)
_SESSIONS = select(portal_sessions, data_keys.WRAPPED.label("wrapped_key")).select_from(
    data_keys.with_keys(data_keys.PORTAL_SESSION)
)


def add_proof(conn: Connection, row: dict[str, Any], email: Sealed) -> None:
    conn.execute(insert(portal_proofs).values(**row, attempts=0, email_sealed=email.token))
    data_keys.add(conn, data_keys.PORTAL_PROOF, {row["id"]: email.wrapped_key})


def proof(conn: Connection, by: Found, value: str) -> dict[str, Any] | None:
    """The proof with this id, or whose link's token has this hash."""
    found = conn.execute(_PROOFS.where(portal_proofs.c[by] == value)).mappings().first()
    return dict(found) if found else None


def issued_since(conn: Connection, since: str, by: Asker, ref: str) -> int:
    """How many proofs were issued after ``since`` to an address, or to a client: the
    last hour's, an hour ago on the dot not among them."""
    query = select(func.count()).where(
        portal_proofs.c[by] == ref, portal_proofs.c.issued_at > since
    )
    return int(conn.execute(query).scalar_one())


def count_attempt(conn: Connection, proof_id: str) -> None:
    conn.execute(
        update(portal_proofs)
        .where(portal_proofs.c.id == proof_id)
        .values(attempts=portal_proofs.c.attempts + 1)
    )


def spend(conn: Connection, proof_id: str, why: str | None) -> None:
    """The proof's address destroyed; with ``why`` (used, attempts), the proof dead too (an
    expired one needs no mark: its time says so)."""
    values: dict[str, Any] = {"email_sealed": None} | ({"spent": why} if why else {})
    conn.execute(update(portal_proofs).where(portal_proofs.c.id == proof_id).values(**values))
    data_keys.destroy(conn, data_keys.PORTAL_PROOF, proof_id)


def add_session(conn: Connection, row: dict[str, Any], emails: Sealed) -> None:
    conn.execute(insert(portal_sessions).values(**row, emails_sealed=emails.token))
    data_keys.add(conn, data_keys.PORTAL_SESSION, {row["id"]: emails.wrapped_key})


def session(conn: Connection, by: Found, value: str) -> dict[str, Any] | None:
    """The session with this id, or whose cookie's token has this hash."""
    found = conn.execute(_SESSIONS.where(portal_sessions.c[by] == value)).mappings().first()
    return dict(found) if found else None


def set_session_emails(conn: Connection, session_id: str, emails: Sealed) -> None:
    conn.execute(
        update(portal_sessions)
        .where(portal_sessions.c.id == session_id)
        .values(emails_sealed=emails.token)
    )
    data_keys.replace(conn, data_keys.PORTAL_SESSION, session_id, emails.wrapped_key)


def end_session(conn: Connection, session_id: str) -> None:
    conn.execute(delete(portal_sessions).where(portal_sessions.c.id == session_id))
    data_keys.destroy(conn, data_keys.PORTAL_SESSION, session_id)


def prune(conn: Connection, now: str, day_ago: str) -> None:
    """Expired sessions deleted; expired proofs' addresses destroyed, and the proofs deleted
    once expired a day (until then the caps count them)."""
    expired = conn.execute(
        select(portal_sessions.c.id).where(portal_sessions.c.expires_at <= now)
    ).scalars()
    for session_id in list(expired):
        end_session(conn, session_id)
    holding = conn.execute(
        select(portal_proofs.c.id).where(
            portal_proofs.c.expires_at <= now, portal_proofs.c.email_sealed.is_not(None)
        )
    ).scalars()
    for proof_id in list(holding):
        spend(conn, proof_id, None)
    conn.execute(delete(portal_proofs).where(portal_proofs.c.expires_at < day_ago))


def read_session(store: Store, token_hash: str) -> dict[str, Any] | None:
    """:func:`session` by its cookie's token, outside any transaction (every page asks)."""
    with store.engine.connect() as conn:
        return session(conn, "token_hash", token_hash)
