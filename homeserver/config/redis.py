"""The ``redis:`` section: the replication doorbell between worker processes."""

from __future__ import annotations

import urllib.parse

import attrs

from homeserver.config._options import BOOL, ParseContext, ValueType, option
from homeserver.config.database import redact_url
from homeserver.config.errors import ConfigError


def _parse_redis_url(value: object, path: str, _ctx: ParseContext) -> str:
    # Never echo the value: it may carry a password.
    expected = "a redis URL such as 'redis://127.0.0.1:6379/0' (or rediss:// for TLS)"
    if not isinstance(value, str):
        raise ConfigError(f"expected {expected}", path)
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018  # parses the port; raises ValueError when it is not a number
    except ValueError:
        raise ConfigError(f"expected {expected}", path) from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError(f"expected {expected}", path)
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ConfigError("the database number in the redis URL must be an integer", path)
    return value


REDIS_URL = ValueType("redis:// or rediss:// URL", _parse_redis_url)


@attrs.frozen
class RedisConfig:
    """Redis pub/sub for replication between workers (a single process does not need it)."""

    enabled: bool = option(False, BOOL, "Use Redis; required when running more than one process.")
    url: str = attrs.field(
        default="redis://127.0.0.1:6379/0",
        repr=lambda url: repr(redact_url(url)),
        metadata={
            "doc": "Redis server, 'redis://[:PASSWORD@]HOST:PORT/DB' or rediss:// for TLS.",
            "type": REDIS_URL,
            "default_doc": None,
            "contextual_default": None,
        },
    )
