"""Microsoft Entra ID's client-credentials token endpoint, and who a bearer token is.

An app registered in the tenant gets a token; only an app that is also an *application
user* of the environment may then call the Web API (others get Dataverse's 403). Failures at
the token endpoint answer in Entra's JSON shape, ``AADSTS`` code first, never echoing the
secret (docs/vendors/dynamics.md,
"Authentication and the application user").
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from bridge_sandbox.emulators.dynamics_http import NOT_A_MEMBER, DataverseError

TOKEN_PATH = "/{tenant}/oauth2/v2.0/token"  # noqa: S105 - a path, not a password
OPENID_PATH = "/{tenant}/v2.0/.well-known/openid-configuration"
LOGIN_HOST = "https://login.microsoftonline.com"


class AppRegistration(BaseModel):
    """An app registration; ``application_user`` says whether the environment knows it."""

    client_id: str
    client_secret: str
    application_user: bool = True


class Apps(BaseModel):
    apps: list[AppRegistration] = Field(
        default_factory=lambda: [
            AppRegistration(
                client_id="emulator-client",
                client_secret="emulator-secret",  # noqa: S106 - an emulator default
            )
        ]
    )


def _entra_error(status: int, error: str, code: int, description: str) -> JSONResponse:
    """Entra's error body: ``error``, ``error_description`` with trace and correlation ids,
    ``error_codes``, ``timestamp``, ``error_uri``."""
    trace, correlation = uuid.uuid4(), uuid.uuid4()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return JSONResponse(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace} "
            f"Correlation ID: {correlation} Timestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": str(trace),
            "correlation_id": str(correlation),
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
        status_code=status,
    )


class Directory:
    """The tenant's app registrations and the access tokens handed out to them."""

    def __init__(
        self, tenant_id: str, apps: Apps, lifetime_s: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.tenant_id = tenant_id
        self.lifetime_s = lifetime_s
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}
        self.configure(apps)

    def configure(self, apps: Apps) -> None:
        with self._lock:
            self.apps = apps
            self._by_id = {app.client_id: app for app in apps.apps}

    def openid_configuration(self, tenant: str) -> JSONResponse:
        """What MSAL reads before its first token: where the token endpoint is. The URLs name
        Entra's own host, as the real document does; a client aimed at the emulator rewrites
        the host (the adapter's ``base_url``)."""
        if tenant != self.tenant_id:
            return _entra_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        root = f"{LOGIN_HOST}/{tenant}"
        return JSONResponse(
            {
                "token_endpoint": f"{root}/oauth2/v2.0/token",
                "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
                "issuer": f"{root}/v2.0",
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
            }
        )

    async def token(self, tenant: str, request: Request) -> JSONResponse:
        """``POST /{tenant}/oauth2/v2.0/token`` with ``grant_type=client_credentials``."""
        form = await request.form()
        field = {k: str(v) for k, v in form.items()}
        if tenant not in (self.tenant_id, "organizations"):
            return _entra_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if field.get("grant_type") != "client_credentials":
            return _entra_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            )
        if not field.get("scope", "").endswith("/.default"):
            return _entra_error(
                400,
                "invalid_scope",
                1002012,
                "The provided value for scope is not valid. Client credential flows must have "
                "a scope value with /.default suffixed to the resource identifier.",
            )
        client_id = field.get("client_id", "")
        with self._lock:
            app = self._by_id.get(client_id)
        if app is None:
            return _entra_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant}'.",
            )
        if not secrets.compare_digest(field.get("client_secret", ""), app.client_secret):
            return _entra_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request "
                f"is the client secret value, not the client secret ID, for a secret added to "
                f"app '{client_id}'.",
            )
        access_token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[access_token] = (client_id, self.clock() + self.lifetime_s)
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": self.lifetime_s,
                "ext_expires_in": self.lifetime_s,
                "access_token": access_token,
            }
        )

    def caller(self, authorization: str, resource: str) -> str:
        """The client id behind a bearer token: 401 without a valid one, Dataverse's 403
        for an app that is no application user of the environment."""
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            found = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            app = self._by_id.get(found[0]) if found else None
        if found is None or app is None or found[1] < self.clock():
            challenge = (
                f"Bearer authorization_uri=https://login.microsoftonline.com/{self.tenant_id}"
                f"/oauth2/authorize, resource_id={resource}"
            )
            raise DataverseError(401, "", "", {"WWW-Authenticate": challenge})
        if not app.application_user:
            raise DataverseError(403, NOT_A_MEMBER, "The user is not a member of the organization.")
        return app.client_id
