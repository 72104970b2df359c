"""A local SMTP server that keeps what it receives: the tests read the portal's sign-in emails
from it, and ``bridge demo`` runs one so that they can be read in a folder (one ``.eml`` file
each, which any mail program opens).

A real SMTP server (aiosmtpd), so the bridge's mailer speaks the protocol to it as it would
to a company's mail server; it relays nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


class _Listener(Controller):
    """aiosmtpd's controller, on the port the system picks when given 0."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class Mailbox:
    """Every message sent to it, parsed, in order of arrival (``messages``); with ``folder``,
    each also written there as ``NNNN.eml``. With ``login`` (a name and password), a client
    must log in (AUTH, allowed without TLS: it is a local test server)."""

    def __init__(
        self,
        folder: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.folder = folder
        self.messages: list[EmailMessage] = []
        self._recipients: list[set[str]] = []
        self._taken: set[int] = set()
        self._arrived = threading.Condition()
        self._login = login
        self._listener = _Listener(
            self,
            hostname=host,
            port=port,
            server_hostname="mailbox.localhost",  # else aiosmtpd asks DNS for this host's name
            enable_SMTPUTF8=True,
            auth_required=login is not None,
            auth_require_tls=False,
            authenticator=self._authenticate if login else None,
        )

    @property
    def host(self) -> str:
        return str(self._listener.hostname)

    @property
    def port(self) -> int:
        return int(self._listener.port)

    def start(self) -> Mailbox:
        # Its SMTP conversation, logged line by line at info, is the sink's own business.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self._listener.start()
        return self

    def stop(self) -> None:
        self._listener.stop()

    def __enter__(self) -> Mailbox:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_for(self, to: str, timeout: float = 10) -> EmailMessage:
        """The oldest message to ``to`` (an envelope recipient, any case) that ``wait_for``
        has not returned yet, waiting up to ``timeout`` seconds for it to arrive."""
        wanted = to.strip().lower()
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for number, recipients in enumerate(self._recipients):
                    if number not in self._taken and wanted in recipients:
                        self._taken.add(number)
                        return self.messages[number]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no new message to {to} within {timeout} s")
                self._arrived.wait(left)

    # -- aiosmtpd's handler hooks --------------------------------------------------------------

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        # Lines end in CRLF on the wire, in "\n" in Python's email package.
        message = message_from_bytes(content.replace(b"\r\n", b"\n"), policy=policy.default)
        with self._arrived:
            number = len(self.messages)
            if self.folder is not None:
                (self.folder / f"{number + 1:04d}.eml").write_bytes(content)
            self.messages.append(message)
            self._recipients.append({r.lower() for r in envelope.rcpt_tos})
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        given = (
            (data.login.decode(), data.password.decode())
            if isinstance(data, LoginPassword)
            else None
        )
        return AuthResult(success=given == self._login, handled=False)
