"""Tests for the sc-homeserver command line."""

from __future__ import annotations

import io
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from homeserver.app.main import main
from homeserver.config import HomeserverConfig, LoggingConfig, load_config
from sc_proto import __version__


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def composition(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A stand-in for homeserver.app.composition that records its calls."""
    calls: dict[str, Any] = {}
    module = types.ModuleType("homeserver.app.composition")

    def run(config: HomeserverConfig) -> int:
        calls["run"] = config
        return 0

    def register_user(config: HomeserverConfig, user: str, password: str, admin: bool) -> None:
        calls["register_user"] = (config, user, password, admin)

    module.run = run  # type: ignore[attr-defined]
    module.register_user = register_user  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "homeserver.app.composition", module)
    logging_calls: list[LoggingConfig] = []
    monkeypatch.setattr("homeserver.logging.setup.setup_logging", lambda cfg, **kw: logging_calls.append(cfg))
    calls["logging"] = logging_calls
    yield calls


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    code, out, _ = run_cli("generate-config", "--server-name", "example.org", "--data-dir", str(tmp_path))
    assert code == 0
    return Path(out.strip())


class TestGenerateConfig:
    def test_writes_files_and_prints_the_path(self, tmp_path: Path) -> None:
        """generate-config writes homeserver.yaml and signing.key and prints the config path."""
        data_dir = tmp_path / "hs"
        code, out, err = run_cli(
            "generate-config", "--server-name", "example.org", "--data-dir", str(data_dir)
        )
        assert (code, err) == (0, "")
        assert out == f"{data_dir / 'homeserver.yaml'}\n"
        assert (data_dir / "signing.key").read_text().startswith("ed25519 a_")
        config = load_config(data_dir / "homeserver.yaml")
        assert config.server.server_name == "example.org"
        assert config.registration.mode == "closed"
        assert config.ratelimits.enabled is True

    def test_refuses_to_overwrite(self, config_file: Path) -> None:
        """A second run fails with exit code 2 and leaves the file alone."""
        before = config_file.read_text()
        code, out, err = run_cli(
            "generate-config", "--server-name", "other.org", "--data-dir", str(config_file.parent)
        )
        assert code == 2 and out == ""
        assert "already exists" in err and "--force" in err
        assert config_file.read_text() == before

    def test_force_overwrites(self, config_file: Path) -> None:
        """--force replaces an existing config."""
        code, _, _ = run_cli(
            "generate-config", "--server-name", "other.org", "--data-dir", str(config_file.parent), "--force"
        )
        assert code == 0
        assert load_config(config_file).server.server_name == "other.org"

    def test_flags_land_in_the_file(self, tmp_path: Path) -> None:
        """--no-rate-limits, --registration, --listen and --database-url are written to the config."""
        code, out, _ = run_cli(
            "generate-config",
            "--server-name",
            "example.org",
            "--data-dir",
            str(tmp_path),
            "--no-rate-limits",
            "--registration",
            "open",
            "--listen",
            "0.0.0.0:8448",
            "--listen",
            "[::1]:8008",
            "--database-url",
            "postgresql://sc@127.0.0.1/sc",
        )
        assert code == 0
        config = load_config(out.strip())
        assert config.ratelimits.enabled is False
        assert config.registration.mode == "open"
        assert [(li.bind_address, li.port) for li in config.server.listeners] == [
            ("0.0.0.0", 8448),
            ("::1", 8008),
        ]
        assert config.database.url == "postgresql://sc@127.0.0.1/sc"

    def test_token_registration_writes_a_token(self, tmp_path: Path) -> None:
        """--registration token writes one usable registration token."""
        code, out, _ = run_cli(
            "generate-config",
            "--server-name",
            "a.org",
            "--data-dir",
            str(tmp_path),
            "--registration",
            "token",
        )
        assert code == 0
        config = load_config(out.strip())
        assert config.registration.mode == "token" and len(config.registration.tokens) == 1
        assert config.registration.tokens[0] not in out

    def test_bad_server_name(self, tmp_path: Path) -> None:
        """An invalid server name is a usage error naming the option; nothing is written."""
        code, out, err = run_cli(
            "generate-config", "--server-name", "bad name", "--data-dir", str(tmp_path / "d")
        )
        assert code == 2 and out == ""
        assert err.startswith("error: server.server_name: ")
        assert not (tmp_path / "d").exists()

    def test_bad_listen(self, tmp_path: Path) -> None:
        """A malformed --listen is a usage error."""
        code, _, err = run_cli(
            "generate-config", "--server-name", "a.org", "--data-dir", str(tmp_path), "--listen", "nowhere"
        )
        assert code == 2 and "--listen expects HOST:PORT" in err

    def test_bad_registration_mode(self, tmp_path: Path) -> None:
        """argparse rejects unknown registration modes with exit code 2."""
        code, _, _ = run_cli(
            "generate-config",
            "--server-name",
            "a.org",
            "--data-dir",
            str(tmp_path),
            "--registration",
            "maybe",
        )
        assert code == 2

    def test_missing_required_flags(self) -> None:
        """--server-name and --data-dir are required."""
        assert run_cli("generate-config")[0] == 2


class TestVersion:
    def test_version_command(self) -> None:
        """`version` prints the package version."""
        assert run_cli("version") == (0, f"sc-homeserver {__version__}\n", "")

    def test_version_flag(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`--version` prints it too."""
        code, _, _ = run_cli("--version")
        assert code == 0
        assert __version__ in capsys.readouterr().out

    def test_no_command_prints_help(self) -> None:
        """Without a subcommand the help goes to stderr and the exit code is 2."""
        code, _, err = run_cli()
        assert code == 2 and "generate-config" in err


class TestRun:
    def test_bad_config_exits_2_with_message(self, tmp_path: Path, composition: dict[str, Any]) -> None:
        """A config error prints 'error in config: <path>: <problem>' without a traceback."""
        path = tmp_path / "homeserver.yaml"
        path.write_text("server:\n  server_name: example.org\ndatabase:\n  pool_max: ten\n")
        code, out, err = run_cli("run", "--config", str(path))
        assert code == 2 and out == ""
        assert (
            err == "error in config: database.pool_max: expected an integer between 1 and 1000, got 'ten'\n"
        )
        assert "Traceback" not in err
        assert "run" not in composition

    def test_missing_config_file(self, tmp_path: Path, composition: dict[str, Any]) -> None:
        """A missing file is a config error too."""
        code, _, err = run_cli("run", "--config", str(tmp_path / "nope.yaml"))
        assert code == 2 and err.startswith("error in config: cannot read config file")

    def test_invalid_yaml(self, tmp_path: Path, composition: dict[str, Any]) -> None:
        """Invalid YAML reports its line."""
        path = tmp_path / "homeserver.yaml"
        path.write_text("server: [\n")
        code, _, err = run_cli("run", "--config", str(path))
        assert code == 2 and "line 2" in err

    def test_good_config_sets_up_logging_and_runs(
        self, config_file: Path, composition: dict[str, Any]
    ) -> None:
        """A valid config is handed to composition.run after logging is configured."""
        code, _, err = run_cli("run", "--config", str(config_file))
        assert (code, err) == (0, "")
        assert composition["run"].server.server_name == "example.org"
        assert composition["logging"] == [composition["run"].logging]

    def test_composition_missing(
        self, config_file: Path, composition: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a composition root the command fails cleanly (exit 1)."""
        monkeypatch.setitem(sys.modules, "homeserver.app.composition", None)
        code, _, err = run_cli("run", "--config", str(config_file))
        assert code == 1 and "not available" in err


class TestRegisterUser:
    def test_with_password_flag(self, config_file: Path, composition: dict[str, Any]) -> None:
        """The user, password and admin flag are passed to composition.register_user."""
        code, _, _ = run_cli(
            "register-user", "--config", str(config_file), "alice", "--password", "pw-123456", "--admin"
        )
        assert code == 0
        config, user, password, admin = composition["register_user"]
        assert (user, password, admin) == ("alice", "pw-123456", True)
        assert config.server.server_name == "example.org"

    def test_prompts_for_password(
        self, config_file: Path, composition: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without --password the password is read twice from the terminal."""
        monkeypatch.setattr("getpass.getpass", lambda prompt="": "typed-secret")
        code, _, _ = run_cli("register-user", "--config", str(config_file), "bob")
        assert code == 0
        assert composition["register_user"][1:] == ("bob", "typed-secret", False)

    def test_mismatched_passwords(
        self, config_file: Path, composition: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two different passwords abort with exit code 2."""
        answers = iter(["one-password", "another-one"])
        monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
        code, _, err = run_cli("register-user", "--config", str(config_file), "bob")
        assert code == 2 and "do not match" in err
        assert "register_user" not in composition

    def test_empty_password(self, config_file: Path, composition: dict[str, Any]) -> None:
        """An empty --password is refused."""
        code, _, err = run_cli("register-user", "--config", str(config_file), "bob", "--password", "")
        assert code == 2 and "empty" in err

    def test_bad_config(self, tmp_path: Path, composition: dict[str, Any]) -> None:
        """register-user validates the config first, like run."""
        path = tmp_path / "c.yaml"
        path.write_text("server: {server_name: a.org, colour: blue}\n")
        code, _, err = run_cli("register-user", "--config", str(path), "bob", "--password", "x")
        assert code == 2 and err.startswith("error in config: server.colour: unknown option")
