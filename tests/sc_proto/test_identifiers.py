"""Tests for sc_proto.identifiers (spec appendices, "Identifier Grammar")."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sc_proto.errors import Codes, InvalidIdentifierError
from sc_proto.identifiers import (
    DeviceID,
    EventID,
    RoomAlias,
    RoomID,
    ServerName,
    UserID,
    is_valid_server_name,
    is_valid_user_localpart,
    parse_server_name,
    validate_device_id,
)
from sc_proto.room_versions import KNOWN_ROOM_VERSIONS, RoomVersions

NON_STRINGS: list[Any] = [None, 1, 1.5, b"@a:b", ["@a:b"], {"a": "b"}, True]
HASH_URL = "CD66HAED5npg6074c6pDtLKalHjVfYb2q4Q3LZgrW6o"  # 43 url-safe base64 chars
HASH_URL_ONLY = "CD66HAED5npg6074c6pDtLKalHjVfYb2q4Q3LZg-_6o"  # uses '-' and '_'
HASH_STD_ONLY = "CD66HAED5npg6074c6pDtLKalHjVfYb2q4Q3LZg+/6o"  # uses '+' and '/'

# --------------------------------------------------------------------------------------------
# Strategies for valid identifiers

_dns_label = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=12
)
dns_names = (
    st.lists(_dns_label, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda s: not all(part.isdigit() for part in s.split(".")))
)
ipv4_hosts = st.ip_addresses(v=4).map(str)
ipv6_hosts = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
ports = st.none() | st.integers(min_value=1, max_value=65535)
server_names = st.builds(ServerName, dns_names | ipv4_hosts | ipv6_hosts, ports).map(str)
strict_localparts = st.text("abcdefghijklmnopqrstuvwxyz0123456789._=-/+", min_size=1, max_size=30)
historical_localparts = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters=":\x00"), max_size=30
)
hashes = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=43, max_size=43)

# Few examples and no deadline: fast, and not flaky on a loaded machine.
fast = settings(max_examples=40, deadline=None)


def _fits(identifier: str) -> bool:
    return len(identifier.encode("utf-8")) <= 255


def _raises_invalid(func: Any, *args: Any, **kwargs: Any) -> InvalidIdentifierError:
    with pytest.raises(InvalidIdentifierError) as excinfo:
        func(*args, **kwargs)
    return excinfo.value


# --------------------------------------------------------------------------------------------
# Server names


class TestServerName:
    """Server name grammar."""

    @pytest.mark.parametrize(
        ("text", "host", "port"),
        [
            ("matrix.org", "matrix.org", None),
            ("matrix.org:8888", "matrix.org", 8888),
            ("1.2.3.4", "1.2.3.4", None),
            ("1.2.3.4:1234", "1.2.3.4", 1234),
            ("[1234:5678::abcd]", "[1234:5678::abcd]", None),
            ("[1234:5678::abcd]:5678", "[1234:5678::abcd]", 5678),
            ("[::1]:8448", "[::1]", 8448),
            ("[::ffff:1.2.3.4]", "[::ffff:1.2.3.4]", None),
            ("localhost", "localhost", None),
            ("MATRIX.ORG", "MATRIX.ORG", None),
            ("a-b.example", "a-b.example", None),
            ("example.com:1", "example.com", 1),
            ("example.com:65535", "example.com", 65535),
            ("255.255.255.255:80", "255.255.255.255", 80),
            ("x" * 255, "x" * 255, None),
        ],
    )
    def test_valid(self, text: str, host: str, port: int | None) -> None:
        """The spec's examples and edge cases parse, keeping the host as written."""
        assert parse_server_name(text) == (host, port)
        assert is_valid_server_name(text)
        assert str(ServerName.parse(text)) == text

    @pytest.mark.parametrize(
        "text",
        [
            "",
            ":8448",
            "example.com:",
            "example.com:0",
            "example.com:65536",
            "example.com:99999",
            "example.com:123456",
            "example.com:08448",
            "example.com:-1",
            "example.com:+80",
            "example.com:80:80",
            "example.com:http",
            "exa mple.com",
            "exa_mple.com",
            "exämple.com",
            "example.com/",
            "user@example.com",
            "1.2.3.256",
            "999.1.1.1",
            "[::1",
            "::1",
            "[::1]x",
            "[::1]:",
            "[::1]:0",
            "[::1]:65536",
            "[]",
            "[:]",
            "[1:2:3:4:5:6:7:8:9]",
            "[::g]",
            "[fe80::1%eth0]",
            "[1.2.3.4]",
            "x" * 256,
            "example.com:\uff18\uff14\uff14\uff18",
            "\u0661.\u0662.\u0663.\u0664",
        ],
    )
    def test_invalid(self, text: str) -> None:
        """Bad hosts, bad IPv6 literals, ports out of range or malformed are refused."""
        error = _raises_invalid(parse_server_name, text)
        assert error.errcode is Codes.INVALID_PARAM
        assert not is_valid_server_name(text)

    @pytest.mark.parametrize("value", NON_STRINGS)
    def test_non_string(self, value: Any) -> None:
        """Non-strings are InvalidIdentifierError, not TypeError."""
        _raises_invalid(parse_server_name, value)
        assert not is_valid_server_name(value)

    def test_constructor_validates(self) -> None:
        """ServerName(...) checks host and port too."""
        assert str(ServerName("example.com", 443)) == "example.com:443"
        for host, port in [("bad host", None), ("example.com", 0), ("example.com", 70000), ("[::1", None)]:
            _raises_invalid(ServerName, host, port)
        _raises_invalid(ServerName, "example.com", True)
        _raises_invalid(ServerName, "example.com", "80")
        _raises_invalid(ServerName, 5)

    def test_ip_literal_helpers(self) -> None:
        """is_ip_literal and bare_host serve server discovery."""
        assert ServerName.parse("[::1]:8448").is_ip_literal
        assert ServerName.parse("[::1]:8448").bare_host == "::1"
        assert ServerName.parse("10.0.0.1").is_ip_literal
        assert not ServerName.parse("example.com").is_ip_literal
        assert ServerName.parse("example.com").bare_host == "example.com"

    def test_frozen(self) -> None:
        """Server names are immutable values."""
        name = ServerName.parse("example.com")
        with pytest.raises(dataclasses.FrozenInstanceError):
            name.host = "other"  # type: ignore[misc]

    @fast
    @given(server_names)
    def test_round_trip(self, text: str) -> None:
        """parse(str(x)) == x for generated server names."""
        name = ServerName.parse(text)
        assert str(name) == text
        assert ServerName.parse(str(name)) == name


# --------------------------------------------------------------------------------------------
# User IDs


class TestUserID:
    """User ID grammar, current and historical."""

    @pytest.mark.parametrize(
        "text",
        ["@alice:example.com", "@a:b", "@0.9_=-/+x:matrix.org:8448", "@bob:[::1]:8448", "@u:1.2.3.4"],
    )
    def test_valid(self, text: str) -> None:
        """Compliant user IDs parse strictly and round-trip."""
        user = UserID.parse(text)
        assert str(user) == text
        assert not user.is_historical

    def test_parts(self) -> None:
        """The localpart ends at the first ':'; the domain keeps its port."""
        user = UserID.parse("@alice:example.com:8448")
        assert (user.localpart, user.domain) == ("alice", "example.com:8448")
        assert user.server_name == ServerName("example.com", 8448)

    @pytest.mark.parametrize(
        "text",
        [
            "@Alice:example.com",
            "@al ice:example.com",
            "@al*ice:example.com",
            "@alice!:example.com",
            "@élise:example.com",
            "@:example.com",
            "@\x01:example.com",
        ],
    )
    def test_strict_localpart(self, text: str) -> None:
        """Non-compliant localparts are refused for new users but accepted as historical."""
        _raises_invalid(UserID.parse, text)
        user = UserID.parse(text, historical=True)
        assert user.is_historical
        assert str(user) == text

    @pytest.mark.parametrize(
        "text",
        [
            "alice:example.com",
            "#alice:example.com",
            "!alice:example.com",
            "@alice",
            "@alice:",
            "@alice:bad host",
            "@alice:example.com:0",
            "@alice:example.com:65536",
            "@a\x00b:example.com",
            "@a\ud800:example.com",
            "",
            "@",
        ],
    )
    def test_invalid_in_any_grammar(self, text: str) -> None:
        """Wrong sigils, missing or bad domains, NUL and surrogates are refused even historically."""
        _raises_invalid(UserID.parse, text)
        _raises_invalid(UserID.parse, text, historical=True)

    def test_length_limit(self) -> None:
        """255 bytes is the maximum, counted in UTF-8 bytes and including sigil and domain."""
        domain = "example.com"
        longest = "@" + "a" * (255 - 1 - 1 - len(domain)) + ":" + domain
        assert len(longest) == 255
        assert str(UserID.parse(longest)) == longest
        _raises_invalid(UserID.parse, "@a" + longest[1:])
        # 'é' is 2 bytes: 122 of them are 244 bytes, plus 13 = 257 bytes but only 135 characters.
        _raises_invalid(UserID.parse, "@" + "é" * 122 + ":" + domain, historical=True)

    @pytest.mark.parametrize("value", NON_STRINGS)
    def test_non_string(self, value: Any) -> None:
        """Non-strings are InvalidIdentifierError."""
        _raises_invalid(UserID.parse, value)
        _raises_invalid(UserID.parse, value, historical=True)

    def test_constructor_validates(self) -> None:
        """UserID(...) applies the historical grammar and checks the domain."""
        assert str(UserID("alice", "example.com")) == "@alice:example.com"
        _raises_invalid(UserID, "a:b", "example.com")
        _raises_invalid(UserID, "alice", "bad domain")
        _raises_invalid(UserID, 1, "example.com")

    def test_localpart_helper(self) -> None:
        """is_valid_user_localpart applies the current grammar."""
        assert is_valid_user_localpart("alice.b_c=d-e/f+g9")
        for bad in ("", "Alice", "a:b", "a b", "ä", None, 5):
            assert not is_valid_user_localpart(bad)

    @fast
    @given(strict_localparts, server_names)
    def test_round_trip_strict(self, localpart: str, domain: str) -> None:
        """parse(str(x)) == x for generated compliant user IDs."""
        text = f"@{localpart}:{domain}"
        if _fits(text):
            user = UserID.parse(text)
            assert UserID.parse(str(user)) == user
            assert str(user) == text
        else:
            _raises_invalid(UserID.parse, text)

    @fast
    @given(historical_localparts, server_names)
    def test_round_trip_historical(self, localpart: str, domain: str) -> None:
        """parse(str(x), historical=True) == x for generated historical user IDs."""
        text = f"@{localpart}:{domain}"
        if _fits(text):
            user = UserID.parse(text, historical=True)
            assert user == UserID(localpart, domain)
            assert str(user) == text
        else:
            _raises_invalid(UserID.parse, text, historical=True)


# --------------------------------------------------------------------------------------------
# Room IDs


class TestRoomID:
    """Room IDs with a domain (v1-v11) and hash room IDs (v12)."""

    @pytest.mark.parametrize(
        "text", ["!abc:example.com", "!AbC123:example.com:8448", "!x:[::1]", "!日\x01:a"]
    )
    def test_domain_form(self, text: str) -> None:
        """Domain room IDs accept any localpart without ':', NUL or surrogates."""
        room = RoomID.parse(text)
        assert room.domain is not None
        assert str(room) == text

    def test_hash_form(self) -> None:
        """Room version 12 room IDs are '!' + a 43-character URL-safe hash, with no domain."""
        room = RoomID.parse("!" + HASH_URL_ONLY)
        assert room == RoomID(HASH_URL_ONLY)
        assert room.domain is None
        assert str(room) == "!" + HASH_URL_ONLY

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "!",
            "abc:example.com",
            "$abc:example.com",
            "!:example.com",
            "!abc:",
            "!abc:bad host",
            "!a\x00b:example.com",
            "!abc",
            "!" + HASH_URL[:-1],
            "!" + HASH_URL + "A",
            "!" + HASH_STD_ONLY,
            "!" + "a" * 250 + ":example.com",
        ],
    )
    def test_invalid(self, text: str) -> None:
        """Bad sigils, empty parts, bad domains, bad hashes and over-long IDs are refused."""
        _raises_invalid(RoomID.parse, text)

    @pytest.mark.parametrize("value", NON_STRINGS)
    def test_non_string(self, value: Any) -> None:
        """Non-strings are InvalidIdentifierError."""
        _raises_invalid(RoomID.parse, value)

    def test_room_version_form(self) -> None:
        """With a room version, the form must match it."""
        RoomID.parse("!abc:example.com", room_version=RoomVersions.V11)
        RoomID.parse("!" + HASH_URL, room_version=RoomVersions.V12)
        _raises_invalid(RoomID.parse, "!abc:example.com", room_version=RoomVersions.V12)
        _raises_invalid(RoomID.parse, "!" + HASH_URL, room_version=RoomVersions.V1)

    def test_constructor_validates(self) -> None:
        """RoomID(...) checks the opaque part and the domain."""
        _raises_invalid(RoomID, "short")
        _raises_invalid(RoomID, "a:b", "example.com")
        _raises_invalid(RoomID, "", "example.com")
        _raises_invalid(RoomID, 5, "example.com")
        _raises_invalid(RoomID, 5)

    @fast
    @given(hashes)
    def test_round_trip_hash(self, opaque: str) -> None:
        """parse(str(x)) == x for generated hash room IDs."""
        room = RoomID(opaque)
        assert RoomID.parse(str(room), room_version=RoomVersions.V12) == room

    @fast
    @given(historical_localparts.filter(bool), server_names)
    def test_round_trip_domain(self, opaque: str, domain: str) -> None:
        """parse(str(x)) == x for generated domain room IDs."""
        text = f"!{opaque}:{domain}"
        if _fits(text):
            assert str(RoomID.parse(text)) == text
        else:
            _raises_invalid(RoomID.parse, text)


# --------------------------------------------------------------------------------------------
# Event IDs


class TestEventID:
    """Event IDs: with a domain (v1-v2), standard base64 (v3), URL-safe base64 (v4+)."""

    def test_forms(self) -> None:
        """Each form parses and round-trips."""
        for text in ("$abc:example.com", "$" + HASH_URL, "$" + HASH_URL_ONLY, "$" + HASH_STD_ONLY):
            assert str(EventID.parse(text)) == text
        event = EventID.parse("$abc:example.com:8448")
        assert (event.opaque_id, event.domain) == ("abc", "example.com:8448")

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "$",
            "abc",
            "!" + HASH_URL,
            "$abc",
            "$" + HASH_URL[:-1],
            "$" + HASH_URL + "x",
            "$" + HASH_URL[:-2] + "+_",
            "$:example.com",
            "$abc:bad host",
            "$a\x00:example.com",
            "$" + "a" * 250 + ":example.com",
        ],
    )
    def test_invalid(self, text: str) -> None:
        """Wrong sigils, wrong hash lengths, mixed alphabets, empty parts and over-long IDs fail."""
        _raises_invalid(EventID.parse, text)

    @pytest.mark.parametrize("value", NON_STRINGS)
    def test_non_string(self, value: Any) -> None:
        """Non-strings are InvalidIdentifierError."""
        _raises_invalid(EventID.parse, value)

    def test_room_version_form(self) -> None:
        """With a room version, the form and the base64 alphabet must match it."""
        EventID.parse("$abc:example.com", room_version=RoomVersions.V2)
        _raises_invalid(EventID.parse, "$" + HASH_URL, room_version=RoomVersions.V1)
        EventID.parse("$" + HASH_STD_ONLY, room_version=RoomVersions.V3)
        _raises_invalid(EventID.parse, "$" + HASH_URL_ONLY, room_version=RoomVersions.V3)
        _raises_invalid(EventID.parse, "$abc:example.com", room_version=RoomVersions.V3)
        for version in ("4", "11", "12"):
            room_version = KNOWN_ROOM_VERSIONS[version]
            EventID.parse("$" + HASH_URL_ONLY, room_version=room_version)
            _raises_invalid(EventID.parse, "$" + HASH_STD_ONLY, room_version=room_version)
        # Hashes that use neither special character fit every hash version.
        for version in ("3", "4", "12"):
            EventID.parse("$" + HASH_URL, room_version=KNOWN_ROOM_VERSIONS[version])

    @fast
    @given(hashes)
    def test_round_trip(self, opaque: str) -> None:
        """parse(str(x)) == x for generated event IDs."""
        event = EventID(opaque)
        assert EventID.parse(str(event), room_version=RoomVersions.V10) == event


# --------------------------------------------------------------------------------------------
# Room aliases


class TestRoomAlias:
    """Room alias grammar."""

    @pytest.mark.parametrize("text", ["#room:example.com", "#Räume und so:example.com:8448", "#a:[::1]"])
    def test_valid(self, text: str) -> None:
        """Any localpart without ':', NUL or surrogates is allowed."""
        assert str(RoomAlias.parse(text)) == text

    def test_parts(self) -> None:
        """The localpart ends at the first ':'."""
        alias = RoomAlias.parse("#room:example.com:8448")
        assert (alias.localpart, alias.domain) == ("room", "example.com:8448")

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "#",
            "room:example.com",
            "@room:example.com",
            "#room",
            "#:example.com",
            "#room:",
            "#room:bad host",
            "#ro\x00om:example.com",
            "#ro\udfffom:example.com",
            "#" + "a" * 243 + ":example.com",
        ],
    )
    def test_invalid(self, text: str) -> None:
        """Wrong sigils, empty parts, bad domains, NUL, surrogates and over-long aliases fail."""
        _raises_invalid(RoomAlias.parse, text)

    def test_length_limit(self) -> None:
        """255 bytes is allowed; 256 is not."""
        text = "#" + "a" * 242 + ":example.com"
        assert len(text) == 255
        assert str(RoomAlias.parse(text)) == text

    @pytest.mark.parametrize("value", NON_STRINGS)
    def test_non_string(self, value: Any) -> None:
        """Non-strings are InvalidIdentifierError."""
        _raises_invalid(RoomAlias.parse, value)

    @fast
    @given(historical_localparts.filter(bool), server_names)
    def test_round_trip(self, localpart: str, domain: str) -> None:
        """parse(str(x)) == x for generated aliases."""
        text = f"#{localpart}:{domain}"
        if _fits(text):
            alias = RoomAlias.parse(text)
            assert alias == RoomAlias(localpart, domain)
            assert str(alias) == text
        else:
            _raises_invalid(RoomAlias.parse, text)


# --------------------------------------------------------------------------------------------
# Device IDs


class TestDeviceID:
    """Device ID validation."""

    @pytest.mark.parametrize(
        "text", ["ABCDEFGHIJ", "a", "dev-1.2_3~", "!#$%&'()*+,-./:;<=>?@[]^_`{|}~", "x" * 255]
    )
    def test_valid(self, text: str) -> None:
        """RFC 6749 scope-token characters are accepted."""
        assert validate_device_id(text) == text
        assert str(DeviceID.parse(text)) == text

    @pytest.mark.parametrize("text", ["", "a b", 'a"b', "a\\b", "ä", "a\x00", "a\n", "x" * 256])
    def test_invalid_strict(self, text: str) -> None:
        """Space, quote, backslash, non-ASCII, controls, empty and over-long IDs are refused."""
        _raises_invalid(validate_device_id, text)
        _raises_invalid(DeviceID.parse, text)

    def test_lenient(self) -> None:
        """strict=False accepts other servers' odd device IDs but not NUL, surrogates or empty."""
        assert validate_device_id("Gerät 1", strict=False) == "Gerät 1"
        for bad in ("", "a\x00", "a\ud800", "x" * 256):
            _raises_invalid(validate_device_id, bad, strict=False)

    @pytest.mark.parametrize("value", NON_STRINGS)
    def test_non_string(self, value: Any) -> None:
        """Non-strings are InvalidIdentifierError."""
        _raises_invalid(validate_device_id, value)
        _raises_invalid(validate_device_id, value, strict=False)
        _raises_invalid(DeviceID, value)
