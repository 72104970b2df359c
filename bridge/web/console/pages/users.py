"""The console's Users page (admins only): the accounts, and adding, disabling and resetting
them, as ``bridge users`` does. A new password is shown once, on the page answering the
post that made it; it is never on a page a GET can fetch again, never logged, never stored
in clear. Each change is audited by :class:`~bridge.services.operators.Operators` with the
admin as actor."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse

from bridge.errors import ConfigError
from bridge.services.operators import NAME, ROLES, Operators, actor
from bridge.web.console.auth import Session, require
from bridge.web.console.render import page

router = APIRouter()
Admin = Annotated[Session, Depends(require("admin"))]
BAD_NAME = (
    "A name is 1 to 63 lowercase letters, digits, '.', '_' or '-', starting with a letter or "
    "a digit (not an address)."
)
DONE = {"disabled": "Account {account} disabled: it cannot sign in, and its sessions end at "
        "their next request."}  # fmt: skip


def _operators(request: Request) -> Operators:
    operators: Operators = request.app.state.operators
    return operators


def _page(
    request: Request,
    session: Session,
    status: int = 200,
    *,
    notice: str = "",
    error: str = "",
    password: str = "",
    account: str = "",
) -> Response:
    """The page: every account, the add form, and what the last action did (``password``
    only in the answer to the post that made it)."""
    return page(
        request, "users.html", session, status, accounts=_operators(request).accounts(),
        roles=ROLES, notice=notice, error=error, password=password, account=account,
    )  # fmt: skip


@router.get("/users")
def users(request: Request, session: Admin, done: str = "", account: str = "") -> Response:
    known = any(a["name"] == account for a in _operators(request).accounts())
    notice = DONE[done].format(account=account) if done in DONE and known else ""
    return _page(request, session, notice=notice)


@router.post("/users")
def add(
    request: Request,
    session: Admin,
    name: Annotated[str, Form(max_length=200)] = "",
    role: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    name = name.strip().lower()  # as the sign-in form reads it
    if not NAME.fullmatch(name):
        return _page(request, session, 400, error=BAD_NAME)
    if role not in ROLES:
        return _page(request, session, 400, error=f"Choose a role: {', '.join(ROLES)}.")
    if _exists(request, name):
        return _page(request, session, 409,
                     error=f"An account named {name} exists; choose another name.")  # fmt: skip
    try:
        password = _operators(request).add(name, role, actor(session.account.name))
    except ConfigError as refused:  # added meanwhile by someone else
        return _page(request, session, 409, error=str(refused))
    notice = f"Account {name} added as {role}. Give them this password, shown only this once:"
    return _page(request, session, notice=notice, password=password, account=name)


@router.post("/users/{name}/disable")
def disable(request: Request, session: Admin, name: str) -> Response:
    if not _exists(request, name):
        return _page(request, session, 404, error=f"No account named {name[:63]}.")
    if name == session.account.name:
        return _page(request, session, 400, error="You cannot disable your own account; "
                     "another admin can.")  # fmt: skip
    _operators(request).disable(name, actor(session.account.name))
    base = request.scope.get("root_path", "")
    return RedirectResponse(f"{base}/users?done=disabled&account={name}", 303)


@router.post("/users/{name}/reset")
def reset(request: Request, session: Admin, name: str) -> Response:
    if not _exists(request, name):
        return _page(request, session, 404, error=f"No account named {name[:63]}.")
    password = _operators(request).reset(name, actor(session.account.name))
    notice = (
        f"Password of {name} reset: its sessions have ended, and it can sign in (again, if it "
        "was disabled or locked out) with this password, shown only this once:"
    )
    if name == session.account.name:
        notice = "Your password was reset: sign in again with this password, shown only once:"
    return _page(request, session, notice=notice, password=password, account=name)


def _exists(request: Request, name: str) -> bool:
    return bool(NAME.fullmatch(name)) and any(
        a["name"] == name for a in _operators(request).accounts()
    )
