"""The portal's languages: English msgids in the templates and the code, Dutch and Swedish
catalogs beside them (``locales/<lang>/LC_MESSAGES/messages.po``, compiled to ``.mo``; ``make
translations`` extracts, updates and compiles them), one Jinja environment per language (its
gettext installed once, so rendering is thread safe), and dates written as each language
writes them.

The language is the one a ``?lang=`` link chose (kept in the ``portal_lang`` cookie), else the
browser's first acceptable one (Accept-Language), else English.
"""

from __future__ import annotations

import ast
import gettext
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

from babel import Locale
from babel.dates import format_date, format_time
from babel.support import Translations
from fastapi import Request
from jinja2 import Environment

from bridge.adapters.registry import VENDORS
from bridge.web.templating import environment

LOCALES = Path(__file__).parent / "locales"
TEMPLATES = Path(__file__).parent / "templates"
DOMAIN = "messages"
DEFAULT = "en"
# Each language by its own name: a person finds theirs whatever the page's language.
LANGUAGES: Mapping[str, str] = {"en": "English", "nl": "Nederlands", "sv": "Svenska"}
COOKIE = "portal_lang"
MOST_ACCEPTED = 20  # Accept-Language entries read; a longer header is someone's experiment


@dataclass(frozen=True)
class Language:
    """One language's catalog and the environment rendering its pages."""

    code: str
    translations: gettext.NullTranslations
    env: Environment

    def gettext(self, message: str) -> str:
        return self.translations.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self.translations.ngettext(singular, plural, n)

    def date(self, day: date | None) -> str:
        return format_date(day, "long", locale=self.code) if day else ""

    def datetime(self, moment: datetime | None) -> str:
        """``moment`` to the minute in UTC (said so: people live in other zones), as the
        language writes a long date and a time."""
        if moment is None:
            return ""
        when = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        both = str(Locale.parse(self.code).datetime_formats["long"]).replace("'", "")
        time = format_time(when, "short", tzinfo=UTC, locale=self.code)
        return both.format(time, format_date(when, "long", locale=self.code)) + " UTC"


def load(code: str) -> Language:
    """``code``'s catalog (English is the msgids themselves) and its environment."""
    translations: gettext.NullTranslations = (
        gettext.NullTranslations()
        if code == DEFAULT
        else Translations.load(str(LOCALES), [code], DOMAIN)
    )
    env = environment(TEMPLATES, translations=translations)
    language = Language(code, translations, env)
    env.filters["date"] = language.date
    env.filters["datetime"] = language.datetime
    env.filters["crm"] = crm
    return language


def crm(system: str) -> str:
    """A system as its vendor writes its name (the registry's title), an unknown one as it is."""
    vendor = VENDORS.get(system)
    return vendor.title if vendor else system


def languages() -> dict[str, Language]:
    return {code: load(code) for code in LANGUAGES}


def chosen(request: Request) -> str:
    """The language of this request's page: ``?lang=``, the cookie, Accept-Language, English."""
    for asked in (request.query_params.get("lang", ""), request.cookies.get(COOKIE, "")):
        if asked in LANGUAGES:
            return asked
    return negotiate(request.headers.get("accept-language", ""), LANGUAGES)


def negotiate(header: str, offered: Collection[str]) -> str:
    """The first language of ``offered`` the header accepts, by its weights (``q=0``: not
    at all); a region (``nl-BE``) counts as its language."""
    ranked: list[tuple[float, int, str]] = []
    for place, part in enumerate(header.split(",")[:MOST_ACCEPTED]):
        tag, *params = (piece.strip() for piece in part.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if weight > 0 and tag:
            ranked.append((-weight, place, tag.lower().split("-")[0]))
    return next((code for _, _, code in sorted(ranked) if code in offered), DEFAULT)


def extract_words(
    fileobj: IO[bytes], keywords: object, comment_tags: object, options: Mapping[str, Any]
) -> Iterator[tuple[int, str, str, list[str]]]:
    """A Babel extractor for English words another layer defines and the portal shows (the
    services' field labels and what each lawful basis means): every string in the
    module-level assignments to the names ``options["names"]`` lists."""
    names = set(str(options.get("names", "")).split())
    tree = ast.parse(fileobj.read())
    for node in tree.body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if not any(isinstance(t, ast.Name) and t.id in names for t in targets):
            continue
        value = getattr(node, "value", None)
        found = list(ast.walk(value)) if value is not None else []
        keys = {id(k) for d in found if isinstance(d, ast.Dict) for k in d.keys if k}
        constants = [c for c in found if isinstance(c, ast.Constant) and id(c) not in keys]
        for constant in constants:
            if isinstance(constant.value, str):
                yield constant.lineno, "gettext", constant.value, []
