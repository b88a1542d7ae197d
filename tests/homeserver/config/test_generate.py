"""Tests for config generation and the generated reference documentation."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import attrs
import pytest
import yaml

from homeserver.config import ConfigError, HomeserverConfig, load_config, parse_config
from homeserver.config._options import options_of
from homeserver.config.docs import render_config_docs
from homeserver.config.generate import GenerateOptions, generate_files, parse_listen_address, render_config
from sc_proto.crypto.keys import read_signing_keys

ROOT = Path(__file__).resolve().parents[3]


def _all_option_paths(cls: type, prefix: str = "") -> list[str]:
    paths = []
    for info in options_of(cls):
        if info.vtype.section is not None:
            paths.extend(_all_option_paths(info.vtype.section, f"{prefix}{info.name}."))
        else:
            paths.append(f"{prefix}{info.name}")
    return paths


class TestRenderConfig:
    def test_generated_config_round_trips(self, tmp_path: Path) -> None:
        """The generated text loads back to the requested settings, and the rest are defaults."""
        options = GenerateOptions(server_name="example.org", data_dir=str(tmp_path))
        config = parse_config(yaml.safe_load(render_config(options)), str(tmp_path))
        assert config.server.server_name == "example.org"
        assert config.server.data_dir == str(tmp_path)
        assert config.database.sqlite_path == str(tmp_path / "homeserver.db")
        assert config.registration.mode == "closed"
        assert config.ratelimits.enabled is True
        defaults = parse_config({"server": {"server_name": "example.org"}}, str(tmp_path))
        assert attrs.evolve(config, database=defaults.database) == defaults

    def test_every_option_is_documented_with_its_default(self, tmp_path: Path) -> None:
        """Each option appears as a (possibly commented) line preceded by its description."""
        text = render_config(GenerateOptions(server_name="example.org", data_dir=str(tmp_path)))
        for path in _all_option_paths(HomeserverConfig):
            leaf = path.rsplit(".", 1)[-1]
            assert re.search(rf"^\s*#?{leaf}:", text, flags=re.M), path
        assert text.count("Default:") >= len(_all_option_paths(HomeserverConfig)) - 1
        assert "#max_failed_attempts: 5" in text
        assert "#lockout_duration_s: 900" in text

    def test_uncommenting_a_default_keeps_the_config_valid(self, tmp_path: Path) -> None:
        """Commented defaults are real YAML: uncommenting a whole section still loads."""
        text = render_config(GenerateOptions(server_name="example.org", data_dir=str(tmp_path)))
        uncommented = re.sub(r"^(\s*)#(\w+:)", r"\1\2", text, flags=re.M)
        config = parse_config(yaml.safe_load(uncommented), str(tmp_path))
        assert config.auth.lockout.max_failed_attempts == 5

    def test_choices_land_in_the_file(self, tmp_path: Path) -> None:
        """Listeners, database URL, registration mode and rate limits come from the options."""
        options = GenerateOptions(
            server_name="example.org:8448",
            data_dir=str(tmp_path),
            listen=(("0.0.0.0", 8448), ("::1", 8008)),
            database_url="postgresql://sc@localhost/sc",
            registration="token",
            rate_limits=False,
        )
        config = parse_config(yaml.safe_load(render_config(options)), str(tmp_path))
        assert [(li.bind_address, li.port) for li in config.server.listeners] == [
            ("0.0.0.0", 8448),
            ("::1", 8008),
        ]
        assert config.server.public_baseurl == "http://localhost:8448/"
        assert config.database.url == "postgresql://sc@localhost/sc"
        assert config.registration.mode == "token"
        assert len(config.registration.tokens) == 1
        assert config.ratelimits.enabled is False

    def test_invalid_choices_name_the_option(self, tmp_path: Path) -> None:
        """Bad input is reported with the YAML path of the option it would set."""
        with pytest.raises(ConfigError, match=r"^server\.server_name: "):
            render_config(GenerateOptions(server_name="not valid", data_dir=str(tmp_path)))
        with pytest.raises(ConfigError, match=r"^server\.listeners\[0\]\.bind_address: "):
            render_config(GenerateOptions("a.org", str(tmp_path), listen=(("localhost", 80),)))
        with pytest.raises(ConfigError, match=r"^database\.url: "):
            render_config(GenerateOptions("a.org", str(tmp_path), database_url="mysql://x/y"))
        with pytest.raises(ConfigError, match=r"--registration"):
            render_config(GenerateOptions("a.org", str(tmp_path), registration="maybe"))


class TestParseListenAddress:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("127.0.0.1:8008", ("127.0.0.1", 8008)),
            ("[::1]:8448", ("::1", 8448)),
            ("0.0.0.0:1", ("0.0.0.0", 1)),
        ],
    )
    def test_valid(self, text: str, expected: tuple[str, int]) -> None:
        """HOST:PORT and [V6]:PORT are accepted."""
        assert parse_listen_address(text) == expected

    @pytest.mark.parametrize("text", ["8008", "host:", ":8008", "h:port", "h:123456", ""])
    def test_invalid(self, text: str) -> None:
        """Anything else is a ConfigError mentioning --listen."""
        with pytest.raises(ConfigError, match="--listen"):
            parse_listen_address(text)


class TestGenerateFiles:
    def test_writes_config_and_signing_key(self, tmp_path: Path) -> None:
        """The config and an ed25519 signing key are written, private to the owner."""
        data_dir = tmp_path / "data"
        path = generate_files(GenerateOptions("example.org", str(data_dir)))
        assert path == str(data_dir / "homeserver.yaml")
        assert load_config(path).server.server_name == "example.org"
        key_text = (data_dir / "signing.key").read_text()
        assert re.fullmatch(r"ed25519 a_[A-Za-z0-9]{4} [A-Za-z0-9+/]{43}\n", key_text)
        assert len(read_signing_keys(key_text)) == 1
        for name in ("homeserver.yaml", "signing.key"):
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600

    def test_refuses_to_overwrite_without_force(self, tmp_path: Path) -> None:
        """An existing config is left untouched unless force is given."""
        generate_files(GenerateOptions("a.org", str(tmp_path)))
        (tmp_path / "homeserver.yaml").write_text("server: {server_name: mine.org}\n")
        with pytest.raises(ConfigError, match="already exists; use --force"):
            generate_files(GenerateOptions("b.org", str(tmp_path)))
        assert "mine.org" in (tmp_path / "homeserver.yaml").read_text()

    def test_force_overwrites_config_but_keeps_the_key(self, tmp_path: Path) -> None:
        """--force rewrites the config; the signing key is never replaced."""
        generate_files(GenerateOptions("a.org", str(tmp_path)))
        key_before = (tmp_path / "signing.key").read_text()
        generate_files(GenerateOptions("b.org", str(tmp_path)), force=True)
        assert load_config(tmp_path / "homeserver.yaml").server.server_name == "b.org"
        assert (tmp_path / "signing.key").read_text() == key_before

    def test_unwritable_directory_is_a_config_error(self, tmp_path: Path) -> None:
        """I/O failures are reported as ConfigError, not raw OSError."""
        blocker = tmp_path / "file"
        blocker.write_text("x")
        with pytest.raises(ConfigError, match="cannot write"):
            generate_files(GenerateOptions("a.org", str(blocker / "data")))


class TestConfigDocs:
    def test_docs_are_up_to_date(self) -> None:
        """docs/config.md matches the classes; regenerate with scripts/gen_config_docs.py."""
        current = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
        assert current == render_config_docs(), "run: python scripts/gen_config_docs.py"

    def test_docs_list_every_option(self) -> None:
        """Every leaf option has a row in the reference."""
        text = render_config_docs()
        for path in _all_option_paths(HomeserverConfig):
            section, _, rest = path.partition(".")
            assert f"`{rest}`" in text or f"## `{section}`" in text, path
        assert "`lockout.max_failed_attempts` | a non-negative integer | `5`" in text
        assert "`listeners[].port`" in text
