"""Email to data subjects (the portal's sign-in links, its confirmations), through the SMTP
server ``[smtp]`` names, with the standard library's smtplib.

A failure names the server and the SMTP error's class and code, never the recipient nor the
server's own words (which often repeat the address).
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

from bridge.config import SmtpSettings, env_name
from bridge.errors import BridgeError


class MailNotConfigured(BridgeError):
    """Emails cannot be sent: a setting they need is not set (``[smtp] host``, or the
    ``[web] public_url`` their links are built from)."""

    exit_code = 2

    def __init__(self, keys: Sequence[str] = ("smtp.host",)) -> None:
        named = [f"[{key.replace('.', '] ', 1)} ({env_name(key)})" for key in keys]
        super().__init__(f"emails cannot be sent: set {' and '.join(named)}")
        self.keys = tuple(keys)


class MailFailed(BridgeError):
    """The SMTP server refused the message, or could not be reached."""


@dataclass(frozen=True)
class Message:
    to: str
    subject: str
    text: str
    language: str = "en"


class Mailer:
    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    @property
    def configured(self) -> bool:
        return self.settings.host is not None

    @property
    def server(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def send(self, message: Message) -> None:
        """Deliver ``message`` to the server, or raise :class:`MailFailed` saying which step
        failed (STARTTLS, login, sending) and how."""
        settings = self.settings
        if settings.host is None:
            raise MailNotConfigured()
        mail = self._compose(message)
        step = "connecting"
        try:
            with smtplib.SMTP(
                settings.host, settings.port, timeout=settings.timeout_seconds
            ) as smtp:
                if settings.starttls:
                    step = "STARTTLS"
                    smtp.starttls(context=ssl.create_default_context())
                if settings.username is not None and settings.password is not None:
                    step = "logging in"
                    smtp.login(settings.username, settings.password.get_secret_value())
                step = "sending"
                smtp.send_message(mail)
        except smtplib.SMTPNotSupportedError:
            raise MailFailed(self._unsupported(step)) from None
        except smtplib.SMTPRecipientsRefused as error:
            codes = sorted({str(code) for code, _ in error.recipients.values()})
            raise MailFailed(self._refused(step, error, ", ".join(codes))) from None
        except smtplib.SMTPResponseException as error:
            raise MailFailed(self._refused(step, error, str(error.smtp_code))) from None
        except (smtplib.SMTPException, OSError) as error:
            raise MailFailed(self._unreachable(step, error)) from None

    def _compose(self, message: Message) -> EmailMessage:
        sender = self.settings.from_address
        mail = EmailMessage()
        mail["From"] = sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(usegmt=True)
        # The sender's domain: make_msgid would otherwise ask DNS for this host's name.
        mail["Message-ID"] = make_msgid(domain=parseaddr(sender)[1].rpartition("@")[2])
        # Quoted-printable: 7-bit safe for any relay, and still legible in the raw message.
        mail.set_content(message.text, charset="utf-8", cte="quoted-printable")
        mail["Content-Language"] = message.language  # after set_content, which clears Content-*
        return mail

    def _unsupported(self, step: str) -> str:
        offer = {
            "STARTTLS": "STARTTLS: use a server (or port) that does, or set [smtp] starttls = "
            "false only for a relay on this host or a trusted network",
            "logging in": "a login (AUTH): unset [smtp] username, or use the server's "
            "submission port (587)",
        }.get(step, "SMTPUTF8, which an address with non-ASCII characters needs")
        return f"SMTP server {self.server} does not offer {offer}"

    def _refused(self, step: str, error: Exception, codes: str) -> str:
        check = (
            f"; check [smtp] username and {env_name('smtp.password')}"
            if step == "logging in"
            else ""
        )
        return (
            f"SMTP server {self.server} refused the message while {step} "
            f"({type(error).__name__} {codes}){check}"
        )

    def _unreachable(self, step: str, error: Exception) -> str:
        reason = getattr(error, "strerror", None) or getattr(error, "reason", None)
        said = f"{type(error).__name__}: {reason}" if reason else type(error).__name__
        return f"SMTP server {self.server} failed while {step} ({said})"
