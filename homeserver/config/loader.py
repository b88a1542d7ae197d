"""Reads the YAML config file once at start and turns it into a :class:`HomeserverConfig`.

Code never sees raw dicts or environment variables: each component receives its frozen section.
Unknown keys are errors (a typo must not silently fall back to a default), except under
``experimental:``, which is where new or risky behaviour lives until it is promoted.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs
import yaml

from homeserver.config._options import (
    PATH,
    ParseContext,
    ValueType,
    fail,
    parse_section,
    section_meta,
    section_type,
)
from homeserver.config.auth import AuthConfig
from homeserver.config.calls import CallsConfig
from homeserver.config.database import DatabaseConfig
from homeserver.config.errors import ConfigError
from homeserver.config.federation import FederationConfig
from homeserver.config.logging import LoggingConfig
from homeserver.config.media import MediaConfig
from homeserver.config.presence import PresenceConfig
from homeserver.config.ratelimits import RatelimitsConfig
from homeserver.config.redis import RedisConfig
from homeserver.config.registration import RegistrationConfig
from homeserver.config.server import ServerConfig
from homeserver.config.websocket import WebSocketConfig


def _parse_experimental(value: object, path: str, _ctx: ParseContext) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise fail(path, "a mapping with string keys", value)
    return MappingProxyType(copy.deepcopy(dict(value)))


EXPERIMENTAL = ValueType("mapping (free-form)", _parse_experimental)


@attrs.frozen
class HomeserverConfig:
    """The whole configuration, one frozen object per section."""

    server: ServerConfig = attrs.field(
        metadata={
            "doc": "Identity and network settings.",
            "type": section_type(ServerConfig),
            "required": True,
        }
    )
    database: DatabaseConfig = attrs.field(
        factory=DatabaseConfig, metadata=section_meta(DatabaseConfig, "Database engine and pool.")
    )
    registration: RegistrationConfig = attrs.field(
        factory=RegistrationConfig, metadata=section_meta(RegistrationConfig, "Account registration.")
    )
    auth: AuthConfig = attrs.field(
        factory=AuthConfig,
        metadata=section_meta(AuthConfig, "Tokens, lockout, sessions and password hashing."),
    )
    ratelimits: RatelimitsConfig = attrs.field(
        factory=RatelimitsConfig, metadata=section_meta(RatelimitsConfig, "Rate limiting.")
    )
    logging: LoggingConfig = attrs.field(
        factory=LoggingConfig, metadata=section_meta(LoggingConfig, "Logging.")
    )
    redis: RedisConfig = attrs.field(
        factory=RedisConfig, metadata=section_meta(RedisConfig, "Redis replication.")
    )
    media: MediaConfig = attrs.field(
        factory=MediaConfig, metadata=section_meta(MediaConfig, "Media repository.")
    )
    calls: CallsConfig = attrs.field(
        factory=CallsConfig, metadata=section_meta(CallsConfig, "VoIP: TURN servers for calls.")
    )
    presence: PresenceConfig = attrs.field(
        factory=PresenceConfig, metadata=section_meta(PresenceConfig, "Presence: online/unavailable/offline and timeouts.")
    )
    websocket: WebSocketConfig = attrs.field(
        factory=WebSocketConfig,
        metadata=section_meta(WebSocketConfig, "WebSocket sync push (SecureConnect extension, docs/websocket.md)."),
    )
    federation: FederationConfig = attrs.field(
        factory=FederationConfig,
        metadata=section_meta(FederationConfig, "Federation with other homeservers (Server-Server API)."),
    )
    experimental: Mapping[str, Any] = attrs.field(
        factory=lambda: MappingProxyType({}),
        metadata={
            "doc": "Unstable features, free-form: keys here are not checked and may change between releases.",
            "type": EXPERIMENTAL,
            "default_doc": "{}",
            "contextual_default": None,
        },
    )


def parse_config(raw: object, base_dir: str) -> HomeserverConfig:
    """Builds the configuration from already-loaded YAML data.

    Args:
        raw: the YAML document (a mapping, or ``None`` for an empty file).
        base_dir: the directory relative paths are resolved against (the config file's directory).

    Returns:
        The checked configuration.

    Raises:
        ConfigError: naming the YAML path of the first problem found.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError("the config file must be a YAML mapping of sections")
    base_dir = os.path.abspath(base_dir)
    raw = dict(raw)
    # A missing server section is reported as its missing server_name, which is what must be added.
    raw.setdefault("server", None)
    data_dir = base_dir
    server_raw = raw.get("server")
    if isinstance(server_raw, Mapping) and "data_dir" in server_raw:
        data_dir = PATH.parse(server_raw["data_dir"], "server.data_dir", ParseContext(base_dir, base_dir))
    return parse_section(HomeserverConfig, raw, "", ParseContext(base_dir, data_dir))


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects duplicate keys (a silently ignored first value is a typo)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _value in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key_node.value!r}",
                        key_node.start_mark,
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str = "<config>") -> object:
    """Parses YAML text strictly (safe types only, no duplicate keys).

    Raises:
        ConfigError: for invalid YAML, with the line and column of the problem.
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506  # _StrictLoader is a SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = e.problem or e.context or "syntax error"
        raise ConfigError(f"invalid YAML in {source}{where}: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML in {source}: {e}") from None


def load_config(path: str | os.PathLike[str]) -> HomeserverConfig:
    """Reads and checks the config file at ``path``.

    Relative paths inside the file are relative to the file's directory.

    Raises:
        ConfigError: if the file cannot be read, is not valid YAML, or has an invalid option.
    """
    filename = os.fspath(path)
    try:
        with open(filename, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file {filename}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {filename} is not valid UTF-8") from None
    raw = load_yaml(text, filename)
    return parse_config(raw, os.path.dirname(os.path.abspath(filename)))
