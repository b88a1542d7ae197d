"""Tests for sc_proto.media.mxc (C-S API, "Matrix Content (mxc://) URIs")."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sc_proto.errors import InvalidIdentifierError
from sc_proto.identifiers import ServerName
from sc_proto.media import MXCUri, parse_mxc

media_ids = st.text(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=64
)
server_names = st.sampled_from(["example.org", "matrix.org:8448", "1.2.3.4", "[::1]:8448", "localhost"])


class TestMXCUri:
    """mxc:// parsing, validation and formatting."""

    @pytest.mark.parametrize(
        ("uri", "server_name", "media_id"),
        [
            ("mxc://example.org/abc123", "example.org", "abc123"),
            ("mxc://example.org/FHyPlCeYUSFFxlgbQYZmoEoe", "example.org", "FHyPlCeYUSFFxlgbQYZmoEoe"),
            ("mxc://matrix.org:8448/a_b-C", "matrix.org:8448", "a_b-C"),
            ("mxc://[::1]:8448/x", "[::1]:8448", "x"),
            ("mxc://1.2.3.4/0", "1.2.3.4", "0"),
        ],
    )
    def test_valid(self, uri: str, server_name: str, media_id: str) -> None:
        """Valid URIs split into server name and media ID and format back unchanged."""
        parsed = parse_mxc(uri)
        assert parsed == MXCUri(server_name, media_id)
        assert str(parsed) == uri
        assert MXCUri.parse(uri) == parsed

    def test_server_property(self) -> None:
        """The server name is available as a ServerName."""
        assert parse_mxc("mxc://[::1]:8448/x").server == ServerName("[::1]", 8448)

    @pytest.mark.parametrize(
        "uri",
        [
            "",
            "mxc://",
            "mxc:///abc",
            "mxc://example.org",
            "mxc://example.org/",
            "mxc:/example.org/abc",
            "MXC://example.org/abc",
            "http://example.org/abc",
            "example.org/abc",
            "mxc://example.org/../../etc/passwd",
            "mxc://127.0.0.1/../../../some_service/etc/passwd",
            "mxc://example.org/abc/def",
            "mxc://example.org/abc.png",
            "mxc://example.org/abc%2F..",
            "mxc://example.org/abc?x=1",
            "mxc://example.org/abc#frag",
            "mxc://example.org/ab c",
            "mxc://example.org/abç",
            "mxc://example.org/abc\n",
            "mxc://exa mple.org/abc",
            "mxc://example.org:0/abc",
            "mxc://example.org:99999/abc",
            "mxc://user@example.org/abc",
            "mxc://[::1/abc",
            "mxc://example.org/" + "a" * 256,
        ],
    )
    def test_invalid(self, uri: str) -> None:
        """Wrong scheme, missing parts, traversal, bad server names and bad media IDs fail."""
        with pytest.raises(InvalidIdentifierError):
            parse_mxc(uri)

    def test_media_id_length_limit(self) -> None:
        """Media IDs up to 255 characters are accepted."""
        assert parse_mxc("mxc://example.org/" + "a" * 255).media_id == "a" * 255

    @pytest.mark.parametrize("value", [None, 1, b"mxc://example.org/abc", ["mxc://example.org/abc"]])
    def test_non_string(self, value: Any) -> None:
        """Non-strings raise InvalidIdentifierError, not TypeError."""
        with pytest.raises(InvalidIdentifierError):
            parse_mxc(value)

    @pytest.mark.parametrize(
        ("server_name", "media_id"),
        [("bad host", "abc"), ("example.org", "a/b"), ("example.org", ""), (None, "abc"), ("example.org", 5)],
    )
    def test_constructor_validates(self, server_name: Any, media_id: Any) -> None:
        """MXCUri(...) refuses what parse_mxc refuses."""
        with pytest.raises(InvalidIdentifierError):
            MXCUri(server_name, media_id)

    def test_frozen(self) -> None:
        """MXC URIs are immutable values."""
        uri = parse_mxc("mxc://example.org/abc")
        with pytest.raises(dataclasses.FrozenInstanceError):
            uri.media_id = "../x"  # type: ignore[misc]

    @settings(max_examples=50, deadline=None)
    @given(server_names, media_ids)
    def test_round_trip(self, server_name: str, media_id: str) -> None:
        """parse_mxc(str(x)) == x for generated URIs."""
        uri = MXCUri(server_name, media_id)
        assert parse_mxc(str(uri)) == uri
