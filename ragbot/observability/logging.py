"""Logs for operators: one JSON object a line (or plain text), each with the request id, secrets masked.

``configure_logging`` installs one root handler with two filters: ``RequestIdFilter`` stamps every record
with the current request id (``ragbot.observability.context``), and ``RedactionFilter`` masks credentials
(admin and public keys, bearer tokens, session JWTs, webhook secrets, passwords in URLs) in the message,
its arguments and the traceback, before any formatter sees them. Both sit on the handler, not on loggers,
so third-party records (uvicorn, SQLAlchemy, LiteLLM) pass through them too.

Visitor messages are not logged by ragbot's own code at INFO and above; what is left is listed in the
README's operations section. The redaction is a safety net for credentials, not for message text.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Literal, TextIO

from ragbot.observability.context import current_request_id

__all__ = ["RedactionFilter", "RequestIdFilter", "configure_logging", "redact_secrets"]

LogFormat = Literal["json", "text"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
#: The standard attributes a JSON line carries; ``extra={...}`` fields are added by the formatter.
JSON_FIELDS = ("asctime", "levelname", "name", "message", "request_id")
#: Attributes other libraries stamp on records that say nothing an operator needs (an ANSI-coloured copy
#: of the message; LiteLLM's redaction marker).
NOISE_ATTRS = ("color_message", "litellm_redacted")

_SECRETS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer [redacted]"),
    (re.compile(r"\b(rb|pk)_[A-Za-z0-9_-]{16,}"), r"\1_[redacted]"),  # full keys; 8-char prefixes stay
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[redacted-token]"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]{8,}"), "whsec_[redacted]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), "sk-[redacted]"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]+):[^@/\s]+@"), r"\1:[redacted]@"),
]
#: Cheap pre-check: a line with none of these substrings cannot match any pattern above.
_HINTS = ("earer", "rb_", "pk_", "eyJ", "whsec_", "sk-", "@")


def redact_secrets(text: str) -> str:
    if not any(hint in text for hint in _HINTS):
        return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (``missing`` outside a request) so every formatter can print it."""

    def __init__(self, missing: str | None = "-") -> None:
        super().__init__()
        self._missing = missing

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id() or self._missing
        return True


class RedactionFilter(logging.Filter):
    """Masks credentials in the formatted message and the traceback; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let the formatter report it as logging does
            return True
        redacted = redact_secrets(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_secrets(record.exc_text)
            record.exc_info = None  # the formatter prints exc_text instead of formatting it afresh
        if record.stack_info:
            record.stack_info = redact_secrets(record.stack_info)
        return True


def _json_formatter() -> logging.Formatter:
    from pythonjsonlogger.core import RESERVED_ATTRS
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        list(JSON_FIELDS),
        reserved_attrs=[*RESERVED_ATTRS, *NOISE_ATTRS],
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
        json_ensure_ascii=False,
    )


def configure_logging(
    fmt: LogFormat = "json", level: str | int = "INFO", *, stream: TextIO | None = None
) -> logging.Handler:
    """Replace the root logger's handlers with one that writes ``fmt`` lines to ``stream`` (stderr).

    uvicorn's loggers are pointed at the root handler too (run uvicorn with ``log_config=None``), and its
    access log is left to ``ragbot.access``, which carries the route, the duration and the request id.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter(missing=None if fmt == "json" else "-"))
    handler.addFilter(RedactionFilter())
    handler.setFormatter(_json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    return handler
