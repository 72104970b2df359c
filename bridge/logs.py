"""Logging: structlog everywhere, JSON lines off a TTY, and no personal data ever.

Every record, from structlog or from the standard library (uvicorn, alembic, the vendor SDKs),
passes the same processor, which replaces anything that looks like an email or a phone number,
and any field the model marks personal, with ``[redacted]``.

The HTTP libraries are quiet below debug: the bridge logs each vendor call's failure itself
(``adapter.call_retrying`` at info, ``adapter.call_failed`` at warning, in
``bridge/adapters/base.py``), so their per-request lines are noise that also breaks progress
bars. At debug, httpx and urllib3 log one line per request; httpcore's connection-level chatter
takes ``BRIDGE_LOG_WIRE=1`` as well, and hpack (header values, tokens included) never logs.

structlog (which imports rich and asyncio) is imported on first use, not with this module: a
command that logs nothing (``--version``, ``--help``) never pays for it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import structlog

REDACTED = "[redacted]"
EMAIL = re.compile(r"[^\s@<>\"(),;:]+@[^\s@<>\"'(),;:]+\.[^\s@<>\"'(),;:]+")
# A leading "+" with digits, or digit groups split by spaces, dots, dashes or brackets.
# Dates (2026-11-23), times, plain numeric ids and GUIDs (Dataverse's record ids, whose inner
# groups may be all digits: hence no dash either side) do not match.
PHONE = re.compile(
    r"(?<![\w+-])(?:\+\d[\d\s().-]{6,}\d|\(?\d{2,5}\)?[\s.-]\d{2,5}[\s.-]\d{3,6})(?![\w-])"
)
# One line per request at debug, nothing below it.
HTTP_LIBRARIES = ("httpx", "urllib3")
# Every connection, send and receive event: at debug, and only with BRIDGE_LOG_WIRE=1.
WIRE_LIBRARIES = ("httpcore",)
# HTTP/2 header (de)compression logs header values, the bearer token too: never.
SILENT_LIBRARIES = ("hpack",)
WIRE_OPT_IN = "BRIDGE_LOG_WIRE"


@functools.cache
def personal_keys() -> frozenset[str]:
    """Field names the model marks personal (the model is imported on first use)."""
    from bridge.model import personal_field_names

    return personal_field_names()


def looks_personal(text: str) -> bool:
    return personal_kind(text) is not None


def personal_kind(text: str) -> str | None:
    """What in ``text`` looks like personal data ("an email address", "a phone number"), if
    anything: the words of an error that refuses it."""
    if EMAIL.search(text):
        return "an email address"
    return "a phone number" if PHONE.search(text) else None


def redact_text(text: str) -> str:
    return PHONE.sub(REDACTED, EMAIL.sub(REDACTED, text))


def redact(value: Any) -> Any:
    """Redact a value of any shape: strings by pattern, containers item by item."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            k: REDACTED if str(k).lower() in personal_keys() else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return redact(dataclasses.asdict(value))
    return redact_text(repr(value))


def redact_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor; runs last before rendering, after exceptions became text."""
    return {
        key: REDACTED if key.lower() in personal_keys() else redact(value)
        for key, value in event_dict.items()
    }


def redact_stdlib_arguments(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Re-render a standard-library message from redacted arguments.

    ``log.debug("sent %s", contact)`` formats the whole dict into the text, where names can no
    longer be told apart; redacting the arguments first keeps their personal keys out.
    """
    record = event_dict.get("_record")
    args = event_dict.pop("positional_args", None)
    if isinstance(record, logging.LogRecord) and args:
        safe = tuple(redact(a) for a in args) if isinstance(args, tuple) else redact(args)
        try:
            event_dict["event"] = str(record.msg) % safe
        except (TypeError, ValueError):
            event_dict["event"] = REDACTED
    return event_dict


def configure(level: str = "info", stream: TextIO | None = None, wire: bool | None = None) -> None:
    """Route the standard library's logging, and structlog's through it, to ``stream``.

    ``wire`` (default: ``BRIDGE_LOG_WIRE=1`` in the environment) lets httpcore log its
    connection-level events, at debug only.
    """
    stream = stream or sys.stderr
    _structlog_configured.cache_clear()  # configured again on first use, as set out here
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Formatter(stream))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet = max(root.level, logging.WARNING)
    debug = root.level <= logging.DEBUG
    if wire is None:
        wire = os.environ.get(WIRE_OPT_IN, "").strip().lower() in ("1", "true", "yes")
    for name in HTTP_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else quiet)
    for name in WIRE_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if debug and wire else quiet)
    for name in SILENT_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)
    # Migration chatter is not news: only its warnings are.
    logging.getLogger("alembic").setLevel(quiet)


class _Formatter(logging.Formatter):
    """The structlog formatter, built when the first record is formatted."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream
        self._inner: logging.Formatter | None = None

    def format(self, record: logging.LogRecord) -> str:
        if self._inner is None:
            self._inner = _structlog_formatter(self._stream)
        return self._inner.format(record)


def _shared_processors() -> list[Any]:
    import structlog

    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


@functools.cache
def _structlog_configured() -> None:
    """structlog hands every event to the standard library, whose handler renders it."""
    import structlog

    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _structlog_formatter(stream: TextIO) -> logging.Formatter:
    import structlog

    _structlog_configured()
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if stream.isatty()
        else structlog.processors.JSONRenderer()
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), redact_stdlib_arguments],
        pass_foreign_args=True,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_personal_data,
            renderer,
        ],
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    import structlog

    _structlog_configured()
    return structlog.stdlib.get_logger(name)
