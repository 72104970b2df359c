"""The SOAP partner API calls the emulator answers: ``login`` and ``emptyRecycleBin``.

simple-salesforce reads the *unprefixed* ``sessionId`` and ``serverUrl`` elements of a login
response and ``sf:exceptionCode`` of a fault (login.py:258-280), so these shapes are exact.
Requests are parsed with defusedxml: the body comes from the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException, ElementTree

from bridge_sandbox.emulators.salesforce_model import ApiError

SOAP_ENVELOPE = "http://schemas.xmlsoap.org/soap/envelope/"
_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENVELOPE}" xmlns="urn:partner.soap.sforce.com" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
)
_TAIL = "</soapenv:Body></soapenv:Envelope>"


class SoapFault(Exception):
    """A SOAP fault Salesforce answers with HTTP 500."""

    def __init__(self, code: str, message: str, fault_type: str = "UnexpectedErrorFault") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fault_type = fault_type

    def xml(self) -> str:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENVELOPE}" '
            'xmlns:sf="urn:fault.partner.soap.sforce.com" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
            f"<soapenv:Fault><faultcode>sf:{self.code}</faultcode>"
            f"<faultstring>{escape(self.code)}: {escape(self.message)}</faultstring><detail>"
            f'<sf:{self.fault_type} xsi:type="sf:{self.fault_type}">'
            f"<sf:exceptionCode>{escape(self.code)}</sf:exceptionCode>"
            f"<sf:exceptionMessage>{escape(self.message)}</sf:exceptionMessage>"
            f"</sf:{self.fault_type}></detail></soapenv:Fault>{_TAIL}"
        )


INVALID_LOGIN = SoapFault(
    "INVALID_LOGIN",
    "Invalid username, password, security token; or user locked out.",
    "LoginFault",
)


@dataclass(frozen=True)
class SoapCall:
    """The operation (first element of the Body), its session and its arguments by name."""

    operation: str
    session_id: str | None
    arguments: dict[str, list[str]] = field(default_factory=dict)

    def argument(self, name: str) -> str:
        return next(iter(self.arguments.get(name, [])), "")


def _local(element: Element) -> str:
    return element.tag.rpartition("}")[2]


def parse_call(body: bytes) -> SoapCall:
    """Read a partner-API request; anything that is not a SOAP envelope is a client fault."""
    try:
        root = ElementTree.fromstring(body)
    except (ElementTree.ParseError, DefusedXmlException):
        raise SoapFault("INVALID_SOAP", "The request is not well-formed XML") from None
    soap_body = root.find(f"{{{SOAP_ENVELOPE}}}Body")
    operation = next(iter(soap_body), None) if soap_body is not None else None
    if operation is None:
        raise SoapFault("INVALID_SOAP", "The request has no SOAP Body")
    header = root.find(f"{{{SOAP_ENVELOPE}}}Header")
    session = None
    if header is not None:
        session = next((e.text for e in header.iter() if _local(e) == "sessionId"), None)
    arguments: dict[str, list[str]] = {}
    for element in operation.iter():
        if element is not operation:
            arguments.setdefault(_local(element), []).append(element.text or "")
    return SoapCall(_local(operation), session, arguments)


def login_response(
    *,
    session_id: str,
    instance_url: str,
    version: str,
    organization_id: str,
    username: str,
    user_id: str,
    session_seconds: int,
) -> str:
    org15 = organization_id[:15]
    return (
        f"{_HEAD}<loginResponse><result>"
        f"<metadataServerUrl>{escape(instance_url)}/services/Soap/m/{version}/{org15}"
        "</metadataServerUrl><passwordExpired>false</passwordExpired><sandbox>false</sandbox>"
        f"<serverUrl>{escape(instance_url)}/services/Soap/u/{version}/{org15}</serverUrl>"
        f"<sessionId>{escape(session_id)}</sessionId><userId>{user_id}</userId><userInfo>"
        "<accessibilityMode>false</accessibilityMode><currencySymbol>€</currencySymbol>"
        "<orgDefaultCurrencyIsoCode>EUR</orgDefaultCurrencyIsoCode>"
        f"<organizationId>{organization_id}</organizationId>"
        "<organizationName>consent-bridge emulator</organizationName>"
        f"<sessionSecondsValid>{session_seconds}</sessionSecondsValid>"
        f"<userEmail>{escape(username)}</userEmail><userFullName>Integration User"
        f"</userFullName><userId>{user_id}</userId><userName>{escape(username)}</userName>"
        f"</userInfo></result></loginResponse>{_TAIL}"
    )


def empty_recycle_bin_response(results: Sequence[tuple[str, ApiError | None]]) -> str:
    parts = [f"{_HEAD}<emptyRecycleBinResponse>"]
    for record_id, error in results:
        errors = (
            f"<errors><message>{escape(error.message)}</message>"
            f"<statusCode>{error.code}</statusCode></errors>"
            if error
            else ""
        )
        success = "false" if error else "true"
        parts.append(
            f"<result>{errors}<id>{escape(record_id)}</id><success>{success}</success></result>"
        )
    parts.append(f"</emptyRecycleBinResponse>{_TAIL}")
    return "".join(parts)
