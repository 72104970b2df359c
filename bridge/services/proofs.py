"""How a person proves an address is theirs to the privacy portal, and the session that
follows: an emailed sign-in link (with a 6-digit code for another device), single use and
short-lived, capped per address and per client; then a server-side session holding the
addresses proved in it.

Nothing here looks at the CRMs: whether anyone holds the address changes no answer. Links,
codes and session tokens are kept only as keyed hashes, addresses only sealed, the client's
address as a keyed hash; every step is audited under the address's pseudonym.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from bridge import audit
from bridge.config import PortalSettings
from bridge.errors import BridgeError
from bridge.identity import normalise_email, subject_ref
from bridge.model import AuditEvent
from bridge.sealing import Keyring
from bridge.store import portal as rows
from bridge.store.audit_log import LOCK as AUDIT_LOCK
from bridge.store.db import Store

ACTOR = "portal"
SIGN_IN, SESSION = "portal.sign_in", "portal.session"
Scope = Literal["address", "client"]
Window = Literal["hour", "day"]
Why = Literal["unknown", "expired", "used", "wrong_code", "attempts"]
WINDOWS: Mapping[Window, timedelta] = {"day": timedelta(days=1), "hour": timedelta(hours=1)}
KEPT = timedelta(days=1)  # how long a proof is kept after it expires: the day cap counts it


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Issued:
    proof_id: str  # names the proof on the code form; not a secret
    link_token: str
    code: str
    expires_at: datetime


@dataclass(frozen=True)
class Proved:
    email: str
    session_id: str | None  # the signed-in session that asked to add this address


@dataclass(frozen=True)
class PortalSession:
    id: str
    emails: tuple[str, ...]
    began_at: datetime
    expires_at: datetime
    csrf: str  # stable for the session: the forms' hidden field


class CapReached(BridgeError):
    """Too many sign-in emails asked for one address, or from one client, in a window."""

    def __init__(self, scope: Scope, window: Window) -> None:
        whom = "this address" if scope == "address" else "your network address"
        super().__init__(
            f"Too many sign-in emails were asked for {whom} in the last {window}; "
            "please try again later."
        )
        self.scope: Scope = scope
        self.window: Window = window


class ProofRefused(BridgeError):
    """A sign-in link or code that does not (or no longer) prove anything."""

    MESSAGES: Mapping[Why, str] = {
        "unknown": "This sign-in link or code is not valid.",
        "expired": "This sign-in link or code has expired; ask for a new one.",
        "used": "This sign-in link or code was used already; ask for a new one.",
        "wrong_code": "That code is wrong.",
        "attempts": "Too many wrong codes; ask for a new sign-in email.",
    }

    def __init__(self, why: Why, left: int = 0) -> None:
        super().__init__(self.MESSAGES[why])
        self.why: Why = why
        self.left = left  # code attempts left, for wrong_code


class Proofs:
    def __init__(
        self,
        store: Store,
        keyring: Keyring,
        pseudonym_key: bytes,
        settings: PortalSettings,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.pseudonym_key = pseudonym_key
        self.settings = settings
        self.clock = clock
        self._key = audit.derive(pseudonym_key, "portal proofs")

    # -- sign-in proofs -----------------------------------------------------------------------

    def issue(self, email: str, client: str, session_id: str | None = None) -> Issued:
        """A new proof of ``email`` for ``client`` (its network address) to be emailed; or
        :class:`CapReached` when the address or the client has had its share."""
        address = normalise_email(email)
        ref = subject_ref(self.pseudonym_key, address)
        client_ref = self._hash("client", client)
        now = self.clock()
        proof_id, token = secrets.token_hex(16), secrets.token_urlsafe(32)
        code = f"{secrets.randbelow(10**6):06d}"
        issued = Issued(proof_id, token, code, now + timedelta(minutes=self.settings.link_minutes))
        sealed = self.keyring.seal(address.encode())
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            rows.prune(conn, _iso(now), _iso(now - KEPT))
            capped = self._capped(functools.partial(rows.issued_since, conn), ref, client_ref, now)
            if capped is None:
                row = {
                    "id": proof_id, "token_hash": self._hash("link", token),
                    "code_hash": self._code_hash(proof_id, code), "subject_ref": ref,
                    "client_ref": client_ref, "session_id": session_id,
                    "issued_at": _iso(now), "expires_at": _iso(issued.expires_at),
                }  # fmt: skip
                rows.add_proof(conn, row, sealed)
                details = {"proof": proof_id} | ({"session": session_id} if session_id else {})
                audit.append(conn, _event(SIGN_IN, "requested", ref, **details))
            else:
                scope, window = capped
                audit.append(conn, _event(SIGN_IN, "capped", ref, scope=scope, window=window))
        if capped is not None:
            raise CapReached(*capped)
        return issued

    def redeem_link(self, link_token: str) -> Proved:
        """The address the link proves; it and its code are used up."""
        return self._redeem("token_hash", self._hash("link", link_token), None)

    def redeem_code(self, proof_id: str, code: str) -> Proved:
        """The address the proof proves, if ``code`` is its code; each wrong code counts,
        and the last one allowed kills the proof. Used up, it and its link are."""
        return self._redeem("id", proof_id, "".join(code.split()))

    def _redeem(self, found_by: rows.Found, value: str, code: str | None) -> Proved:
        """The proof found, checked and used up, or counted and refused: either audited in
        the same transaction, a refusal raised once that is committed."""
        by = "link" if code is None else "code"
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            row = rows.proof(conn, found_by, value)
            refused, wrong = self._refusal(row, code)
            if row is not None and refused is None:
                what = f"portal sign-in proof {row['id']}"
                email = self.keyring.open(what, row["email_sealed"], row["wrapped_key"]).decode()
                rows.spend(conn, row["id"], "used")
                proved = _event(SIGN_IN, "proved", row["subject_ref"], proof=row["id"], by=by)
                audit.append(conn, proved)
                return Proved(email, row["session_id"])
            assert refused is not None  # a missing row is refused: unknown
            details = {"why": refused.why, "by": by}
            if row is not None:
                details["proof"] = row["id"]
                if wrong:
                    rows.count_attempt(conn, row["id"])
                if refused.why == "wrong_code":
                    details["left"] = str(refused.left)
                elif row["spent"] is None and refused.why in ("expired", "attempts"):
                    rows.spend(conn, row["id"], None if refused.why == "expired" else "attempts")
            ref = row["subject_ref"] if row else None
            audit.append(conn, _event(SIGN_IN, "refused", ref, **details))
        raise refused

    def _refusal(
        self, row: Mapping[str, Any] | None, code: str | None
    ) -> tuple[ProofRefused | None, bool]:
        """Why the proof proves nothing (None: it proves its address), and whether a wrong
        code was typed now (to be counted)."""
        limit = self.settings.code_attempts
        if row is None:
            return ProofRefused("unknown"), False
        if row["spent"] is not None:
            return ProofRefused(row["spent"]), False
        if row["attempts"] >= limit:  # the limit was lowered since
            return ProofRefused("attempts"), False
        if row["expires_at"] <= _iso(self.clock()):
            return ProofRefused("expired"), False
        if code is not None and not hmac.compare_digest(
            row["code_hash"], self._code_hash(row["id"], code)
        ):
            left = limit - row["attempts"] - 1
            return (ProofRefused("wrong_code", left) if left else ProofRefused("attempts")), True
        return None, False

    def _capped(
        self,
        issued_since: Callable[[str, rows.Asker, str], int],
        ref: str,
        client_ref: str,
        now: datetime,
    ) -> tuple[Scope, Window] | None:
        """The first cap reached, the longer window first (it is the one to wait out);
        ``issued_since(since, by, ref)`` counts the proofs issued."""
        settings = self.settings
        caps: list[tuple[Scope, rows.Asker, str]] = [
            ("address", "subject_ref", ref),
            ("client", "client_ref", client_ref),
        ]
        for scope, column, value in caps:
            for window, length in WINDOWS.items():
                cap: int = getattr(settings, f"per_{scope}_{window}")
                if issued_since(_iso(now - length), column, value) >= cap:
                    return scope, window
        return None

    # -- sessions -----------------------------------------------------------------------------

    def begin(self, email: str) -> tuple[str, PortalSession]:
        """A new session for a proved address: (the cookie's token, the session)."""
        address = normalise_email(email)
        ref = subject_ref(self.pseudonym_key, address)
        now = self.clock()
        token, session_id = secrets.token_urlsafe(32), secrets.token_hex(16)
        token_hash = self._hash("session", token)
        expires = now + timedelta(minutes=self.settings.session_minutes)
        sealed = self.keyring.seal(json.dumps([address]).encode())
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            rows.prune(conn, _iso(now), _iso(now - KEPT))
            row = {
                "id": session_id, "token_hash": token_hash, "subject_ref": ref,
                "began_at": _iso(now), "expires_at": _iso(expires),
            }  # fmt: skip
            rows.add_session(conn, row, sealed)
            audit.append(conn, _event(SESSION, "began", ref, session=session_id))
        return token, PortalSession(
            session_id, (address,), now, expires, self._hash("csrf", token_hash)
        )

    def session(self, token: str) -> PortalSession | None:
        """The session the cookie's token names; None when unknown, ended or expired."""
        row = rows.read_session(self.store, self._hash("session", token))
        if row is None or row["expires_at"] <= _iso(self.clock()):
            return None
        return self._session(row)

    def add_address(self, session_id: str, email: str) -> PortalSession:
        """The session with ``email`` (proved for it: :class:`Proved` named this session)
        among its addresses; :class:`ProofRefused` if the session is gone meanwhile."""
        address = normalise_email(email)
        ref = subject_ref(self.pseudonym_key, address)
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            row = rows.session(conn, "id", session_id)
            if row is None or row["expires_at"] <= _iso(self.clock()):
                raise ProofRefused("expired" if row else "unknown")
            current = self._session(row)
            if address not in current.emails:
                emails = [*current.emails, address]
                rows.set_session_emails(
                    conn, session_id, self.keyring.seal(json.dumps(emails).encode())
                )
                current = PortalSession(
                    current.id, tuple(emails), current.began_at, current.expires_at, current.csrf
                )
            audit.append(conn, _event(SESSION, "added", ref, session=session_id))
        return current

    def end(self, token: str) -> None:
        """Sign out: the session is deleted, its addresses destroyed."""
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            row = rows.session(conn, "token_hash", self._hash("session", token))
            if row is not None:
                rows.end_session(conn, row["id"])
                audit.append(conn, _event(SESSION, "ended", row["subject_ref"], session=row["id"]))

    def _session(self, row: Mapping[str, Any]) -> PortalSession:
        what = f"portal session {row['id']}"
        emails = json.loads(self.keyring.open(what, row["emails_sealed"], row["wrapped_key"]))
        return PortalSession(
            row["id"],
            tuple(emails),
            datetime.fromisoformat(row["began_at"]),
            datetime.fromisoformat(row["expires_at"]),
            self._hash("csrf", row["token_hash"]),
        )

    # -- keyed hashes -------------------------------------------------------------------------

    def _hash(self, kind: str, value: str) -> str:
        """A secret (a link's token, a session's), or a client's address, as it is kept."""
        return hmac.new(self._key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()

    def _code_hash(self, proof_id: str, code: str) -> str:
        """A code is bound to its proof: the same code of another proof hashes otherwise."""
        return self._hash("code", f"{proof_id}:{code}")


def _event(action: str, outcome: str, ref: str | None, **details: str) -> AuditEvent:
    return AuditEvent(actor=ACTOR, action=action, outcome=outcome, subject_ref=ref, details=details)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
