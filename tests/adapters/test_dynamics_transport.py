"""What the Dynamics transport makes of answers no Dataverse gives, but a proxy or a broken
gateway in front of one may: each is one clear adapter error, never a traceback."""

from __future__ import annotations

import httpx
import pytest
import respx
from pydantic import SecretStr

from bridge.adapters.base import Permanent, Transient
from bridge.adapters.dynamics.settings import DynamicsSettings
from bridge.adapters.dynamics.transport import Request, Transport

ENVIRONMENT = "https://contoso.crm4.dynamics.com"
API = f"{ENVIRONMENT}/api/data/v9.2/"


@pytest.fixture
def transport() -> Transport:
    section = DynamicsSettings(
        tenant_id="t",
        client_id="app",
        client_secret=SecretStr("secret"),
        environment_url=ENVIRONMENT,
        give_up_after_seconds=1,
    )
    made = Transport(section, attempts=1)
    made._token = lambda _operation: "token"  # no Entra ID here
    return made


@respx.mock
def test_a_query_answered_with_a_page_of_html_is_one_permanent_error(
    transport: Transport,
) -> None:
    respx.get(f"{API}contacts").mock(
        return_value=httpx.Response(200, text="<html>Sign in to the proxy</html>")
    )
    with pytest.raises(Permanent) as refused:
        list(transport.pages("contacts", "read"))
    assert "answered a query with no rows" in str(refused.value)


@respx.mock
def test_a_batch_answered_in_part_fails_whole_as_transient(transport: Transport) -> None:
    """Which parts ran is unknown: the batch is sent again (here: one attempt), then the
    caller hears it as the whole batch's failure."""
    respx.post(f"{API}$batch").mock(
        return_value=httpx.Response(
            200, headers={"content-type": "multipart/mixed; boundary=b"}, text="--b--"
        )
    )
    with pytest.raises(Transient, match="only in part"):
        transport.send([Request("DELETE", "contacts(1)")], "erase")
