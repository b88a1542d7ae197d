"""Storage: engines, the transaction pool, schema migrations and stores (DESIGN 2.5)."""

from __future__ import annotations

from homeserver.storage.engines import DatabaseEngine, DatabaseSettings, DatabaseSettingsError, create_engine
from homeserver.storage.migrations import (
    SCHEMA_COMPAT_VERSION,
    IncompatibleSchemaError,
    SchemaError,
    SchemaFiles,
    prepare_database,
)
from homeserver.storage.pool import DatabasePool, PoolClosedError, Txn

__all__ = [
    "SCHEMA_COMPAT_VERSION",
    "DatabaseEngine",
    "DatabasePool",
    "DatabaseSettings",
    "DatabaseSettingsError",
    "IncompatibleSchemaError",
    "PoolClosedError",
    "SchemaError",
    "SchemaFiles",
    "Txn",
    "create_engine",
    "prepare_database",
]
