"""The ``logging:`` section: level, format and destination of the server log."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs

from homeserver.config._options import PATH, choice, option, optional, str_mapping

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_LEVEL = choice(*LOG_LEVELS, case_insensitive=True)


@attrs.frozen
class LoggingConfig:
    """Server logging. Secrets (tokens, passwords, keys) and message bodies are never logged."""

    level: str = option("INFO", LOG_LEVEL, "Level of the root logger.")
    format: str = option(
        "text", choice("text", "json"), "'text' for people, 'json' for one JSON object per line."
    )
    file: str | None = option(
        None, optional(PATH), "Append the log to this file instead of standard error (optional)."
    )
    loggers: Mapping[str, str] = option(
        MappingProxyType({}),
        str_mapping(LOG_LEVEL),
        "Per-logger levels, e.g. {'homeserver.storage': 'DEBUG'}.",
    )
