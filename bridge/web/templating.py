"""The templates of the console and the privacy portal: Jinja2 with autoescaping on for
every template, and the filters pages share. Nothing a CRM or a person typed reaches a page
unescaped."""

from __future__ import annotations

import gettext
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

WEB = Path(__file__).parent
STATIC = WEB / "static"


def environment(
    *folders: Path, translations: gettext.NullTranslations | None = None
) -> Environment:
    """The templates in ``folders``; with ``translations``, their ``{% trans %}`` and ``_()``
    in that language (the catalog installed once: rendering stays thread safe)."""
    env = Environment(
        loader=FileSystemLoader([str(folder) for folder in folders]),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"] if translations is not None else [],
    )
    if translations is not None:
        env.policies["ext.i18n.trimmed"] = True  # a msgid's line breaks are the template's
        env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    env.filters["mask"] = mask
    env.filters["when"] = when
    env.filters["day"] = day
    return env


def mask(email: str) -> str:
    """``a***@e***.com``: enough to tell two addresses apart at a glance, not to read one."""
    local, _, domain = email.partition("@")
    host, dot, tld = domain.rpartition(".")
    if not dot:
        host, tld = domain, ""
    return f"{local[:1]}***@{host[:1]}***{dot}{tld}"


def when(moment: str | None) -> str:
    """An ISO timestamp as ``2026-12-04 09:21 UTC``; empty for none."""
    if not moment:
        return ""
    parsed = datetime.fromisoformat(moment)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return f"{parsed:%Y-%m-%d %H:%M} UTC"


def day(moment: str | None) -> str:
    return moment[:10] if moment else ""
