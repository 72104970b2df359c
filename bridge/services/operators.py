"""The console's operator accounts: who may sign in, with what role, and the lockout that
stops password guessing. Every sign-in, failure and change is an audit event naming the
operator (an operator's name is not a data subject's; a name typed that matches no account
is never recorded, since it may be anything, an address included)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from bridge import audit
from bridge.config import WebSettings
from bridge.errors import BridgeError, ConfigError
from bridge.model import AuditEvent
from bridge.store import operators as rows
from bridge.store.audit_log import LOCK as AUDIT_LOCK
from bridge.store.db import Store

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")  # each may do what those before may
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
HASHER = PasswordHasher()
# Verified against when the account does not exist, so that answer takes as long as a wrong
# password's: the timing does not tell which names are accounts.
_DECOY = HASHER.hash(secrets.token_urlsafe(16))


def allows(role: str, needed: Role) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def actor(name: str) -> str:
    """How an operator appears in the audit log."""
    return f"operator:{name}"


@dataclass(frozen=True)
class Account:
    name: str
    role: Role
    epoch: int


class SignInRefused(BridgeError):
    """Why a sign-in was refused, in words fit to show on the sign-in page."""


class Operators:
    def __init__(
        self,
        store: Store,
        web: WebSettings,
        client_key: bytes,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.web = web
        self.client_key = client_key  # keys the hash a client's address or typed name is kept as
        self.clock = clock

    # -- accounts (bridge users) --------------------------------------------------------------

    def add(self, name: str, role: str, by: str) -> str:
        """A new account; its first password, to be shown once."""
        _check_name(name)
        checked = _check_role(role)
        password = new_password()
        now = _iso(self.clock())
        row = {"name": name, "role": checked, "password_hash": HASHER.hash(password),
               "created_at": now, "password_set_at": now}  # fmt: skip
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            if not rows.add(conn, row):
                raise ConfigError([f"users add: an account {name} exists; choose another name"])
            audit.append(conn, _event(by, "console.user_added", "ok", name, role=checked))
        return password

    def accounts(self) -> list[dict[str, str | None]]:
        return [
            {"name": row["name"], "role": row["role"], "created_at": row["created_at"],
             "password_set_at": row["password_set_at"], "disabled_at": row["disabled_at"]}
            for row in rows.every(self.store)
        ]  # fmt: skip

    def disable(self, name: str, by: str) -> None:
        """No more sign-ins; its sessions end at their next request."""
        self._change(name, by, "console.user_disabled", disabled_at=_iso(self.clock()))

    def reset(self, name: str, by: str) -> str:
        """A new password (enabling the account again, clearing its lockout); shown once."""
        password = new_password()
        self._change(
            name, by, "console.password_reset", password_hash=HASHER.hash(password),
            password_set_at=_iso(self.clock()), disabled_at=None,
        )  # fmt: skip
        return password

    def _change(self, name: str, by: str, action: str, **values: str | None) -> None:
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            if not rows.change(conn, name, new_epoch=True, **values):
                raise ConfigError([f"users: no account {name}; `bridge users list` shows them"])
            rows.clear_failures(conn, self._ref(name))
            audit.append(conn, _event(by, action, "ok", name))

    # -- signing in ---------------------------------------------------------------------------

    def sign_in(self, name: str, password: str, client: str) -> Account:
        """The account, if the password is right and neither it nor the client is locked
        out; else :class:`SignInRefused` saying why (never which of name or password)."""
        now = self.clock()
        client_ref = self._ref(client)
        self._refuse_if_locked(name, client_ref, now)
        row = rows.get(self.store, name) if NAME.fullmatch(name) else None
        try:
            HASHER.verify(row["password_hash"] if row else _DECOY, password)
            verified = row is not None and row["disabled_at"] is None
        except (VerificationError, InvalidHashError):
            verified = False
        if not verified or row is None:
            self._failed(name, row is not None, client_ref, now)
            raise SignInRefused("The name or the password is wrong.")
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            rows.clear_failures(conn, self._ref(name))
            audit.append(conn, _event(actor(name), "console.signed_in", "ok"))
        return Account(name, row["role"], row["epoch"])

    def signed_out(self, account: Account) -> None:
        """Ends the account's sessions on the server, not only the browser's cookie: a copy
        of the cookie taken earlier is refused too (the cookie names no session of its own,
        so its other sessions end with it)."""
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            rows.change(conn, account.name, new_epoch=True)
            audit.append(conn, _event(actor(account.name), "console.signed_out", "ok"))

    def current(self, name: str, epoch: int) -> Account | None:
        """The account a session names, if it may still act: not disabled, password unchanged."""
        row = rows.get(self.store, name)
        if row is None or row["disabled_at"] is not None or row["epoch"] != epoch:
            return None
        return Account(name, row["role"], row["epoch"])

    def _refuse_if_locked(self, name: str, client_ref: str, now: datetime) -> None:
        """The client's cap first, which writes nothing: a client knocking on a locked
        account adds audit events only up to its cap."""
        hourly = rows.failures(
            self.store, since=_iso(now - timedelta(hours=1)), client_ref=client_ref
        )
        if len(hourly) >= self.web.login_max_failures_per_client:
            until = datetime.fromisoformat(hourly[-self.web.login_max_failures_per_client])
            raise SignInRefused(
                f"Too many failed sign-ins from this address: try again after "
                f"{until + timedelta(hours=1):%H:%M} UTC."
            )
        window = timedelta(minutes=self.web.login_lockout_minutes)
        since = _iso(now - window)
        failed = rows.failures(self.store, since=since, account=self._ref(name)) if name else []
        if len(failed) >= self.web.login_max_failures:
            until = datetime.fromisoformat(failed[-self.web.login_max_failures]) + window
            known = rows.get(self.store, name) is not None
            # Counted against the client only: knocking does not make the lock last longer.
            self._count("", client_ref, now, "console.sign_in_locked", name if known else None)
            raise SignInRefused(
                f"Too many failed sign-ins to this account: it is locked until "
                f"{until:%H:%M} UTC. An admin can unlock it now with `bridge users reset`."
            )

    def _failed(self, name: str, known: bool, client_ref: str, now: datetime) -> None:
        """Counted against the name typed (any name, so a locked name does not tell whether
        it is an account; kept as a keyed hash, as it may be anything, a person's name too)
        and the client; audited by name only if it is an account."""
        counted = self._ref(name) if NAME.fullmatch(name) else ""
        self._count(counted, client_ref, now, "console.sign_in_failed", name if known else None)

    def _count(
        self, account_ref: str, client_ref: str, now: datetime, action: str, account: str | None
    ) -> None:
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            rows.prune_failures(conn, _iso(now - timedelta(days=1)))
            rows.add_failure(conn, account_ref, client_ref, _iso(now))
            audit.append(conn, _event("console", action, "refused", account))

    def _ref(self, typed: str) -> str:
        """A client's address, or a name typed at sign-in, as it is kept: a keyed hash."""
        return hmac.new(self.client_key, typed.encode(), hashlib.sha256).hexdigest()


def new_password() -> str:
    return secrets.token_urlsafe(15)  # 120 bits, 20 characters


def _check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise ConfigError(
            ["users: a name is 1-63 lowercase letters, digits, '.', '_' or '-' (no '@')"]
        )


def _check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise ConfigError([f"users: role {role!r} is not one of {', '.join(ROLES)}"])


def _event(
    by: str, action: str, outcome: str, account: str | None = None, **details: str
) -> AuditEvent:
    return AuditEvent(
        actor=by, action=action, outcome=outcome,
        details=({"account": account} if account else {}) | details,
    )  # fmt: skip


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")
