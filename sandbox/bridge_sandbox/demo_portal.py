"""The privacy page as a person's browser uses it, over plain HTTP: what ``bridge demo``'s
portal checks act through.

A form is read as a browser reads it (its action, its hidden and filled-in fields, the CSRF
token among them, the button pressed) and sent as the browser would send it, so that a check
follows the pages the portal serves and never builds a request from its internals. The
emails come from the demo's SMTP sink (:class:`bridge_sandbox.mailbox.Mailbox`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx

PATH = "/privacy"
_VERIFY = re.compile(r"https?://\S+?/privacy/verify\?t=[\w-]+")
_STATUS = re.compile(r"https?://\S+?/privacy/requests/[\w.-]+")


class NoSuchForm(Exception):
    """The page holds no form the visitor was to send: the page, not the check, is wrong."""


@dataclass
class Form:
    """One form of a page: where it goes, what it sends as it stands, and its buttons."""

    action: str
    method: str
    fields: dict[str, list[str]] = field(default_factory=dict)
    """Each named input's values (hidden ones repeat: one ``address`` per proved address)."""
    buttons: list[tuple[str, str]] = field(default_factory=list)
    """Named submit buttons, ``(name, value)``: pressing one sends its pair."""

    def offers(self, wanted: Mapping[str, str]) -> tuple[str, str] | None:
        """What to press to send ``wanted``: a named button among them, or ``("", "")`` when
        the fields alone say the rest; None when this form cannot (not the one)."""
        pressed = next((b for b in self.buttons if b in wanted.items()), None)
        rest = {k: v for k, v in wanted.items() if pressed is None or k != pressed[0]}
        if any(v not in self.fields.get(k, []) for k, v in rest.items()):
            return None
        return pressed or ("", "")


class _Forms(HTMLParser):
    """Every form of a page with its named inputs and named submit buttons (the portal's
    forms hold nothing else: no boxes to tick, no lists to choose from)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(attr.get("action", ""), attr.get("method", "get").lower()))
            return
        name = attr.get("name")
        if not self.forms or not name or tag not in ("input", "button"):
            return
        kind = attr.get("type", "submit" if tag == "button" else "text").lower()
        if kind == "submit":
            self.forms[-1].buttons.append((name, attr.get("value", "")))
        else:
            self.forms[-1].fields.setdefault(name, []).append(attr.get("value", ""))


def forms(page: str) -> list[Form]:
    parser = _Forms()
    parser.feed(page)
    parser.close()
    return parser.forms


class Visitor:
    """One person's browser on the privacy page (its cookies, the page it is on)."""

    def __init__(self, public_url: str) -> None:
        self.client = httpx.Client(base_url=public_url, timeout=30, follow_redirects=True)
        self.page: httpx.Response | None = None
        self.signed_in = False

    def close(self) -> None:
        self.client.close()

    def open(self, url: str) -> httpx.Response:
        """Go to ``url`` (a path below /privacy, or a link's whole address)."""
        self.page = self.client.get(url if "://" in url else PATH + url)
        return self.page

    def submit(
        self, action: str, choose: Mapping[str, str] | None = None, **fill: str
    ) -> httpx.Response:
        """Send the current page's form that goes to ``action`` (below /privacy), the one
        whose fields or button say ``choose`` where several do, with ``fill`` typed in."""
        if self.page is None:
            raise NoSuchForm("no page open")
        wanted = dict(choose or {})
        target = urljoin(str(self.page.url), PATH + action)
        for form in forms(self.page.text):
            goes = urljoin(str(self.page.url), form.action or str(self.page.url))
            if urlsplit(goes).path != urlsplit(target).path or form.method != "post":
                continue
            pressed = form.offers(wanted)
            if pressed is None:
                continue
            data = form.fields | {k: [v] for k, v in fill.items()}
            if pressed[0]:
                data[pressed[0]] = [pressed[1]]
            self.page = self.client.post(goes, data=data)
            return self.page
        page = self.page
        raise NoSuchForm(
            f"no form to {PATH}{action}{f' for {wanted}' if wanted else ''} on {page.url.path} "
            f"(answered {page.status_code})"
        )


def text_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    return body.get_content() if body is not None else ""


def sign_in_link(message: EmailMessage) -> str | None:
    found = _VERIFY.search(text_of(message))
    return found.group(0) if found else None


def status_link(message: EmailMessage) -> str | None:
    found = _STATUS.search(text_of(message))
    return found.group(0) if found else None


class _Rows(HTMLParser):
    """The text of each table row's cells."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th") and self.rows:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def portal_answers(page: str) -> dict[str, str]:
    """The answers page of a consent act: system -> its answer, from the table's rows."""
    parser = _Rows()
    parser.feed(page)
    parser.close()
    return {row[0].lower(): row[1] for row in parser.rows if len(row) >= 2 and row[0]}
