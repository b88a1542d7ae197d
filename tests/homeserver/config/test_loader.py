"""Tests for loading and checking the YAML configuration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import pytest

from homeserver.config import (
    ConfigError,
    DatabaseConfig,
    HomeserverConfig,
    ListenerConfig,
    RedisConfig,
    load_config,
    parse_config,
)

BASE = "/srv/matrix"


def minimal(**sections: Any) -> dict[str, Any]:
    """A config with only the required server name, plus ``sections`` merged in."""
    raw: dict[str, Any] = {"server": {"server_name": "example.org"}}
    for name, value in sections.items():
        if name == "server":
            raw["server"].update(value)
        else:
            raw[name] = value
    return raw


def error_of(raw: object, base_dir: str = BASE) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, base_dir)
    return str(info.value)


class TestDefaults:
    def test_minimal_config_gets_every_default(self) -> None:
        """Only server_name is needed; everything else has a documented default."""
        config = parse_config(minimal(), BASE)
        assert config.server.server_name == "example.org"
        assert config.server.listeners == (ListenerConfig(bind_address="127.0.0.1", port=8008, tls=False),)
        assert config.server.public_baseurl == "http://localhost:8008/"
        assert config.server.max_request_body_size == 1024 * 1024
        assert config.server.serve_well_known is False
        assert config.server.pid_file is None
        assert config.registration.mode == "closed"
        assert config.registration.guest_access is False
        assert config.registration.password_policy.minimum_length == 10
        assert config.auth.lockout.max_failed_attempts == 5
        assert config.auth.lockout.lockout_duration_s == 900
        assert config.auth.max_sessions_per_user == 100
        assert config.auth.access_token_lifetime_ms is None
        assert config.ratelimits.enabled is True
        assert config.ratelimits.admins_exempt is True
        assert config.logging.level == "INFO"
        assert config.logging.format == "text"
        assert config.redis.enabled is False
        assert config.media.max_upload_size == 50 * 1024 * 1024
        assert dict(config.experimental) == {}

    def test_paths_default_under_the_data_dir(self) -> None:
        """The signing key, SQLite database and media store live in data_dir unless configured."""
        config = parse_config(minimal(server={"data_dir": "data"}), BASE)
        assert config.server.data_dir == "/srv/matrix/data"
        assert config.server.signing_key_path == "/srv/matrix/data/signing.key"
        assert config.database.url == "sqlite:///srv/matrix/data/homeserver.db"
        assert config.database.sqlite_path == "/srv/matrix/data/homeserver.db"
        assert config.media.media_store_path == "/srv/matrix/data/media"

    def test_data_dir_defaults_to_the_config_directory(self) -> None:
        """Without data_dir, the config file's directory is the data directory."""
        config = parse_config(minimal(), BASE)
        assert config.server.data_dir == BASE
        assert config.server.signing_key_path == os.path.join(BASE, "signing.key")

    def test_relative_paths_resolve_against_the_config_directory(self) -> None:
        """Explicit relative paths are relative to the config file, not the working directory."""
        config = parse_config(
            minimal(server={"signing_key_path": "keys/k.key", "pid_file": "run/hs.pid"}), BASE
        )
        assert config.server.signing_key_path == "/srv/matrix/keys/k.key"
        assert config.server.pid_file == "/srv/matrix/run/hs.pid"

    def test_empty_sections_are_allowed(self) -> None:
        """A section key with nothing under it (YAML null) means all defaults."""
        config = parse_config(minimal(database=None, auth=None), BASE)
        assert config.database.pool_max == 10

    def test_nested_section_keeps_its_place_specific_defaults(self) -> None:
        """Setting one rate-limit value keeps the other defaults of that action, not generic ones."""
        config = parse_config(minimal(ratelimits={"login": {"per_ip": {"burst": 7}}}), BASE)
        assert config.ratelimits.login.per_ip.burst == 7
        assert config.ratelimits.login.per_ip.per_second == pytest.approx(0.17)
        assert config.ratelimits.login.per_user.burst == 3
        assert config.ratelimits.message.per_user.per_second == pytest.approx(0.2)

    def test_sections_are_frozen(self) -> None:
        """Code receives immutable sections."""
        config = parse_config(minimal(), BASE)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            config.server.server_name = "other.org"  # type: ignore[misc]

    def test_experimental_accepts_anything(self) -> None:
        """Keys under experimental: are not checked."""
        config = parse_config(minimal(experimental={"msc9999": {"enabled": True}}), BASE)
        assert config.experimental["msc9999"] == {"enabled": True}


class TestValues:
    def test_overrides_are_applied(self) -> None:
        """Explicit values replace the defaults and are converted to their types."""
        config = parse_config(
            minimal(
                server={
                    "listeners": [{"bind_address": "::", "port": 8448}, {"port": 9000}],
                    "public_baseurl": "https://matrix.example.org",
                    "max_request_body_size": "2M",
                },
                database={"url": "postgresql://synapse@db/sc", "pool_min": 2, "pool_max": 4},
                registration={"mode": "token", "tokens": ["abc-123"]},
                logging={"level": "debug", "format": "json", "loggers": {"homeserver.storage": "warning"}},
                media={"max_upload_size": "1G"},
            ),
            BASE,
        )
        assert [(li.bind_address, li.port) for li in config.server.listeners] == [
            ("::", 8448),
            ("127.0.0.1", 9000),
        ]
        assert config.server.public_baseurl == "https://matrix.example.org/"
        assert config.server.max_request_body_size == 2 * 1024 * 1024
        assert config.database.engine == "postgres"
        assert config.database.sqlite_path is None
        assert (config.database.pool_min, config.database.pool_max) == (2, 4)
        assert config.registration.tokens == ("abc-123",)
        assert config.logging.level == "DEBUG"
        assert config.logging.loggers == {"homeserver.storage": "WARNING"}
        assert config.media.max_upload_size == 1024**3

    @pytest.mark.parametrize(
        ("url", "path"),
        [
            ("sqlite:///var/lib/sc/hs.db", "/var/lib/sc/hs.db"),
            ("sqlite:////var/lib/sc/hs.db", "/var/lib/sc/hs.db"),
            ("sqlite:hs.db", "/srv/matrix/hs.db"),
            ("sqlite://data/hs.db", "/srv/matrix/data/hs.db"),
            ("sqlite://:memory:", ":memory:"),
            ("sqlite:///:memory:", ":memory:"),
            ("sqlite::memory:", ":memory:"),
        ],
    )
    def test_sqlite_urls(self, url: str, path: str) -> None:
        """SQLite URLs accept absolute, relative (to the config file) and in-memory forms."""
        config = parse_config(minimal(database={"url": url}), BASE)
        assert config.database.engine == "sqlite"
        assert config.database.sqlite_path == path
        assert config.database.url == "sqlite://" + path

    def test_to_settings(self) -> None:
        """The database section converts to the storage layer's settings."""
        config = parse_config(
            minimal(database={"url": "sqlite:hs.db", "pool_max": 3, "sqlite_synchronous": "normal"}), BASE
        )
        settings = config.database.to_settings()
        assert settings.url == "sqlite:///srv/matrix/hs.db"
        assert (settings.pool_min, settings.pool_max, settings.sqlite_synchronous) == (1, 3, "NORMAL")
        assert settings.txn_retries == 5 and settings.connect_timeout == 10.0
        assert DatabaseConfig().to_settings().url == "sqlite://:memory:"

    def test_passwords_are_hidden_from_repr(self) -> None:
        """A config logged by mistake does not reveal database/redis passwords or registration tokens."""
        config = parse_config(
            minimal(
                database={"url": "postgresql://sc:hunter2@db/sc"},
                redis={"url": "redis://:s3cret@127.0.0.1:6379/0"},
                registration={"tokens": ["tok-secret"]},
            ),
            BASE,
        )
        text = repr(config)
        assert "hunter2" not in text and "s3cret" not in text and "tok-secret" not in text
        assert config.database.redacted_url() == "postgresql://sc:***@db/sc"
        assert config.database.url == "postgresql://sc:hunter2@db/sc"

    def test_direct_construction_gives_usable_defaults(self) -> None:
        """Sections can be built directly in tests; the default database is in-memory SQLite."""
        assert DatabaseConfig().sqlite_path == ":memory:"
        assert DatabaseConfig().url == "sqlite://:memory:"
        assert RedisConfig().url == "redis://127.0.0.1:6379/0"


class TestErrors:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (
                minimal(database={"pool_max": "ten"}),
                "database.pool_max: expected an integer between 1 and 1000, got 'ten'",
            ),
            (
                minimal(database={"pool_max": True}),
                "database.pool_max: expected an integer between 1 and 1000, got true",
            ),
            (
                minimal(database={"pool_min": 0}),
                "database.pool_min: expected an integer between 1 and 1000, got 0",
            ),
            (
                minimal(database={"pool_max": 5000}),
                "database.pool_max: expected an integer between 1 and 1000, got 5000",
            ),
            (
                minimal(database={"connect_timeout_s": 7200}),
                "database.connect_timeout_s: expected a positive number up to 3600",
            ),
            (
                minimal(server={"serve_well_known": "yes"}),
                "server.serve_well_known: expected true or false, got 'yes'",
            ),
            (minimal(server={"listeners": {"port": 1}}), "server.listeners: expected a list, got a mapping"),
            (
                minimal(server={"max_request_body_size": "lots"}),
                "server.max_request_body_size: expected a positive size",
            ),
            (
                minimal(auth={"lockout": {"window_s": -1}}),
                "auth.lockout.window_s: expected a positive integer, got -1",
            ),
            (
                minimal(ratelimits={"join": {"per_user": {"per_second": 0}}}),
                "ratelimits.join.per_user.per_second: expected a positive number, got 0",
            ),
            (
                minimal(ratelimits={"message": {"per_ip": {"per_second": ".nan"}}}),
                "ratelimits.message.per_ip.per_second",
            ),
            (minimal(database="sqlite"), "database: expected a mapping, got 'sqlite'"),
            (minimal(logging={"loggers": {"x": "LOUD"}}), "logging.loggers.x: expected one of"),
        ],
    )
    def test_wrong_type_names_the_yaml_path(self, raw: dict[str, Any], expected: str) -> None:
        """Type and range errors name the full YAML path and show the bad value."""
        assert error_of(raw).startswith(expected)

    def test_unknown_top_level_key_is_named_with_a_hint(self) -> None:
        """A misspelt section is an error naming the key, with the likely intended name."""
        assert error_of(minimal(databse={})) == "databse: unknown option (did you mean 'database'?)"

    def test_unknown_nested_key_is_named(self) -> None:
        """Typos inside sections are errors too, with their full path."""
        message = error_of(minimal(registration={"password_policy": {"min_length": 12}}))
        assert message.startswith("registration.password_policy.min_length: unknown option")
        assert "minimum_length" in message

    def test_unknown_listener_key_names_the_list_index(self) -> None:
        """Errors inside list items include the index."""
        message = error_of(minimal(server={"listeners": [{"port": 8008}, {"prot": 8009}]}))
        assert message.startswith("server.listeners[1].prot: unknown option")

    def test_missing_server_name(self) -> None:
        """An empty file is rejected with the one option that must be set."""
        assert error_of(None) == "server.server_name: required option is missing"
        assert error_of({}) == "server.server_name: required option is missing"

    @pytest.mark.parametrize(
        "name",
        ["exa mple.org", "example.org:0", "example.org:99999", "[::1", "300.0.0.1", "ex_ample.org", "", 42],
    )
    def test_bad_server_name(self, name: object) -> None:
        """Server names are checked against the spec's grammar."""
        assert error_of({"server": {"server_name": name}}).startswith("server.server_name: ")

    @pytest.mark.parametrize(
        "name", ["example.org", "matrix.example.org:8448", "[2001:db8::1]:8448", "192.0.2.1", "localhost"]
    )
    def test_good_server_names(self, name: str) -> None:
        """Every form the grammar allows is accepted."""
        assert parse_config({"server": {"server_name": name}}, BASE).server.server_name == name

    @pytest.mark.parametrize(
        ("listener", "expected"),
        [
            ({"bind_address": "localhost"}, "server.listeners[0].bind_address: expected an IP address"),
            ({"bind_address": "256.1.1.1"}, "server.listeners[0].bind_address: expected an IP address"),
            ({"port": 70000}, "server.listeners[0].port: expected an integer between 1 and 65535, got 70000"),
            (
                {"port": "8008"},
                "server.listeners[0].port: expected an integer between 1 and 65535, got '8008'",
            ),
            ({"tls": True}, "server.listeners[0]: tls is true, so tls_certificate_path"),
        ],
    )
    def test_bad_listen_address(self, listener: dict[str, Any], expected: str) -> None:
        """Listener addresses and ports are validated, naming the listener."""
        assert error_of(minimal(server={"listeners": [listener]})).startswith(expected)

    def test_duplicate_listener(self) -> None:
        """Two listeners on the same address and port are rejected."""
        message = error_of(minimal(server={"listeners": [{"port": 8008}, {"port": 8008}]}))
        assert message.startswith("server.listeners[1]: duplicate listener")

    def test_no_listener(self) -> None:
        """At least one listener is required."""
        assert error_of(minimal(server={"listeners": []})).startswith("server.listeners: at least one")

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (
                minimal(registration={"mode": "opne"}),
                "registration.mode: expected one of 'open', 'token', 'closed', got 'opne'",
            ),
            (minimal(logging={"format": "xml"}), "logging.format: expected one of 'text', 'json', got 'xml'"),
            (minimal(auth={"lockout": {"response": "ban"}}), "auth.lockout.response: expected one of"),
            (
                minimal(database={"sqlite_synchronous": "OFF"}),
                "database.sqlite_synchronous: expected one of 'NORMAL', 'FULL'",
            ),
        ],
    )
    def test_bad_enum_value(self, raw: dict[str, Any], expected: str) -> None:
        """Enumerated options list the allowed values."""
        assert error_of(raw).startswith(expected)

    def test_pool_min_above_pool_max(self) -> None:
        """Cross-option checks name the option to fix."""
        message = error_of(minimal(database={"pool_min": 5, "pool_max": 2}))
        assert message == "database.pool_min: must not exceed database.pool_max (2), got 5"

    def test_argon2_memory_must_cover_parallelism(self) -> None:
        """Argon2 needs at least 8 KiB per lane."""
        message = error_of(minimal(auth={"argon2": {"parallelism": 4, "memory_cost_kib": 16}}))
        assert message.startswith(
            "auth.argon2.memory_cost_kib: must be at least 8 * parallelism (32), got 16"
        )

    @pytest.mark.parametrize(
        "url",
        [
            "mysql://db/x",
            "postgresql://u@h/",
            "postgresql://u@h:port/db",
            "sqlite:",
            "sqlite:///x.db?mode=ro",
            "",
            3,
        ],
    )
    def test_bad_database_url(self, url: object) -> None:
        """Unsupported or malformed database URLs are rejected."""
        assert error_of(minimal(database={"url": url})).startswith("database.url: ")

    def test_database_url_password_not_echoed(self) -> None:
        """Errors about the database URL never repeat it (it may hold a password)."""
        message = error_of(minimal(database={"url": "postgresql://u:hunter2@h:xx/db"}))
        assert "hunter2" not in message

    def test_bad_registration_token_not_echoed(self) -> None:
        """Registration tokens are secrets: a malformed one is reported without its value."""
        message = error_of(minimal(registration={"tokens": ["has space secret"]}))
        assert message.startswith("registration.tokens[0]: ")
        assert "secret" not in message.split(":", 1)[1].replace("registration token", "")

    @pytest.mark.parametrize(
        "url", ["ftp://x/", "localhost:8008", "https://", "https://h/?q=1", "https://u:p@h/"]
    )
    def test_bad_public_baseurl(self, url: str) -> None:
        """public_baseurl must be a plain http(s) URL."""
        assert error_of(minimal(server={"public_baseurl": url})).startswith("server.public_baseurl: ")

    @pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis://h:port/0", "redis://h/db1"])
    def test_bad_redis_url(self, url: str) -> None:
        """The redis URL must use redis:// or rediss:// with a numeric database."""
        assert error_of(minimal(redis={"url": url})).startswith("redis.url: ")

    def test_non_mapping_document(self) -> None:
        """A YAML list or scalar at the top level is rejected."""
        assert "mapping" in error_of(["server"])

    def test_non_string_keys(self) -> None:
        """Keys must be strings (YAML allows integers)."""
        assert error_of(minimal(database={1: 2})).startswith("database: option names must be strings")

    def test_experimental_must_be_a_mapping(self) -> None:
        """experimental: is free-form inside, but must be a mapping."""
        assert error_of(minimal(experimental=[1])).startswith("experimental: expected a mapping")


class TestLoadConfig:
    def write(self, tmp_path: Path, text: str) -> Path:
        path = tmp_path / "homeserver.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    def test_loads_a_file_relative_to_its_directory(self, tmp_path: Path) -> None:
        """Paths in the file resolve against the file's own directory."""
        path = self.write(tmp_path, "server:\n  server_name: example.org\n  data_dir: data\n")
        config = load_config(path)
        assert isinstance(config, HomeserverConfig)
        assert config.server.data_dir == str(tmp_path / "data")

    def test_empty_file_reports_missing_server_name(self, tmp_path: Path) -> None:
        """An empty file is valid YAML but lacks the required server name."""
        with pytest.raises(ConfigError, match=r"^server\.server_name: required option is missing$"):
            load_config(self.write(tmp_path, ""))

    def test_invalid_yaml_reports_the_line(self, tmp_path: Path) -> None:
        """Syntax errors give the file, line and column."""
        path = self.write(tmp_path, "server:\n  server_name: example.org\n  listeners: [\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert f"invalid YAML in {path}, line " in str(info.value)
        assert info.value.path is None

    def test_bad_indentation_reports_the_line(self, tmp_path: Path) -> None:
        """A mis-indented key is a YAML error with its line number."""
        path = self.write(tmp_path, "server:\n  server_name: a.org\n data_dir: x\n")
        with pytest.raises(ConfigError, match=r"line 3"):
            load_config(path)

    def test_duplicate_keys_are_errors(self, tmp_path: Path) -> None:
        """A key given twice is rejected instead of the first value being silently dropped."""
        path = self.write(tmp_path, "server:\n  server_name: a.org\n  server_name: b.org\n")
        with pytest.raises(ConfigError, match=r"line 3.*duplicate key 'server_name'"):
            load_config(path)

    def test_unsafe_tags_are_rejected(self, tmp_path: Path) -> None:
        """Only plain YAML data is accepted: no Python object tags."""
        path = self.write(tmp_path, "server: !!python/object/apply:os.getcwd []\n")
        with pytest.raises(ConfigError, match=r"invalid YAML"):
            load_config(path)

    def test_missing_file(self, tmp_path: Path) -> None:
        """An unreadable file is a ConfigError, not an OSError."""
        with pytest.raises(ConfigError, match=r"cannot read config file"):
            load_config(tmp_path / "nope.yaml")

    def test_non_utf8_file(self, tmp_path: Path) -> None:
        """Binary garbage is a ConfigError, not a UnicodeDecodeError."""
        path = tmp_path / "homeserver.yaml"
        path.write_bytes(b"\xff\xfe\x00server")
        with pytest.raises(ConfigError, match=r"not valid UTF-8"):
            load_config(path)

    def test_oversized_values_are_rejected(self, tmp_path: Path) -> None:
        """Absurd numbers are range errors, not crashes."""
        path = self.write(
            tmp_path, "server:\n  server_name: a.org\n  listeners: [{port: 99999999999999999999}]\n"
        )
        with pytest.raises(ConfigError, match=r"server\.listeners\[0\]\.port"):
            load_config(path)
