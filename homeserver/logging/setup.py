"""Installs the server's log handler: text or JSON lines, request ids, and secret redaction.

Records carry structured context through ``extra=`` (``room_id``, ``user_id``, ``destination``...);
both formatters print those fields. Access tokens and passwords must never be logged; as a second
line of defence, :class:`RedactingFilter` and the formatters mask anything that looks like one
(``access_token=...`` query parameters, ``Authorization`` headers, ``"password": "..."``) before a
record is written.
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import re
import sys
from typing import Any, TextIO

from homeserver.config.errors import ConfigError
from homeserver.config.logging import LoggingConfig
from homeserver.logging.context import NO_REQUEST, RequestIdFilter

REDACTED = "<redacted>"
# Names of secret-bearing parameters (not secrets themselves).
_SECRET_NAMES = r"(?:access_token|refresh_token|login_token|registration_token|password|new_password|token)"  # noqa: S105
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Query strings and form bodies: ?access_token=abc&...
    (re.compile(rf"(?i)(?<![\w-])({_SECRET_NAMES}=)[^&\s\"'<>#]+"), rf"\1{REDACTED}"),
    # JSON or Python reprs: "password": "hunter2"
    (re.compile(rf"(?i)([\"']{_SECRET_NAMES}[\"']\s*:\s*b?)([\"'])(?:\\.|(?!\2).)*\2"), rf"\1\2{REDACTED}\2"),
    # Header mappings: {b'Authorization': [b'Bearer abc']}
    (
        re.compile(r"(?i)(authorization[\"']\s*[:,]\s*\[?\s*b?)([\"'])(?:\\.|(?!\2).)*\2"),
        rf"\1\2{REDACTED}\2",
    ),
    # Raw header lines: Authorization: Bearer abc
    (re.compile(r"(?i)(authorization\s*:\s*)[^\r\n]+"), rf"\1{REDACTED}"),
    # A bearer token anywhere else.
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), rf"\1{REDACTED}"),
)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
}
_INSTALLED_MARK = "_sc_installed"


def redact_secrets(text: str) -> str:
    """Masks access tokens, passwords and Authorization header values in ``text``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with secrets masked (see :func:`redact_secrets`).

    The message is rendered (``msg % args``) first so secrets passed as arguments are caught too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Masks the record in place; never drops it."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let the handler report it as usual
            return True
        redacted = redact_secrets(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``2024-01-01T12:00:00.000Z INFO homeserver.x [req-1] message key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        """Formats one record as a single text entry (exceptions follow on extra lines)."""
        parts = [
            _timestamp(record),
            record.levelname,
            record.name,
            f"[{getattr(record, 'request_id', NO_REQUEST)}]",
            record.getMessage(),
        ]
        parts.extend(f"{k}={v}" for k, v in sorted(_extras(record).items()))
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        elif record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return redact_secrets(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``request_id``, ``message``, extras."""

    def format(self, record: logging.LogRecord) -> str:
        """Formats one record as a single JSON line."""
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", NO_REQUEST),
            "message": redact_secrets(record.getMessage()),
        }
        for key, value in _extras(record).items():
            if isinstance(value, str):
                value = redact_secrets(value)
            elif not isinstance(value, int | float | bool | type(None)):
                value = redact_secrets(str(value))
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = redact_secrets(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(
    config: LoggingConfig, *, stream: TextIO | None = None, capture_twisted: bool = False
) -> logging.Handler:
    """Configures the root logger from the ``logging:`` section.

    Calling it again replaces the handler it installed before (other handlers are left alone).

    Args:
        config: the logging section.
        stream: where to write when ``config.file`` is unset (standard error by default).
        capture_twisted: also route Twisted's own log events into the standard library logging
            (the server does this at start; tests leave Twisted's global logger alone).

    Returns:
        The installed handler.

    Raises:
        ConfigError: if the log file cannot be opened.
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _INSTALLED_MARK, False):
            root.removeHandler(old)
            old.close()
    handler: logging.Handler
    if config.file:
        try:
            handler = logging.handlers.WatchedFileHandler(config.file, encoding="utf-8")
        except OSError as e:
            raise ConfigError(
                f"cannot open log file {config.file}: {e.strerror or e}", "logging.file"
            ) from None
    else:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _INSTALLED_MARK, True)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(config.level)
    for name, level in config.loggers.items():
        logging.getLogger(name).setLevel(level)
    if capture_twisted:
        from twisted.logger import STDLibLogObserver, globalLogBeginner

        observer = STDLibLogObserver(name="twisted")
        # STDLibLogObserver implements ILogObserver through zope.interface, which mypy cannot see.
        globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)  # type: ignore[list-item]
    return handler
