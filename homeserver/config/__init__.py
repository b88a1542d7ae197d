"""Homeserver configuration: one frozen attrs class per YAML section, parsed once at start.

Use :func:`load_config` (a file) or :func:`parse_config` (already-loaded data); both raise
:class:`ConfigError` naming the YAML path of the problem. ``docs/config.md`` lists every option.
"""

from homeserver.config.auth import Argon2Config, AuthConfig, LockoutConfig
from homeserver.config.database import DatabaseConfig
from homeserver.config.errors import ConfigError
from homeserver.config.loader import HomeserverConfig, load_config, parse_config
from homeserver.config.logging import LoggingConfig
from homeserver.config.media import MediaConfig
from homeserver.config.ratelimits import ActionLimits, RateLimit, RatelimitsConfig
from homeserver.config.redis import RedisConfig
from homeserver.config.registration import PasswordPolicyConfig, RegistrationConfig
from homeserver.config.server import ListenerConfig, ServerConfig

__all__ = [
    "ActionLimits",
    "Argon2Config",
    "AuthConfig",
    "ConfigError",
    "DatabaseConfig",
    "HomeserverConfig",
    "ListenerConfig",
    "LockoutConfig",
    "LoggingConfig",
    "MediaConfig",
    "PasswordPolicyConfig",
    "RateLimit",
    "RatelimitsConfig",
    "RedisConfig",
    "RegistrationConfig",
    "ServerConfig",
    "load_config",
    "parse_config",
]
