"""Logging: structlog everywhere, JSON lines off a TTY, and no personal data ever.

Every record, from structlog or from the standard library (uvicorn, alembic, the vendor SDKs),
passes the same processor, which replaces anything that looks like an email or a phone number,
and any field the model marks personal, with ``[redacted]``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from bridge.model import personal_field_names

REDACTED = "[redacted]"
EMAIL = re.compile(r"[^\s@<>\"(),;:]+@[^\s@<>\"'(),;:]+\.[^\s@<>\"'(),;:]+")
# A leading "+" with digits, or digit groups split by spaces, dots, dashes or brackets.
# Dates (2026-11-23), times and plain numeric ids do not match.
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d[\d\s().-]{6,}\d|\(?\d{2,5}\)?[\s.-]\d{2,5}[\s.-]\d{3,6})(?!\w)"
)
PERSONAL_KEYS = personal_field_names()


def looks_personal(text: str) -> bool:
    return bool(EMAIL.search(text) or PHONE.search(text))


def redact_text(text: str) -> str:
    return PHONE.sub(REDACTED, EMAIL.sub(REDACTED, text))


def redact(value: Any) -> Any:
    """Redact a value of any shape: strings by pattern, containers item by item."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            k: REDACTED if str(k).lower() in PERSONAL_KEYS else redact(v) for k, v in value.items()
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
        key: REDACTED if key.lower() in PERSONAL_KEYS else redact(value)
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


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog and route the standard library's logging through the same pipeline."""
    stream = stream or sys.stderr
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if stream.isatty()
        else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, redact_stdlib_arguments],
        pass_foreign_args=True,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_personal_data,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Migration chatter is not news: only its warnings are.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
