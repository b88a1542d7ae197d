"""Tests for log setup, request ids and secret redaction."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from homeserver.config import ConfigError, LoggingConfig, parse_config
from homeserver.logging import (
    RedactingFilter,
    RequestIdFilter,
    redact_secrets,
    request_context,
    request_id,
    setup_logging,
)


@pytest.fixture
def clean_root() -> Iterator[None]:
    """Restores the root logger after a test installs handlers on it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def make_record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("test", logging.INFO, __file__, 1, msg, args or None, None)


class TestRedaction:
    @pytest.mark.parametrize(
        ("text", "secret"),
        [
            ("GET /_matrix/client/v3/sync?access_token=syt_abc123&since=s1", "syt_abc123"),
            ("GET /x?since=s1&access_token=tok%2Fen", "tok%2Fen"),
            ("POST /refresh refresh_token=rt_secret", "rt_secret"),
            ("Authorization: Bearer syt_header_token", "syt_header_token"),
            ("headers={b'Authorization': [b'Bearer syt_bytes_token']}", "syt_bytes_token"),
            ('{\'authorization\': \'X-Matrix origin="a.org",key="ed25519:1",sig="sigsig"\'}', "sigsig"),
            ('body={"type": "m.login.password", "password": "hunter2"}', "hunter2"),
            ("body={'new_password': 'correct horse'}", "correct horse"),
            ("token sent as bearer abc.def-ghi", "abc.def-ghi"),
        ],
    )
    def test_secrets_are_masked(self, text: str, secret: str) -> None:
        """Tokens, passwords and Authorization headers never survive redaction."""
        redacted = redact_secrets(text)
        assert secret not in redacted
        assert "<redacted>" in redacted

    def test_other_text_is_untouched(self) -> None:
        """Ordinary parameters and pagination tokens are left alone."""
        text = "GET /messages?from=t1-2&next_token=abc&limit=10 user=@a:b"
        assert redact_secrets(text) == text

    def test_filter_masks_arguments(self) -> None:
        """Secrets passed as %-arguments are caught after the message is rendered."""
        record = make_record("request %s from %s", "/sync?access_token=secret123", "1.2.3.4")
        assert RedactingFilter().filter(record) is True
        assert record.getMessage() == "request /sync?access_token=<redacted> from 1.2.3.4"

    def test_filter_keeps_broken_records(self) -> None:
        """A record whose format string is broken is passed through for the handler to report."""
        record = make_record("%d items", "not a number")
        assert RedactingFilter().filter(record) is True


class TestRequestId:
    def test_filter_adds_current_request_id(self) -> None:
        """Records get the request id of the context they are logged in."""
        record = make_record("hello")
        with request_context("GET-42"):
            RequestIdFilter().filter(record)
        assert record.request_id == "GET-42"  # type: ignore[attr-defined]

    def test_no_request(self) -> None:
        """Outside a request the id is '-', and the context is restored after the block."""
        with request_context("x"):
            pass
        assert request_id.get() is None
        record = make_record("hello")
        RequestIdFilter().filter(record)
        assert record.request_id == "-"  # type: ignore[attr-defined]


class TestSetupLogging:
    def test_text_format(self, clean_root: None) -> None:
        """Text lines carry level, logger, request id, message and extra fields, secrets masked."""
        stream = io.StringIO()
        setup_logging(LoggingConfig(), stream=stream)
        with request_context("req-1"):
            logging.getLogger("homeserver.test").info(
                "sync for %s", "?access_token=abc", extra={"user_id": "@a:b.org"}
            )
        line = stream.getvalue().strip()
        assert " INFO homeserver.test [req-1] sync for ?access_token=<redacted> user_id=@a:b.org" in line
        assert "abc" not in line

    def test_json_format(self, clean_root: None) -> None:
        """JSON format writes one parseable object per line with the structured fields."""
        stream = io.StringIO()
        setup_logging(LoggingConfig(format="json"), stream=stream)
        logger = logging.getLogger("homeserver.test")
        logger.warning("password=%s", "hunter2", extra={"room_id": "!r:b.org"})
        try:
            raise ValueError("Authorization: Bearer inexception")
        except ValueError:
            logger.exception("failed")
        first, second = (json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{"))
        assert first["level"] == "WARNING" and first["logger"] == "homeserver.test"
        assert first["message"] == "password=<redacted>"
        assert first["room_id"] == "!r:b.org" and first["request_id"] == "-"
        assert first["ts"].endswith("Z")
        assert "inexception" not in second["exc"] and "ValueError" in second["exc"]

    def test_levels(self, clean_root: None) -> None:
        """The root level and per-logger levels come from the config."""
        stream = io.StringIO()
        config = parse_config(
            {
                "server": {"server_name": "a.org"},
                "logging": {"level": "warning", "loggers": {"noisy": "error"}},
            },
            "/",
        ).logging
        setup_logging(config, stream=stream)
        logging.getLogger("quiet").info("hidden")
        logging.getLogger("quiet").warning("shown")
        logging.getLogger("noisy").warning("hidden too")
        assert stream.getvalue().count("\n") == 1 and "shown" in stream.getvalue()

    def test_setup_twice_replaces_its_handler(self, clean_root: None) -> None:
        """Calling setup_logging again does not duplicate output."""
        stream = io.StringIO()
        setup_logging(LoggingConfig(), stream=io.StringIO())
        setup_logging(LoggingConfig(), stream=stream)
        logging.getLogger("x").warning("once")
        assert stream.getvalue().count("once") == 1

    def test_log_file(self, clean_root: None, tmp_path: Path) -> None:
        """With file set, records are appended to that file."""
        path = tmp_path / "hs.log"
        handler = setup_logging(LoggingConfig(file=str(path)))
        logging.getLogger("x").warning("to file")
        handler.flush()
        assert "to file" in path.read_text()

    def test_unopenable_log_file(self, clean_root: None, tmp_path: Path) -> None:
        """A log file that cannot be opened is a ConfigError naming logging.file."""
        with pytest.raises(ConfigError, match=r"^logging\.file: cannot open log file"):
            setup_logging(LoggingConfig(file=str(tmp_path / "missing" / "hs.log")))
