"""Database engines: one portable SQL code path on SQLite and PostgreSQL.

:func:`create_engine` picks the engine from :class:`DatabaseSettings` (built by the config loader from
the ``database`` YAML section).
"""

from __future__ import annotations

from homeserver.storage.engines.base import (
    ColumnInfo,
    DatabaseEngine,
    DatabaseSettings,
    DatabaseSettingsError,
    IndexInfo,
    SchemaDescription,
    check_identifier,
)
from homeserver.storage.engines.postgres import PostgresEngine
from homeserver.storage.engines.sqlite import SqliteEngine

__all__ = [
    "ColumnInfo",
    "DatabaseEngine",
    "DatabaseSettings",
    "DatabaseSettingsError",
    "IndexInfo",
    "PostgresEngine",
    "SchemaDescription",
    "SqliteEngine",
    "check_identifier",
    "create_engine",
]


def create_engine(settings: DatabaseSettings) -> DatabaseEngine:
    """Return the engine for ``settings.url`` (``sqlite://`` or ``postgresql://``).

    Args:
        settings: Validated database settings.

    Returns:
        An engine that has not connected yet.

    Raises:
        DatabaseSettingsError: unknown URL scheme, bad URL, or the engine's driver is unusable.
    """
    url = settings.url
    if url.startswith("sqlite://"):
        return SqliteEngine(settings)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresEngine(settings)
    raise DatabaseSettingsError("database url must start with sqlite:// or postgresql://")
