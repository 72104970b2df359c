"""The privacy portal in English, Dutch and Swedish: the catalogs hold a translation of every
English msgid the sources use (the template, extracted again now, matches the one shipped),
their placeholders intact, and the compiled .mo files say what the .po files say; over HTTP,
``?lang=`` picks and keeps a language, Accept-Language picks one otherwise, and the pages,
the dates and the sign-in email come in it."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from babel.messages.catalog import Catalog
from babel.messages.frontend import CommandLineInterface
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from bridge.web.portal.i18n import LANGUAGES, LOCALES, negotiate
from bridge_sandbox.demo_portal import text_of
from bridge_sandbox.emulators.people import Person
from tests.web.conftest import Portal

ROOT = Path(__file__).parents[2]
TRANSLATED = [code for code in LANGUAGES if code != "en"]
ANN = Person("ann.portal@example.com", "Ann", "Quillfeather")


def catalog(code: str) -> Catalog:
    with (LOCALES / code / "LC_MESSAGES" / "messages.po").open("rb") as po:
        return read_po(po, locale=code)


def ids(found: Catalog) -> set[object]:
    return {message.id for message in found if message.id}


def pairs(found: Catalog) -> dict[object, object]:
    """msgid -> translation, a plural's as tuples (a .mo file reads them as lists)."""

    def kept(value: object) -> object:
        return tuple(value) if isinstance(value, list | tuple) else value

    return {kept(m.id): kept(m.string) for m in found if m.id}


def test_the_shipped_template_holds_every_msgid_the_sources_use(tmp_path: Path) -> None:
    fresh = tmp_path / "messages.pot"
    CommandLineInterface().run(
        ["pybabel", "-q", "extract", "-F", str(LOCALES.parent / "babel.cfg"),
         "-o", str(fresh), str(ROOT)]
    )  # fmt: skip
    with fresh.open("rb") as extracted, (LOCALES / "messages.pot").open("rb") as shipped:
        assert ids(read_po(extracted)) == ids(read_po(shipped)), "run make translations"


@pytest.mark.parametrize("code", TRANSLATED)
def test_every_msgid_has_a_translation_and_the_mo_file_is_the_po_file(code: str) -> None:
    with (LOCALES / "messages.pot").open("rb") as pot:
        wanted = ids(read_po(pot))
    translated = catalog(code)
    assert ids(translated) == wanted
    for message in translated:
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(s.strip() for s in strings), message.id
        assert not message.fuzzy, message.id
    problems = [(message.id, errors) for message, errors in translated.check() if errors]
    assert problems == []  # placeholders (%(name)s) as the msgid has them
    with (LOCALES / code / "LC_MESSAGES" / "messages.mo").open("rb") as mo:
        compiled = read_mo(mo)
    assert pairs(compiled) == pairs(translated), "run make translations"


def test_accept_language_picks_the_first_language_offered() -> None:
    assert negotiate("sv-SE,sv;q=0.9,en;q=0.5", LANGUAGES) == "sv"
    assert negotiate("de, nl-BE;q=0.8, en;q=0.9", LANGUAGES) == "en"
    assert negotiate("nl;q=0, sv;q=0.1", LANGUAGES) == "sv"
    assert negotiate("", LANGUAGES) == "en"
    assert negotiate("fr;q=x", LANGUAGES) == "en"


@pytest.mark.parametrize(
    ("code", "label", "button"),
    [("nl", "E-mailadres", "Stuur mij een inloglink"),
     ("sv", "E-postadress", "Skicka mig en inloggningslänk")],
)  # fmt: skip
def test_a_language_chosen_is_kept_and_its_pages_and_email_come_in_it(
    portal: Portal, code: str, label: str, button: str
) -> None:
    portal.seed(ANN)
    visitor = portal.visitor()
    chosen = visitor.get(f"/?lang={code}")
    assert f'<html lang="{code}">' in chosen.text
    assert label in chosen.text and button in chosen.text
    assert f"portal_lang={code}" in chosen.headers["set-cookie"]
    kept = visitor.get("/")  # no ?lang: the cookie
    assert f'<html lang="{code}">' in kept.text and "Send me a sign-in link" not in kept.text

    visitor.post("/sign-in", {"email": ANN.email})
    message = portal.mailbox.wait_for(ANN.email)
    assert message["Content-Language"] == code
    words = {"nl": ("Uw inloglink", "15 minuten"), "sv": ("Din inloggningslänk", "15 minuter")}
    subject, minutes = words[code]
    assert subject in message["Subject"] and minutes in text_of(message)
    token = re.search(r"verify\?t=([\w-]+)", text_of(message))
    assert token
    visitor.get(f"/verify?t={token.group(1)}")
    visitor.post("/verify", {"t": token.group(1)})
    me = visitor.get("/me")
    assert {"nl": "De gegevens die we over u hebben", "sv": "De uppgifter vi har om dig"}[
        code
    ] in me.text
    month = {"nl": "januari 2024", "sv": "januari 2024"}[code]  # the seeders' creation date
    assert month in me.text


def test_the_browsers_language_is_used_when_none_was_chosen(portal: Portal) -> None:
    swedish = httpx.get(f"{portal.url}/privacy/", headers={"accept-language": "sv-SE,en;q=0.5"})
    assert '<html lang="sv">' in swedish.text and "E-postadress" in swedish.text
    other = httpx.get(f"{portal.url}/privacy/", headers={"accept-language": "de-DE"})
    assert '<html lang="en">' in other.text and "Email address" in other.text
