"""Room upgrades through POST /rooms/{roomId}/upgrade (both databases)."""

from __future__ import annotations

import math
import unittest
from typing import Any

from homeserver.rooms.upgrade import adapt_join_rules, portable_power_levels
from sc_proto.room_versions import RoomVersions
from tests.homeserver.test_directory import DirectoryTestCase, enc
from tests.homeserver.test_rooms_core import V3


class UpgradeTestCase(DirectoryTestCase):
    def upgrade(self, room_id: str, version: Any = "12", token: str | None = None, **extra: Any) -> Any:
        body = {"new_version": version, **extra}
        return self.make_request("POST", f"{V3}/rooms/{room_id}/upgrade", body, access_token=token or self.alice)

    def upgraded(self, room_id: str, version: str = "12", **extra: Any) -> str:
        channel = self.upgrade(room_id, version, **extra)
        self.assertEqual(channel.code, 200, channel.json_body)
        replacement: str = channel.json_body["replacement_room"]
        return replacement

    def state_map(self, room_id: str) -> dict[tuple[str, str], Any]:
        head = self.get_success(self.hs.rooms.creator.get_head(room_id))
        assert head is not None
        return self.get_success(self.hs.rooms.creator.get_state_events(head.state))


class UpgradeTests(UpgradeTestCase):
    def test_upgrade_copies_state_and_tombstones_old_room(self) -> None:
        """The new room has the predecessor, copied state, the upgrader joined; the old room a tombstone."""
        old = self.create_room(
            room_version="10", preset="public_chat", name="Lobby", topic="Talk", room_alias_name="lobby",
            creation_content={"type": "m.space"},
            initial_state=[
                {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
                {"type": "m.room.avatar", "content": {"url": "mxc://test:8448/a"}},
                {"type": "m.room.server_acl", "content": {"allow": ["*"], "deny": [], "allow_ip_literals": False}},
                {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}},
                {"type": "org.example.custom", "content": {"x": 1}},
            ],
        )
        new = self.upgraded(old, "11")
        self.assertNotEqual(new, old)
        state = self.state_map(new)
        create = state[("m.room.create", "")]
        self.assertEqual(create.content["room_version"], "11")
        self.assertEqual(create.content["type"], "m.space")
        self.assertEqual(create.content["predecessor"]["room_id"], old)
        self.assertTrue(create.content["predecessor"]["event_id"].startswith("$"))
        self.assertEqual(state[("m.room.member", "@alice:test:8448")].membership, "join")
        for etype, key, value in (
            ("m.room.name", "name", "Lobby"), ("m.room.topic", "topic", "Talk"),
            ("m.room.join_rules", "join_rule", "public"), ("m.room.history_visibility", "history_visibility", "shared"),
            ("m.room.encryption", "algorithm", "m.megolm.v1.aes-sha2"), ("m.room.avatar", "url", "mxc://test:8448/a"),
            ("m.room.guest_access", "guest_access", "can_join"), ("m.room.canonical_alias", "alias", "#lobby:test:8448"),
        ):
            self.assertEqual(state[(etype, "")].content.get(key), value, etype)
        self.assertIn(("m.room.server_acl", ""), state)
        self.assertNotIn(("org.example.custom", ""), state)
        old_state = self.state_map(old)
        tombstone = old_state[("m.room.tombstone", "")]
        self.assertEqual(tombstone.content["replacement_room"], new)
        self.assertIsInstance(tombstone.content["body"], str)
        self.assertEqual(old_state[("m.room.tombstone", "")].sender, "@alice:test:8448")

    def test_aliases_and_directory_move(self) -> None:
        """Local aliases resolve to the new room; the canonical alias leaves the old room; listing moves."""
        old = self.create_room(room_version="11", visibility="public", room_alias_name="main")
        self.put_alias("#extra:test:8448", old)
        self.state(old, "m.room.canonical_alias", {"alias": "#main:test:8448", "alt_aliases": ["#extra:test:8448"]})
        new = self.upgraded(old)
        for alias in ("#main:test:8448", "#extra:test:8448"):
            self.assertEqual(self.make_request("GET", f"{V3}/directory/room/{enc(alias)}").json_body["room_id"], new)
        self.assertEqual(self.current(new, "m.room.canonical_alias"), {"alias": "#main:test:8448", "alt_aliases": ["#extra:test:8448"]})
        self.assertEqual(self.current(old, "m.room.canonical_alias"), {})
        listed = [r["room_id"] for r in self.make_request("GET", f"{V3}/publicRooms").json_body["chunk"]]
        self.assertEqual(listed, [new])

    def test_old_room_is_restricted(self) -> None:
        """events_default and invite of the old room rise to max(50, users_default + 1)."""
        old = self.create_room(room_version="11", preset="public_chat")
        self.join(old, self.bob)
        self.upgraded(old)
        pl = self.current(old, "m.room.power_levels")
        assert pl is not None
        self.assertEqual((pl["events_default"], pl["invite"]), (50, 50))
        blocked = self.send(old, {"msgtype": "m.text", "body": "still here?"}, self.bob)
        self.assertEqual(blocked.code, 403)

    def test_v12_upgrader_is_creator_not_listed(self) -> None:
        """Upgrading to v12: the upgrader is the creator (infinite power) and absent from users."""
        old = self.create_room(room_version="11", preset="public_chat",
                               power_level_content_override={"users": {"@alice:test:8448": 100, "@bob:test:8448": 50}})
        new = self.upgraded(old, "12", additional_creators=["@bob:test:8448"])
        self.assertFalse(new.endswith(":test:8448"))  # v12 room IDs carry no server name
        state = self.state_map(new)
        create = state[("m.room.create", "")]
        self.assertEqual(create.sender, "@alice:test:8448")
        self.assertEqual(create.content["additional_creators"], ["@bob:test:8448"])
        self.assertNotIn("creator", create.content)
        users = state[("m.room.power_levels", "")].content["users"]
        self.assertNotIn("@alice:test:8448", users)
        self.assertNotIn("@bob:test:8448", users)

    def test_v12_to_v11_gives_upgrader_level_100(self) -> None:
        """A v12 creator (infinite power) upgrading to v11 is listed with 100 in the new room."""
        old = self.create_room(room_version="12")
        new = self.upgraded(old, "11")
        users = self.state_map(new)[("m.room.power_levels", "")].content["users"]
        self.assertEqual(users["@alice:test:8448"], 100)

    def test_low_level_upgrader_power_restored_after_copy(self) -> None:
        """An upgrader below the copied state's levels is raised while copying, then restored."""
        old = self.create_room(
            room_version="10", preset="public_chat",
            power_level_content_override={
                "users": {"@alice:test:8448": 100, "@bob:test:8448": 60},
                "events": {"m.room.tombstone": 60, "m.room.name": 80},
            },
            name="Room",
        )
        self.join(old, self.bob)
        channel = self.upgrade(old, "11", token=self.bob)
        self.assertEqual(channel.code, 200, channel.json_body)
        state = self.state_map(channel.json_body["replacement_room"])
        self.assertEqual(state[("m.room.name", "")].content["name"], "Room")
        self.assertEqual(state[("m.room.power_levels", "")].content["users"]["@bob:test:8448"], 60)

    def test_retry_returns_same_replacement(self) -> None:
        """A retried upgrade (same user and version) returns the room the first one made."""
        old = self.create_room(room_version="11")
        first = self.upgraded(old)
        self.assertEqual(self.upgraded(old), first)

    def test_unauthorised_upgrades(self) -> None:
        """Members without tombstone power and non-members get 403; nothing changes."""
        old = self.create_room(room_version="11", preset="public_chat")
        self.assertEqual(self.upgrade(old, token=self.bob).code, 403)
        self.join(old, self.bob)
        channel = self.upgrade(old, token=self.bob)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertNotIn(("m.room.tombstone", ""), self.state_map(old))
        self.assertEqual(self.make_request("POST", f"{V3}/rooms/{old}/upgrade", {"new_version": "12"}).code, 401)

    def test_bad_versions_and_bodies(self) -> None:
        old = self.create_room(room_version="11")
        for version in ("99", "", "1.0"):
            channel = self.upgrade(old, version)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_UNSUPPORTED_ROOM_VERSION"), version)
        self.assertEqual(self.upgrade(old, 12).code, 400)
        missing = self.make_request("POST", f"{V3}/rooms/{old}/upgrade", {}, access_token=self.alice)
        self.assertEqual((missing.code, missing.json_body["errcode"]), (400, "M_MISSING_PARAM"))
        bad = self.upgrade(old, "12", additional_creators=["not a user"])
        self.assertEqual((bad.code, bad.json_body["errcode"]), (400, "M_INVALID_PARAM"))
        self.assertEqual(self.upgrade("!unknown:test:8448").code, 404)
        self.assertEqual(self.upgrade("bad-id").code, 400)
        self.assertNotIn(("m.room.tombstone", ""), self.state_map(old))


class UpgradeHelperTests(unittest.TestCase):
    def test_portable_power_levels(self) -> None:
        """String and float levels of old versions become integers; junk is dropped."""
        content = {
            "ban": " 50 ", "kick": 50.7, "invite": True, "users_default": "x", "custom": 1,
            "users": {"@a:test:8448": "100", "bad user": 5, "@b:test:8448": math.nan},
            "events": {"m.room.name": "+20"}, "notifications": {"room": 10},
        }
        out = portable_power_levels(content, RoomVersions.V1)
        self.assertEqual(out, {"ban": 50, "kick": 50, "users": {"@a:test:8448": 100},
                               "events": {"m.room.name": 20}, "notifications": {"room": 10}})

    def test_join_rules_adapt_to_version(self) -> None:
        restricted = {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": "!a:test:8448"}]}
        self.assertEqual(adapt_join_rules(restricted, RoomVersions.V8), restricted)
        self.assertEqual(adapt_join_rules(restricted, RoomVersions.V7), {"join_rule": "invite"})
        self.assertEqual(adapt_join_rules({"join_rule": "knock"}, RoomVersions.V6), {"join_rule": "invite"})
        self.assertEqual(adapt_join_rules({"join_rule": "public"}, RoomVersions.V1), {"join_rule": "public"})
