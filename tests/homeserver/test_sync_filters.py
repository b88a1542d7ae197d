"""Sync filter parsing and matching, ``event_fields``, and the source registry (pure unit tests)."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.sync.filters import (
    DEFAULT_TIMELINE_LIMIT,
    MAX_TIMELINE_LIMIT,
    EventFilter,
    RoomEventFilter,
    SyncFilter,
    apply_event_fields,
    parse_sync_filter,
    type_matches,
)
from homeserver.sync.sources.registry import SyncContext, SyncResult, SyncSourceRegistry
from sc_proto.errors import MatrixError


class ParseTests:
    def test_empty_filter_defaults(self) -> None:
        """An empty filter includes everything with the default timeline limit."""
        flt = parse_sync_filter({})
        assert flt == SyncFilter()
        assert flt.timeline_limit == DEFAULT_TIMELINE_LIMIT
        assert flt.room_allowed("!a:x")
        assert not flt.include_leave

    def test_full_filter(self) -> None:
        body = {
            "event_fields": ["type"],
            "event_format": "federation",
            "account_data": {"types": ["m.*"], "limit": 3},
            "presence": {"not_senders": ["@a:x"]},
            "room": {
                "rooms": ["!a:x"], "not_rooms": ["!b:x"], "include_leave": True,
                "timeline": {"limit": 5, "types": ["m.room.message"], "contains_url": True},
                "state": {"lazy_load_members": True, "include_redundant_members": True},
                "ephemeral": {"types": []},
                "account_data": {"not_types": ["m.tag"]},
                "unknown_key": {"is": "ignored"},
            },
            "future_key": 1,
        }
        flt = parse_sync_filter(body)
        assert flt.event_fields == ("type",)
        assert flt.event_format == "federation"
        assert flt.account_data == EventFilter(limit=3, types=("m.*",))
        assert flt.rooms == ("!a:x",) and flt.not_rooms == ("!b:x",) and flt.include_leave
        assert flt.timeline_limit == 5
        assert flt.timeline.contains_url is True
        assert flt.state.lazy_load_members and flt.state.include_redundant_members
        assert flt.ephemeral.types == ()
        assert flt.room_account_data.not_types == ("m.tag",)

    def test_nulls_are_absent(self) -> None:
        flt = parse_sync_filter({"room": {"timeline": {"limit": None, "types": None}}, "event_fields": None})
        assert flt == SyncFilter()

    def test_limit_is_capped(self) -> None:
        assert parse_sync_filter({"room": {"timeline": {"limit": 10**9}}}).timeline_limit == MAX_TIMELINE_LIMIT
        assert parse_sync_filter({"room": {"timeline": {"limit": 0}}}).timeline_limit == 0

    @pytest.mark.parametrize(
        "body",
        [
            [],
            "filter",
            {"room": []},
            {"room": {"timeline": []}},
            {"room": {"timeline": {"limit": -1}}},
            {"room": {"timeline": {"limit": "5"}}},
            {"room": {"timeline": {"limit": True}}},
            {"room": {"timeline": {"limit": 1.5}}},
            {"room": {"timeline": {"types": "m.room.message"}}},
            {"room": {"timeline": {"types": [1]}}},
            {"room": {"rooms": [None]}},
            {"room": {"include_leave": "yes"}},
            {"room": {"state": {"lazy_load_members": 1}}},
            {"event_format": "raw"},
            {"event_fields": "type"},
            {"account_data": {"senders": {}}},
        ],
    )
    def test_bad_filters(self, body: Any) -> None:
        """Wrong JSON types are 400 M_BAD_JSON naming the field; nothing else escapes."""
        with pytest.raises(MatrixError) as info:
            parse_sync_filter(body)
        assert info.value.http_status == 400
        assert info.value.errcode == "M_BAD_JSON"


class MatchTests:
    def test_type_wildcards(self) -> None:
        assert type_matches("m.room.message", ["m.room.*"])
        assert type_matches("m.room.message", ["*"])
        assert type_matches("m.room.message", ["m.*.message"])
        assert not type_matches("m.room.message", ["m.room"])
        assert not type_matches("m.room.message", ["m.room.messag"])
        assert type_matches("a.b[c]", ["a.b[c]"])  # no other glob syntax
        assert not type_matches("a.bc", ["a.b?"])

    def test_not_lists_win(self) -> None:
        flt = EventFilter(types=("m.*",), not_types=("m.room.member",), senders=("@a:x",), not_senders=("@a:x",))
        assert not flt.matches("m.room.message", "@a:x")
        assert EventFilter(types=("m.*",), not_types=("m.room.member",)).matches("m.room.message", "@b:x")
        assert not EventFilter(types=("m.*",), not_types=("m.room.member",)).matches("m.room.member", "@b:x")

    def test_empty_inclusive_list_includes_nothing(self) -> None:
        assert not EventFilter(types=()).matches("m.room.message", None)
        assert not EventFilter(senders=()).matches("m.room.message", "@a:x")
        assert EventFilter(senders=()).matches("m.room.message", None)  # sender not checked

    def test_room_event_filter(self) -> None:
        flt = RoomEventFilter(rooms=("!a:x",), not_rooms=("!b:x",), contains_url=True)
        assert flt.matches_event("!a:x", "m.room.message", "@u:x", {"url": "mxc://x/y"})
        assert not flt.matches_event("!a:x", "m.room.message", "@u:x", {"body": "no url"})
        assert not flt.matches_event("!b:x", "m.room.message", "@u:x", {"url": "mxc://x/y"})
        assert not flt.matches_event("!c:x", "m.room.message", "@u:x", {"url": "mxc://x/y"})
        no_url = RoomEventFilter(contains_url=False)
        assert no_url.matches_event("!c:x", "t", "@u:x", {"url": 5})  # a non-string url is no url
        assert not no_url.matches_event("!c:x", "t", "@u:x", {"url": "mxc://x/y"})

    def test_sync_filter_rooms(self) -> None:
        flt = SyncFilter(rooms=("!a:x", "!b:x"), not_rooms=("!b:x",))
        assert flt.room_allowed("!a:x")
        assert not flt.room_allowed("!b:x")
        assert not flt.room_allowed("!c:x")


class EventFieldsTests:
    EVENT: dict[str, Any] = {
        "type": "m.room.message",
        "content": {"body": "hi", "msgtype": "m.text", "m.relates_to": {"rel_type": "x"}},
        "sender": "@a:x",
        "unsigned": {"age": 5},
    }

    def test_selects_paths(self) -> None:
        out = apply_event_fields(self.EVENT, ["type", "content.body", "unsigned"])
        assert out == {"type": "m.room.message", "content": {"body": "hi"}, "unsigned": {"age": 5}}

    def test_escaped_dots_and_missing_paths(self) -> None:
        out = apply_event_fields(self.EVENT, ["content.m\\.relates_to.rel_type", "content.nope", "nope.deeper"])
        assert out == {"content": {"m.relates_to": {"rel_type": "x"}}}

    def test_path_through_non_object(self) -> None:
        assert apply_event_fields(self.EVENT, ["type.length"]) == {}


class _Source:
    def __init__(self, name: str) -> None:
        self.name = name

    async def current_position(self) -> int:
        return 0

    async def fill_initial(self, ctx: SyncContext, result: SyncResult, to_position: int) -> None:
        return None

    async def fill_incremental(self, ctx: SyncContext, result: SyncResult, from_position: int, to_position: int) -> None:
        return None


class RegistryTests:
    def test_order_and_names(self) -> None:
        registry = SyncSourceRegistry()
        registry.register(_Source("e"))
        registry.register(_Source("ad"))
        assert [s.name for s in registry] == ["e", "ad"]
        assert registry.names() == frozenset({"e", "ad"})
        assert len(registry) == 2

    @pytest.mark.parametrize("name", ["", "E", "a1", "a_b", "é"])
    def test_bad_names(self, name: str) -> None:
        with pytest.raises(ValueError):
            SyncSourceRegistry().register(_Source(name))

    def test_duplicate_name(self) -> None:
        registry = SyncSourceRegistry()
        registry.register(_Source("e"))
        with pytest.raises(ValueError):
            registry.register(_Source("e"))

    def test_result_emptiness_and_json(self) -> None:
        result = SyncResult()
        assert result.is_empty()
        result.joined_room_ids.add("!a:x")
        assert result.is_empty()  # being in a room is not news
        result.joined_room("!a:x")["account_data"]["events"].append({"type": "t", "content": {}})
        assert not result.is_empty()
        body = result.to_json("sc1_e1")
        assert body["next_batch"] == "sc1_e1"
        assert body["rooms"]["join"]["!a:x"]["timeline"] == {"events": [], "limited": False}
