"""The ``database:`` section: which engine, where, and connection-pool settings."""

from __future__ import annotations

import os
import urllib.parse
from typing import TYPE_CHECKING

import attrs

from homeserver.config._options import (
    ParseContext,
    ValueType,
    choice,
    integer,
    option,
    positive_number,
    resolve_path,
)
from homeserver.config.errors import ConfigError

if TYPE_CHECKING:
    from homeserver.storage.engines import DatabaseSettings

SQLITE_MEMORY = ":memory:"
_URL_HELP = (
    "a database URL: 'sqlite:///ABSOLUTE/PATH.db', 'sqlite:RELATIVE.db' or 'postgresql://USER@HOST/DB'"
)


def _parse_url(value: object, path: str, ctx: ParseContext) -> str:
    # Never echo the value: a PostgreSQL URL may carry a password.
    if not isinstance(value, str) or not value:
        raise ConfigError(f"expected {_URL_HELP}", path)
    if value.startswith("sqlite:"):
        return _normalise_sqlite(value[len("sqlite:") :], path, ctx)
    if value.startswith(("postgresql://", "postgres://")):
        try:
            parts = urllib.parse.urlsplit(value)
            parts.port  # noqa: B018  # parses the port; raises ValueError when it is not a number
        except ValueError:
            raise ConfigError("malformed PostgreSQL URL", path) from None
        if not parts.path.strip("/"):
            raise ConfigError("the PostgreSQL URL must name a database ('.../DBNAME')", path)
        return value
    raise ConfigError(f"unsupported database URL scheme; expected {_URL_HELP}", path)


def _normalise_sqlite(rest: str, path: str, ctx: ParseContext) -> str:
    """Normalises to the storage layer's form: ``sqlite://`` + absolute path, or ``sqlite://:memory:``."""
    if rest.startswith("//"):
        # "sqlite:///abs" (and "sqlite:////abs") are absolute; "sqlite://rel/x.db" is relative.
        rest = rest[2:]
    if rest in (SQLITE_MEMORY, "/" + SQLITE_MEMORY):
        return "sqlite://" + SQLITE_MEMORY
    if not rest or "\x00" in rest or "?" in rest:
        raise ConfigError(f"expected {_URL_HELP}", path)
    # Relative paths are relative to the config file, never to the working directory.
    absolute = resolve_path("/" + rest.lstrip("/") if rest.startswith("/") else rest, ctx)
    return "sqlite://" + absolute


DATABASE_URL = ValueType("database URL (sqlite or postgresql)", _parse_url)


def redact_url(url: str) -> str:
    """Returns ``url`` with any password replaced by ``***`` (for logs and ``repr``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


@attrs.frozen
class DatabaseConfig:
    """Database engine, location and pool settings."""

    url: str = attrs.field(
        default="sqlite://" + SQLITE_MEMORY,
        repr=lambda url: repr(redact_url(url)),
        metadata={
            "doc": "Where the data lives. 'sqlite:///ABSOLUTE/PATH.db' (or 'sqlite://RELATIVE.db', relative "
            "to the config file; 'sqlite://:memory:' for tests) for a single-process server; 'postgresql://USER:PASSWORD@HOST:PORT/DB' "
            "for production and workers.",
            "type": DATABASE_URL,
            "default_doc": "sqlite:///DATA/homeserver.db",
            "contextual_default": lambda ctx: "sqlite://" + os.path.join(ctx.data_dir, "homeserver.db"),
        },
    )
    pool_min: int = option(1, integer(1, 1000), "Connections kept open (PostgreSQL).")
    pool_max: int = option(
        10,
        integer(1, 1000),
        "Most connections open at once per lane: PostgreSQL has a write lane and a read-only read lane "
        "(so up to twice this many connections); on SQLite, the reader count.",
    )
    sqlite_synchronous: str = option(
        "FULL",
        choice("NORMAL", "FULL", case_insensitive=True),
        "SQLite PRAGMA synchronous. FULL survives power loss without losing committed events; "
        "NORMAL is faster but may lose the last transactions on power loss.",
    )
    txn_retries: int = option(
        5,
        integer(0, 100),
        "How often an idempotent transaction is retried after a serialization failure, deadlock or "
        "SQLITE_BUSY.",
    )
    connect_timeout_s: float = option(
        10.0,
        positive_number(maximum=3600),
        "Seconds to wait for a new database connection (SQLite: for a lock).",
    )

    @property
    def engine(self) -> str:
        """``"sqlite"`` or ``"postgres"``."""
        return "sqlite" if self.url.startswith("sqlite:") else "postgres"

    @property
    def sqlite_path(self) -> str | None:
        """The SQLite file path (or ``":memory:"``); ``None`` for PostgreSQL."""
        if not self.url.startswith("sqlite:"):
            return None
        return self.url[len("sqlite://") :]

    def redacted_url(self) -> str:
        """The URL with any password masked, safe to log."""
        return redact_url(self.url)

    def to_settings(self) -> DatabaseSettings:
        """The storage layer's settings for this section.

        Raises:
            ConfigError: if the storage layer rejects the values (naming the ``database`` section).
        """
        from homeserver.storage.engines import DatabaseSettings, DatabaseSettingsError

        try:
            return DatabaseSettings(
                url=self.url,
                pool_min=self.pool_min,
                pool_max=self.pool_max,
                sqlite_synchronous=self.sqlite_synchronous,
                txn_retries=self.txn_retries,
                connect_timeout=self.connect_timeout_s,
            )
        except DatabaseSettingsError as e:
            raise ConfigError(str(e), "database") from None

    def check(self, path: str) -> None:
        """Cross-option checks, called by the parser."""
        if self.pool_min > self.pool_max:
            raise ConfigError(
                f"must not exceed {path}.pool_max ({self.pool_max}), got {self.pool_min}",
                f"{path}.pool_min",
            )
