"""The portal's emails, in the language of the page that asked for them, with links built from
``[web] public_url`` (never from the request's Host header, which whoever asks controls), and
sent after the answer has gone (a background task), so that neither the mail server's pace
nor its failure changes what or when anyone is answered."""

from __future__ import annotations

from datetime import datetime

from bridge.config import Settings
from bridge.identity import subject_ref
from bridge.logs import get_logger
from bridge.services.mail import Mailer, MailFailed, MailNotConfigured, Message
from bridge.services.proofs import Issued
from bridge.web.portal.i18n import Language
from bridge.web.portal.session import PATH

log = get_logger("bridge.portal")


def link(settings: Settings, path: str) -> str:
    """The address of ``path`` (below /privacy) as people reach it: ``[web] public_url``."""
    public = settings.web.public_url
    if public is None:
        raise MailNotConfigured(("web.public_url",))
    return f"{str(public).rstrip('/')}{PATH}{path}"


def ready(settings: Settings, mailer: Mailer) -> None:
    """Emails can be sent, links built; else :class:`MailNotConfigured` naming what to set."""
    given = {"smtp.host": mailer.configured, "web.public_url": bool(settings.web.public_url)}
    missing = [key for key, there in given.items() if not there]
    if missing:
        raise MailNotConfigured(missing)


def sign_in(settings: Settings, language: Language, to: str, issued: Issued) -> Message:
    """The sign-in email: the link, the code for another device, how long they work."""
    minutes = max(1, round(settings.portal.link_minutes))
    lasts = language.ngettext(
        "The link and the code work once, for %(minutes)d minute.",
        "The link and the code work once, for %(minutes)d minutes.",
        minutes,
    )
    text = "\n\n".join(
        [
            language.gettext("Hello,"),
            language.gettext(
                "Someone, we hope you, asked to sign in to the privacy page with this "
                "address. To sign in, open this link:"
            ),
            link(settings, f"/verify?t={issued.link_token}"),
            language.gettext(
                "Or type this code on the page where you asked for this email: %(code)s"
            )
            % {"code": issued.code},
            lasts % {"minutes": minutes},
            language.gettext(
                "If you did not ask for it, ignore this email: without the link or the code "
                "nobody can sign in."
            ),
        ]
    )
    subject = language.gettext("Your sign-in link for the privacy page")
    return Message(to, subject, text + "\n", language.code)


def erasure_received(
    settings: Settings, language: Language, to: str, token: str, due: datetime
) -> Message:
    """The confirmation of an erasure request, with the link to its status page."""
    text = "\n\n".join(
        [
            language.gettext("Hello,"),
            language.gettext(
                "We received your request to erase the data we hold about you. We will "
                "complete it by %(due)s at the latest."
            )
            % {"due": language.date(due.date())},
            language.gettext(
                "This link shows how far it has got, for as long as it runs; once it is "
                "done, the link shows its receipt:"
            ),
            link(settings, f"/requests/{token}"),
            language.gettext("If you did not ask for this, reply to this email at once."),
        ]
    )
    subject = language.gettext("We received your request to erase your data")
    return Message(to, subject, text + "\n", language.code)


def send(mailer: Mailer, message: Message, pseudonym_key: bytes) -> None:
    """Deliver ``message`` (a background task: the person was answered already); a failure
    is the operator's to see, in the log, by the address's pseudonym."""
    try:
        mailer.send(message)
    except (MailFailed, MailNotConfigured) as error:
        ref = subject_ref(pseudonym_key, message.to)
        log.warning("portal.mail_failed", subject_ref=ref, error=str(error))
