"""The mailer over real SMTP, to a local aiosmtpd sink: the message as it arrives, a login,
and failures that name the server and the SMTP error but never the recipient."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Settings, SmtpSettings
from bridge.runtime.wiring import Wiring
from bridge.services.mail import Mailer, MailFailed, MailNotConfigured, Message
from bridge_sandbox.mailbox import Mailbox
from tests.conftest import free_port

TO = "Jörg.Ünal@example.com"
TEXT = "Hallo Jörg,\n\nÖffne diesen Link: https://privacy.example.com/privacy/verify?t=" + (
    "A-_z" * 11 + "\n\nCode: 012345 – gültig 15 Minuten.\n"
)


def mailer(sink: Mailbox, **settings: Any) -> Mailer:
    return Mailer(SmtpSettings(host=sink.host, port=sink.port, starttls=False, **settings))


def failed(mailer: Mailer, to: str = TO) -> str:
    with pytest.raises(MailFailed) as caught:
        mailer.send(Message(to=to, subject="Sign in", text="t"))
    message = str(caught.value)
    assert to.lower() not in message.lower() and "example.com" not in message
    return message


def test_a_message_arrives_with_its_headers_and_its_utf8_text_intact(smtp_sink: Mailbox) -> None:
    sender = "Acme Privacy <privacy@acme.example>"
    mailer(smtp_sink, from_address=sender).send(
        Message(to=TO, subject="Ihre Anmeldung – Schritt ½", text=TEXT, language="de")
    )
    mail = smtp_sink.wait_for(TO.lower())
    assert mail["From"] == sender and mail["To"] == TO
    assert mail["Subject"] == "Ihre Anmeldung – Schritt ½"
    assert mail["Content-Language"] == "de"
    assert mail["Message-ID"].endswith("@acme.example>")
    assert parsedate_to_datetime(mail["Date"]).utcoffset() is not None
    assert mail.get_content_type() == "text/plain"
    assert mail.get_content_charset() == "utf-8"
    assert mail.get_content() == TEXT
    assert mail["Content-Transfer-Encoding"] == "quoted-printable"  # 7-bit safe on any relay


def test_the_sink_keeps_each_message_in_a_folder_and_hands_each_out_once(tmp_path: Path) -> None:
    with Mailbox(folder=tmp_path / "mail") as sink:
        for subject in ("first", "second"):
            mailer(sink).send(Message(to="ada@example.com", subject=subject, text="t"))
        assert sink.wait_for("ADA@example.com")["Subject"] == "first"
        assert sink.wait_for("ada@example.com")["Subject"] == "second"
        with pytest.raises(TimeoutError):
            sink.wait_for("ada@example.com", timeout=0.2)
    files = sorted((tmp_path / "mail").glob("*.eml"))
    assert [f.name for f in files] == ["0001.eml", "0002.eml"]
    assert b"Subject: second" in files[1].read_bytes()


# The sink takes a login without TLS, as no real server should: it is local.
without_tls = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@without_tls
def test_a_login_is_used_when_set_and_a_refused_one_says_which_setting() -> None:
    with Mailbox(login=("bridge", "s3cret-pw")) as sink:
        mailer(sink, username="bridge", password="s3cret-pw").send(
            Message(to="ada@example.com", subject="in", text="t")
        )
        assert sink.wait_for("ada@example.com")["Subject"] == "in"
        message = failed(mailer(sink, username="bridge", password="wrong-pw"))
        assert sink.messages[1:] == []
    assert message == (
        f"SMTP server 127.0.0.1:{sink.port} refused the message while logging in "
        "(SMTPAuthenticationError 535); check [smtp] username and BRIDGE_SMTP__PASSWORD"
    )
    assert "wrong-pw" not in message


@without_tls
def test_without_a_login_a_server_that_requires_one_refuses_sending() -> None:
    with Mailbox(login=("bridge", "pw")) as sink:
        message = failed(mailer(sink))
    assert message.startswith(f"SMTP server 127.0.0.1:{sink.port} refused the message while ")
    assert "530" in message


def test_an_unreachable_server_is_named_by_host_and_port_not_by_recipient() -> None:
    port = free_port()  # nothing listens there
    message = failed(Mailer(SmtpSettings(host="127.0.0.1", port=port, timeout_seconds=2)))
    assert message == (
        f"SMTP server 127.0.0.1:{port} failed while connecting "
        "(ConnectionRefusedError: Connection refused)"
    )


def test_starttls_asked_of_a_server_without_it_fails_saying_so(smtp_sink: Mailbox) -> None:
    message = failed(Mailer(SmtpSettings(host=smtp_sink.host, port=smtp_sink.port)))
    assert message.startswith(f"SMTP server 127.0.0.1:{smtp_sink.port} does not offer STARTTLS")
    assert "starttls = false" in message
    assert smtp_sink.messages == []


class Refusing(Mailbox):
    """A server that refuses every recipient, repeating the address as servers do."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"


def test_a_refused_recipient_gives_the_code_but_not_the_servers_words() -> None:
    with Refusing() as sink:
        message = failed(mailer(sink))
    assert message == (
        f"SMTP server 127.0.0.1:{sink.port} refused the message while sending "
        "(SMTPRecipientsRefused 550)"
    )


def test_without_a_host_nothing_is_sent_and_the_settings_are_named() -> None:
    plain = Mailer(SmtpSettings())
    assert not plain.configured
    with pytest.raises(MailNotConfigured) as caught:
        plain.send(Message(to=TO, subject="s", text="t"))
    assert str(caught.value) == "emails cannot be sent: set [smtp] host (BRIDGE_SMTP__HOST)"
    both = MailNotConfigured(["smtp.host", "web.public_url"])
    assert str(both).endswith("[web] public_url (BRIDGE_WEB__PUBLIC_URL)")


def test_the_wiring_builds_the_mailer_from_the_smtp_section(smtp_sink: Mailbox) -> None:
    settings = Settings(smtp=SmtpSettings(host=smtp_sink.host, port=smtp_sink.port, starttls=False))
    wired = Wiring(config=None, _settings=settings).mailer()
    assert wired.configured
    wired.send(Message(to="ada@example.com", subject="wired", text="t"))
    assert smtp_sink.wait_for("ada@example.com")["From"] == "privacy@localhost"
