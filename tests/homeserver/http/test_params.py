"""The request-parameter parsers (homeserver.http.params) and the identifier rules under them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from homeserver.http.params import (
    parse_event_id,
    parse_local_path_user_id,
    parse_path_user_id,
    parse_room_alias,
    parse_room_id,
    parse_room_id_or_alias,
    parse_server_name,
    parse_user_id,
)
from homeserver.identity import LocalServer, is_event_id
from homeserver.rest.client.account import localpart_of
from sc_proto.errors import MatrixError
from sc_proto.identifiers import RoomAlias
from sc_proto.room_versions import get_room_version

HASH = "$" + "A" * 43

NAMES = ["test:8448", "localhost:8448", "[::1]:8448", "example.org"]


def _is_400(call: Callable[..., object], *args: object) -> None:
    with pytest.raises(MatrixError) as raised:
        call(*args)
    assert (raised.value.http_status, raised.value.errcode.value) == (400, "M_INVALID_PARAM")


class UserIDTests:
    @pytest.mark.parametrize("name", NAMES)
    def test_local_path_user_is_ours_with_ports_and_ipv6(self, name: str) -> None:
        """``@bob:<name>`` is ours; the same localpart at the name's host or port alone is not."""
        local = LocalServer(name)
        assert str(parse_local_path_user_id(f"@bob:{name}", local)) == f"@bob:{name}"
        _is_400(parse_local_path_user_id, "@bob:other.org", local)
        _is_400(parse_local_path_user_id, "@bob:8448", local)

    def test_malformed_user_ids(self) -> None:
        """No sigil, no domain or a bad port is a 400."""
        for bad in ("bob", "@bob", "@bob:host:99999", "", 5):
            _is_400(parse_user_id, bad)
        _is_400(parse_path_user_id, "@bob")

    @pytest.mark.parametrize("name", NAMES)
    def test_qualify_and_localpart(self, name: str) -> None:
        """A bare localpart is qualified with the whole name; the localpart comes back whole."""
        local = LocalServer(name)
        assert local.qualify("alice") == f"@alice:{name}"
        assert local.qualify("@alice:other.org") == "@alice:other.org"
        assert localpart_of(f"@alice:{name}") == "alice"
        assert local.local_user("alice").domain == name


class RoomAndServerTests:
    def test_room_ids_aliases_and_either(self) -> None:
        """Room IDs of both forms, aliases by sigil; anything else 400."""
        assert parse_room_id("!abc:[::1]:8448") == "!abc:[::1]:8448"
        assert parse_room_alias("#hall:localhost:8448").domain == "localhost:8448"
        assert isinstance(parse_room_id_or_alias("#hall:test:8448"), RoomAlias)
        assert str(parse_room_id_or_alias("!abc:test:8448")) == "!abc:test:8448"
        for bad in ("hall", "#hall", "!", "@bob:test"):
            _is_400(parse_room_id_or_alias, bad)

    def test_server_names(self) -> None:
        """Ports and IPv6 literals are server names; a bare port or unterminated literal is not."""
        assert str(parse_server_name("[::1]:8448")) == "[::1]:8448"
        assert str(parse_server_name("localhost:8448")) == "localhost:8448"
        for bad in ("[::1", "host:", "", "a b"):
            _is_400(parse_server_name, bad)


class EventIDTests:
    def test_one_rule_without_a_room_version(self) -> None:
        """Without a room version an event ID is opaque: ``$`` and at most 255 bytes."""
        assert is_event_id("$unknown") and is_event_id(HASH) and is_event_id("$abc:test:8448")
        assert not is_event_id("$") and not is_event_id("abc") and not is_event_id(None)
        assert not is_event_id("$" + "é" * 128)  # 257 bytes, though only 129 characters
        _is_400(parse_event_id, "nope")

    def test_room_version_form(self) -> None:
        """With the room's version the form is that version's: v1 needs a domain, v4+ a URL-safe hash."""
        v1, v10 = get_room_version("1"), get_room_version("10")
        assert is_event_id("$abc:test:8448", v1) and not is_event_id(HASH, v1)
        assert is_event_id(HASH, v10) and not is_event_id("$abc:test:8448", v10)
        _is_400(parse_event_id, "$unknown", "event_id", v10)
