"""``GET /sync``: response shape, initial and incremental timelines, state, membership sections,
filters, tokens and bad input (both databases)."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from homeserver.streams.tokens import RoomPosition, StreamToken
from homeserver.sync.filters import SyncFilter
from homeserver.sync.sources.registry import SyncContext, SyncResult
from tests.homeserver.test_rooms_core import V3, RoomsTestCase


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


class SyncTestCase(RoomsTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.register_user("carol")
        self.carol = self.login("carol")["access_token"]
        self._txn = 0

    def sync_channel(self, token: str, *, await_result: bool = True, **params: Any) -> Any:
        query = urllib.parse.urlencode(
            {k: (json.dumps(v) if isinstance(v, dict) else str(v).lower() if isinstance(v, bool) else v)
             for k, v in params.items() if v is not None}
        )
        path = f"{V3}/sync" + (f"?{query}" if query else "")
        return self.make_request("GET", path, access_token=token, await_result=await_result)

    def sync(self, token: str, **params: Any) -> dict[str, Any]:
        channel = self.sync_channel(token, **params)
        self.assertEqual(channel.code, 200, channel.json_body)
        body: dict[str, Any] = channel.json_body
        return body

    def say(self, room_id: str, token: str, body: str = "hello") -> str:
        self._txn += 1
        channel = self.send(room_id, {"msgtype": "m.text", "body": body}, token, txn=f"s{self._txn}")
        self.assertEqual(channel.code, 200, channel.json_body)
        event_id: str = channel.json_body["event_id"]
        return event_id

    def join(self, room_id: str, token: str) -> None:
        channel = self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=token)
        self.assertEqual(channel.code, 200, channel.json_body)

    def post(self, room_id: str, action: str, token: str, body: dict[str, Any] | None = None) -> None:
        channel = self.make_request("POST", f"{V3}/rooms/{room_id}/{action}", body or {}, access_token=token)
        self.assertEqual(channel.code, 200, channel.json_body)

    def state(self, room_id: str, token: str, etype: str, content: dict[str, Any], skey: str = "") -> str:
        channel = self.make_request(
            "PUT", f"{V3}/rooms/{room_id}/state/{etype}/{skey}", content, access_token=token
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        event_id: str = channel.json_body["event_id"]
        return event_id


class InitialSyncTests(SyncTestCase):
    def test_response_shape(self) -> None:
        """An initial sync has every section clients parse, and a token with events and account data."""
        room_id = self.create_room(name="Lobby")
        body = self.sync(self.alice)
        for key in ("rooms", "account_data", "presence", "to_device", "device_lists", "device_one_time_keys_count"):
            self.assertIn(key, body)
        self.assertEqual(set(body["rooms"]), {"join", "invite", "leave", "knock"})
        self.assertEqual(body["device_lists"], {"changed": [], "left": []})
        token = StreamToken.decode(body["next_batch"], StreamToken())
        self.assertIn("e", token.positions)
        self.assertIn("ad", token.positions)
        room = body["rooms"]["join"][room_id]
        for key in ("timeline", "state", "account_data", "ephemeral", "summary", "unread_notifications"):
            self.assertIn(key, room)
        self.assertEqual(room["ephemeral"], {"events": []})
        self.assertEqual(room["summary"]["m.joined_member_count"], 1)
        self.assertEqual(room["summary"]["m.invited_member_count"], 0)
        for event in room["timeline"]["events"]:
            self.assertNotIn("room_id", event)
            self.assertIn("event_id", event)
        RoomPosition.decode(room["timeline"]["prev_batch"])

    def test_matrix_nio_parses_responses(self) -> None:
        """matrix-nio's own parser accepts initial, incremental, invite and leave responses."""
        from nio.responses import SyncResponse

        room_id = self.create_room(preset="public_chat", room_version="11", name="N")
        other = self.create_room(room_version="11")
        self.join(room_id, self.bob)
        self.say(room_id, self.alice, "hello")
        initial = self.sync(self.bob)
        self.post(other, "invite", self.alice, {"user_id": "@bob:test:8448"})
        self.post(room_id, "leave", self.bob)
        incremental = self.sync(self.bob, since=initial["next_batch"])
        self.assertIn(other, incremental["rooms"]["invite"])
        self.assertIn(room_id, incremental["rooms"]["leave"])
        for body in (initial, incremental):
            parsed = SyncResponse.from_dict(body)
            self.assertIsInstance(parsed, SyncResponse, getattr(parsed, "message", None))
        parsed = SyncResponse.from_dict(initial)
        assert isinstance(parsed, SyncResponse)
        self.assertIn("hello", [getattr(e, "body", None) for e in parsed.rooms.join[room_id].timeline.events])

    def test_federation_event_format(self) -> None:
        """event_format federation returns the stored PDUs."""
        room_id = self.create_room()
        self.say(room_id, self.alice, "pdu")
        events = self.sync(self.alice, filter={"event_format": "federation"})["rooms"]["join"][room_id]["timeline"]["events"]
        self.assertIn("auth_events", events[-1])
        self.assertIn("hashes", events[-1])

    def test_small_room_state_is_in_timeline(self) -> None:
        """A new room whose events fit the timeline: state is empty, the timeline starts at the create."""
        room_id = self.create_room()
        room = self.sync(self.alice)["rooms"]["join"][room_id]
        self.assertEqual(room["state"]["events"], [])
        self.assertEqual(room["timeline"]["events"][0]["type"], "m.room.create")
        self.assertFalse(room["timeline"]["limited"])

    def test_limited_timeline_and_state_at_start(self) -> None:
        """The last N events; limited; state is the state before the first timeline event and excludes
        state events in the timeline."""
        room_id = self.create_room(preset="public_chat")
        old_topic = self.state(room_id, self.alice, "m.room.topic", {"topic": "old"})
        for i in range(5):
            self.say(room_id, self.alice, f"m{i}")
        new_topic = self.state(room_id, self.alice, "m.room.topic", {"topic": "new"})
        self.say(room_id, self.alice, "last")
        room = self.sync(self.alice, filter={"room": {"timeline": {"limit": 3}}})["rooms"]["join"][room_id]
        timeline = room["timeline"]
        self.assertTrue(timeline["limited"])
        self.assertEqual(len(timeline["events"]), 3)
        self.assertEqual(timeline["events"][-1]["content"]["body"], "last")
        self.assertIn(new_topic, [e["event_id"] for e in timeline["events"]])
        state_ids = {e["event_id"] for e in room["state"]["events"]}
        self.assertIn(old_topic, state_ids)
        self.assertNotIn(new_topic, state_ids)
        self.assertIn("m.room.create", _types(room["state"]["events"]))
        self.assertIn("m.room.member", _types(room["state"]["events"]))

    def test_prev_batch_continues_with_messages(self) -> None:
        """prev_batch is a RoomPosition; /messages backwards from it returns the events just before."""
        room_id = self.create_room()
        sent = [self.say(room_id, self.alice, f"m{i}") for i in range(6)]
        room = self.sync(self.alice, filter={"room": {"timeline": {"limit": 2}}})["rooms"]["join"][room_id]
        self.assertEqual([e["event_id"] for e in room["timeline"]["events"]], sent[-2:])
        prev_batch = room["timeline"]["prev_batch"]
        RoomPosition.decode(prev_batch)
        channel = self.make_request(
            "GET", f"{V3}/rooms/{room_id}/messages?dir=b&limit=2&from={prev_batch}", access_token=self.alice
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual([e["event_id"] for e in channel.json_body["chunk"]], [sent[-3], sent[-4]])

    def test_history_visibility_joined_hides_earlier_events(self) -> None:
        """Events sent while history_visibility is joined, before the newcomer joined, are hidden."""
        room_id = self.create_room(preset="public_chat")
        self.state(room_id, self.alice, "m.room.history_visibility", {"history_visibility": "joined"})
        secret = self.say(room_id, self.alice, "before bob")
        self.join(room_id, self.bob)
        after = self.say(room_id, self.alice, "after bob")
        room = self.sync(self.bob)["rooms"]["join"][room_id]
        ids = [e["event_id"] for e in room["timeline"]["events"]]
        self.assertNotIn(secret, ids)
        self.assertIn(after, ids)
        self.assertIn("@bob:test:8448", [e.get("state_key") for e in room["timeline"]["events"]])

    def test_shared_history_visible_to_newcomer(self) -> None:
        """With history_visibility shared (the preset), events before the join are visible."""
        room_id = self.create_room(preset="public_chat")
        early = self.say(room_id, self.alice, "early")
        self.join(room_id, self.bob)
        ids = [e["event_id"] for e in self.sync(self.bob)["rooms"]["join"][room_id]["timeline"]["events"]]
        self.assertIn(early, ids)

    def test_summary_heroes_and_counts(self) -> None:
        """Heroes exclude the user; joined and invited counts come from current state."""
        room_id = self.create_room(preset="public_chat")
        self.join(room_id, self.bob)
        self.post(room_id, "invite", self.alice, {"user_id": "@carol:test:8448"})
        summary = self.sync(self.alice)["rooms"]["join"][room_id]["summary"]
        self.assertEqual(summary["m.joined_member_count"], 2)
        self.assertEqual(summary["m.invited_member_count"], 1)
        self.assertEqual(summary["m.heroes"], ["@bob:test:8448", "@carol:test:8448"])

    def test_full_state_on_initial_sync_ignores_timeout(self) -> None:
        """An initial sync answers at once even with a timeout."""
        self.create_room()
        channel = self.sync_channel(self.alice, timeout=30000)
        self.assertEqual(channel.code, 200)


class IncrementalSyncTests(SyncTestCase):
    def test_only_new_events(self) -> None:
        """An incremental sync returns only events after since; unchanged rooms are absent."""
        room_a = self.create_room()
        room_b = self.create_room()
        token = self.sync(self.alice)["next_batch"]
        new = self.say(room_a, self.alice, "new")
        body = self.sync(self.alice, since=token)
        self.assertEqual(set(body["rooms"]["join"]), {room_a})
        timeline = body["rooms"]["join"][room_a]["timeline"]
        self.assertEqual([e["event_id"] for e in timeline["events"]], [new])
        self.assertFalse(timeline["limited"])
        self.assertEqual(body["rooms"]["join"][room_a]["state"]["events"], [])
        self.assertNotIn(room_b, body["rooms"]["join"])
        again = self.sync(self.alice, since=body["next_batch"])
        self.assertEqual(again["rooms"]["join"], {})
        self.assertEqual(again["next_batch"], body["next_batch"])

    def test_gappy_timeline(self) -> None:
        """More new events than the limit: limited, state delta over the gap, and /messages from
        prev_batch to since returns exactly the gap."""
        room_id = self.create_room(preset="public_chat")
        token = self.sync(self.alice)["next_batch"]
        topic = self.state(room_id, self.alice, "m.room.topic", {"topic": "during the gap"})
        gap = [self.say(room_id, self.alice, f"g{i}") for i in range(4)]
        shown = [self.say(room_id, self.alice, f"s{i}") for i in range(3)]
        room = self.sync(self.alice, since=token, filter={"room": {"timeline": {"limit": 3}}})["rooms"]["join"][room_id]
        self.assertTrue(room["timeline"]["limited"])
        self.assertEqual([e["event_id"] for e in room["timeline"]["events"]], shown)
        self.assertEqual([e["event_id"] for e in room["state"]["events"]], [topic])
        prev_batch = room["timeline"]["prev_batch"]
        channel = self.make_request(
            "GET", f"{V3}/rooms/{room_id}/messages?dir=b&limit=50&from={prev_batch}&to={token}",
            access_token=self.alice,
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual([e["event_id"] for e in channel.json_body["chunk"]], [*reversed(gap), topic])

    def test_full_state_incremental(self) -> None:
        """full_state=true sends every joined room with its full state, timeline still from since."""
        room_id = self.create_room(name="Full")
        token = self.sync(self.alice)["next_batch"]
        body = self.sync(self.alice, since=token, full_state=True)
        room = body["rooms"]["join"][room_id]
        self.assertEqual(room["timeline"]["events"], [])
        types = _types(room["state"]["events"])
        for t in ("m.room.create", "m.room.member", "m.room.power_levels", "m.room.name"):
            self.assertIn(t, types)

    def test_newly_joined_room_gets_full_state(self) -> None:
        """A room joined since the token arrives in join with the state before the join."""
        room_id = self.create_room(preset="public_chat", name="Hall")
        for i in range(3):
            self.say(room_id, self.alice, f"m{i}")
        token = self.sync(self.bob)["next_batch"]
        self.join(room_id, self.bob)
        room = self.sync(self.bob, since=token)["rooms"]["join"][room_id]
        types = _types(room["state"]["events"])
        for t in ("m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.name"):
            self.assertIn(t, types)
        self.assertEqual(room["timeline"]["events"][-1]["state_key"], "@bob:test:8448")

    def test_invite_with_stripped_state(self) -> None:
        """An invite appears in rooms.invite with stripped state: create, join rules, name, the invite."""
        room_id = self.create_room(name="Secret", room_alias_name="secret")
        token = self.sync(self.bob)["next_batch"]
        self.post(room_id, "invite", self.alice, {"user_id": "@bob:test:8448"})
        body = self.sync(self.bob, since=token)
        self.assertNotIn(room_id, body["rooms"]["join"])
        events = body["rooms"]["invite"][room_id]["invite_state"]["events"]
        by_type = {e["type"]: e for e in events}
        for t in ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.canonical_alias", "m.room.member"):
            self.assertIn(t, by_type)
        for event in events:
            self.assertLessEqual(set(event), {"type", "state_key", "content", "sender"})
        invite = [e for e in events if e["type"] == "m.room.member" and e["state_key"] == "@bob:test:8448"]
        self.assertEqual(invite[0]["content"]["membership"], "invite")
        self.assertNotIn("m.room.power_levels", by_type)
        # The invite is in an initial sync too, and gone once accepted.
        self.assertIn(room_id, self.sync(self.bob)["rooms"]["invite"])
        next_token = body["next_batch"]
        self.join(room_id, self.bob)
        after = self.sync(self.bob, since=next_token)
        self.assertNotIn(room_id, after["rooms"]["invite"])
        self.assertIn(room_id, after["rooms"]["join"])

    def test_knock_with_stripped_state(self) -> None:
        """A knock appears in rooms.knock with knock_state."""
        room_id = self.create_room(room_version="10", initial_state=[
            {"type": "m.room.join_rules", "content": {"join_rule": "knock"}}])
        channel = self.make_request("POST", f"{V3}/knock/{room_id}", {}, access_token=self.bob)
        self.assertEqual(channel.code, 200, channel.json_body)
        events = self.sync(self.bob)["rooms"]["knock"][room_id]["knock_state"]["events"]
        self.assertEqual(events[-1]["content"]["membership"], "knock")
        self.assertIn("m.room.join_rules", _types(events))


class PositionTests(SyncTestCase):
    def test_membership_written_after_to_is_rewound(self) -> None:
        """A membership committed after the sync's end position does not count yet (racing commits)."""
        room_id = self.create_room()
        self.post(room_id, "invite", self.alice, {"user_id": "@bob:test:8448"})
        to = self.hs.rooms.stream_tracker.current()
        self.join(room_id, self.bob)
        result = SyncResult()
        ctx = SyncContext("@bob:test:8448", None, SyncFilter())
        self.get_success(self.hs.sync.room_events.fill_initial(ctx, result, to))
        self.assertEqual(set(result.invite), {room_id})
        self.assertEqual(result.join, {})
        self.assertEqual(result.joined_room_ids, set())

    def test_timeline_ends_at_to(self) -> None:
        """Events after the end position are left for the next sync."""
        room_id = self.create_room()
        first = self.say(room_id, self.alice, "in")
        to = self.hs.rooms.stream_tracker.current()
        self.say(room_id, self.alice, "later")
        result = SyncResult()
        ctx = SyncContext("@alice:test:8448", None, SyncFilter())
        self.get_success(self.hs.sync.room_events.fill_initial(ctx, result, to))
        self.assertEqual(result.join[room_id]["timeline"]["events"][-1]["event_id"], first)


class LeaveSectionTests(SyncTestCase):
    def setup_room(self) -> tuple[str, str]:
        room_id = self.create_room(preset="public_chat")
        self.join(room_id, self.bob)
        token = self.sync(self.bob)["next_batch"]
        return room_id, token

    def test_kick_moves_room_to_leave(self) -> None:
        """A kick since the token: the room is in leave with the timeline up to the kick, not in join."""
        room_id, token = self.setup_room()
        before = self.say(room_id, self.alice, "before kick")
        self.post(room_id, "kick", self.alice, {"user_id": "@bob:test:8448"})
        after = self.say(room_id, self.alice, "after kick")
        body = self.sync(self.bob, since=token)
        self.assertNotIn(room_id, body["rooms"]["join"])
        timeline = body["rooms"]["leave"][room_id]["timeline"]["events"]
        ids = [e["event_id"] for e in timeline]
        self.assertIn(before, ids)
        self.assertNotIn(after, ids)
        self.assertEqual(timeline[-1]["content"]["membership"], "leave")
        self.assertEqual(timeline[-1]["sender"], "@alice:test:8448")

    def test_ban_and_leave(self) -> None:
        """A ban and a voluntary leave both put the room in leave."""
        room_id, token = self.setup_room()
        self.post(room_id, "ban", self.alice, {"user_id": "@bob:test:8448"})
        timeline = self.sync(self.bob, since=token)["rooms"]["leave"][room_id]["timeline"]["events"]
        self.assertEqual(timeline[-1]["content"]["membership"], "ban")
        room2, token2 = self.setup_room()
        self.post(room2, "leave", self.bob)
        body = self.sync(self.bob, since=token2)
        self.assertEqual(body["rooms"]["leave"][room2]["timeline"]["events"][-1]["content"]["membership"], "leave")
        self.assertNotIn(room2, body["rooms"]["join"])

    def test_rejected_invite_shows_no_hidden_history(self) -> None:
        """Rejecting an invite moves the room to leave without revealing events the user never could see."""
        room_id = self.create_room()
        self.state(room_id, self.alice, "m.room.history_visibility", {"history_visibility": "joined"})
        self.post(room_id, "invite", self.alice, {"user_id": "@bob:test:8448"})
        token = self.sync(self.bob)["next_batch"]
        secret = self.say(room_id, self.alice, "secret")
        self.post(room_id, "leave", self.bob)
        body = self.sync(self.bob, since=token)
        self.assertNotIn(room_id, body["rooms"]["invite"])
        room = body["rooms"]["leave"][room_id]
        self.assertNotIn(secret, [e["event_id"] for e in room["timeline"]["events"]])
        self.assertEqual(room["state"]["events"], [])
        self.assertNotIn("secret", json.dumps(body))

    def test_include_leave_on_initial_sync(self) -> None:
        """Left rooms appear in an initial sync only with include_leave, and not once forgotten."""
        room_id = self.create_room(preset="public_chat")
        self.join(room_id, self.bob)
        self.post(room_id, "leave", self.bob)
        self.assertNotIn(room_id, self.sync(self.bob)["rooms"]["leave"])
        body = self.sync(self.bob, filter={"room": {"include_leave": True}})
        room = body["rooms"]["leave"][room_id]
        self.assertEqual(room["timeline"]["events"][-1]["content"]["membership"], "leave")
        self.assertIn("account_data", room)
        self.post(room_id, "forget", self.bob)
        self.assertNotIn(room_id, self.sync(self.bob, filter={"room": {"include_leave": True}})["rooms"]["leave"])


class FilterTests(SyncTestCase):
    def test_stored_filter(self) -> None:
        """A stored filter ID applies like the inline filter."""
        room_id = self.create_room()
        for i in range(4):
            self.say(room_id, self.alice, f"m{i}")
        channel = self.make_request(
            "POST", f"{V3}/user/@alice:test:8448/filter", {"room": {"timeline": {"limit": 2}}}, access_token=self.alice
        )
        filter_id = channel.json_body["filter_id"]
        room = self.sync(self.alice, filter=filter_id)["rooms"]["join"][room_id]
        self.assertEqual(len(room["timeline"]["events"]), 2)
        self.assertTrue(room["timeline"]["limited"])

    def test_types_and_not_types(self) -> None:
        """Timeline types and not_types select events (with * wildcards); state types filter state."""
        room_id = self.create_room()
        self.say(room_id, self.alice, "m")
        only_messages = self.sync(self.alice, filter={"room": {"timeline": {"types": ["m.room.mess*"]}}})
        self.assertEqual(_types(only_messages["rooms"]["join"][room_id]["timeline"]["events"]), ["m.room.message"])
        no_members = self.sync(self.alice, filter={"room": {"timeline": {"not_types": ["m.room.member"]}}})
        self.assertNotIn("m.room.member", _types(no_members["rooms"]["join"][room_id]["timeline"]["events"]))
        flt = {"room": {"timeline": {"limit": 1}, "state": {"types": ["m.room.create"]}}}
        state = self.sync(self.alice, filter=flt)["rooms"]["join"][room_id]["state"]["events"]
        self.assertEqual(_types(state), ["m.room.create"])

    def test_senders_and_rooms(self) -> None:
        """not_senders drops events; room.rooms / not_rooms select rooms in every section."""
        room_a = self.create_room(preset="public_chat")
        room_b = self.create_room()
        self.join(room_a, self.bob)
        self.say(room_a, self.bob, "from bob")
        body = self.sync(self.alice, filter={"room": {"timeline": {"not_senders": ["@bob:test:8448"]}}})
        self.assertNotIn("@bob:test:8448", {e["sender"] for e in body["rooms"]["join"][room_a]["timeline"]["events"]})
        self.assertEqual(set(self.sync(self.alice, filter={"room": {"rooms": [room_b]}})["rooms"]["join"]), {room_b})
        self.assertEqual(set(self.sync(self.alice, filter={"room": {"not_rooms": [room_b]}})["rooms"]["join"]), {room_a})

    def test_event_fields(self) -> None:
        """event_fields keeps only the named fields of timeline and state events."""
        room_id = self.create_room()
        self.say(room_id, self.alice, "x")
        body = self.sync(self.alice, filter={"event_fields": ["type", "content.body"]})
        events = body["rooms"]["join"][room_id]["timeline"]["events"]
        self.assertEqual(events[-1], {"type": "m.room.message", "content": {"body": "x"}})

    def test_lazy_loading_members(self) -> None:
        """Only the timeline senders' (and the user's own) member events are sent, once per device."""
        room_id = self.create_room(preset="public_chat", name="Named")
        self.join(room_id, self.bob)
        self.join(room_id, self.carol)
        for i in range(3):
            self.say(room_id, self.bob, f"b{i}")
        flt = {"room": {"timeline": {"limit": 2}, "state": {"lazy_load_members": True}}}
        body = self.sync(self.alice, filter=flt)
        room = body["rooms"]["join"][room_id]
        members = {e["state_key"] for e in room["state"]["events"] if e["type"] == "m.room.member"}
        self.assertEqual(members, {"@alice:test:8448", "@bob:test:8448"})
        self.assertNotIn("m.room.member", _types(room["timeline"]["events"]))
        # Bob speaks again: his member event is redundant now and is not repeated.
        self.say(room_id, self.bob, "again")
        later_body = self.sync(self.alice, filter=flt, since=body["next_batch"])
        self.assertEqual(later_body["rooms"]["join"][room_id]["state"]["events"], [])
        # A sync with no room changes keeps what the device has: bob is still not repeated after it.
        quiet = self.sync(self.alice, filter=flt, since=later_body["next_batch"])
        self.assertEqual(quiet["rooms"]["join"], {})
        self.say(room_id, self.bob, "and again")
        self.say(room_id, self.carol, "hi")
        third = self.sync(self.alice, filter=flt, since=quiet["next_batch"])["rooms"]["join"][room_id]
        # Carol speaks for the first time: only her member event comes along.
        self.assertEqual({e["state_key"] for e in third["state"]["events"]}, {"@carol:test:8448"})

    def test_lazy_loading_includes_heroes_of_unnamed_rooms(self) -> None:
        """A room without a name or alias: the heroes' member events come along (spec m.heroes)."""
        room_id = self.create_room(preset="public_chat")
        self.join(room_id, self.bob)
        self.join(room_id, self.carol)
        self.say(room_id, self.alice, "a")
        flt = {"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": True}}}
        room = self.sync(self.alice, filter=flt)["rooms"]["join"][room_id]
        members = {e["state_key"] for e in room["state"]["events"] if e["type"] == "m.room.member"}
        self.assertEqual(members, {"@alice:test:8448", "@bob:test:8448", "@carol:test:8448"})
        self.assertEqual(room["summary"]["m.heroes"], ["@bob:test:8448", "@carol:test:8448"])

    def test_include_redundant_members(self) -> None:
        """include_redundant_members sends the senders' member events every time."""
        room_id = self.create_room(preset="public_chat")
        self.join(room_id, self.bob)
        self.say(room_id, self.bob, "b")
        flt = {"room": {"state": {"lazy_load_members": True, "include_redundant_members": True}}}
        body = self.sync(self.alice, filter=flt)
        self.say(room_id, self.bob, "again")
        later = self.sync(self.alice, filter=flt, since=body["next_batch"])["rooms"]["join"][room_id]
        self.assertEqual({e["state_key"] for e in later["state"]["events"]}, {"@bob:test:8448"})

    def test_lazy_loading_resends_on_retried_since(self) -> None:
        """A client retrying an older since (it lost a response) gets the member events again."""
        room_id = self.create_room(preset="public_chat")
        self.join(room_id, self.bob)
        token = self.sync(self.alice)["next_batch"]
        self.say(room_id, self.bob, "b")
        flt = {"room": {"state": {"lazy_load_members": True}}}
        first = self.sync(self.alice, filter=flt, since=token)["rooms"]["join"][room_id]
        retry = self.sync(self.alice, filter=flt, since=token)["rooms"]["join"][room_id]
        self.assertEqual(first["state"]["events"], retry["state"]["events"])


class AccountDataTests(SyncTestCase):
    def test_account_data_in_sync(self) -> None:
        """Global and room account data appear in initial and incremental syncs."""
        room_id = self.create_room()
        put = self.make_request("PUT", f"{V3}/user/@alice:test:8448/account_data/m.direct", {"a": 1}, access_token=self.alice)
        self.assertEqual(put.code, 200)
        body = self.sync(self.alice)
        self.assertIn({"type": "m.direct", "content": {"a": 1}}, body["account_data"]["events"])
        token = body["next_batch"]
        self.make_request("PUT", f"{V3}/user/@alice:test:8448/account_data/m.direct", {"a": 2}, access_token=self.alice)
        self.make_request(
            "PUT", f"{V3}/user/@alice:test:8448/rooms/{room_id}/account_data/m.tag", {"tags": {}}, access_token=self.alice
        )
        later = self.sync(self.alice, since=token)
        self.assertEqual(later["account_data"]["events"], [{"type": "m.direct", "content": {"a": 2}}])
        room = later["rooms"]["join"][room_id]
        self.assertEqual(room["account_data"]["events"], [{"type": "m.tag", "content": {"tags": {}}}])
        self.assertEqual(room["timeline"]["events"], [])
        self.assertEqual(self.sync(self.alice, since=later["next_batch"])["account_data"]["events"], [])

    def test_account_data_filter(self) -> None:
        """The account_data filter selects global entries by type."""
        for t in ("a.one", "b.two"):
            self.make_request("PUT", f"{V3}/user/@alice:test:8448/account_data/{t}", {}, access_token=self.alice)
        body = self.sync(self.alice, filter={"account_data": {"not_types": ["b.*"]}})
        # m.push_rules: every initial sync carries the push ruleset (homeserver.push.sync_source).
        self.assertEqual(_types(body["account_data"]["events"]), ["a.one", "m.push_rules"])


class TokenAndInputTests(SyncTestCase):
    def test_malformed_since(self) -> None:
        """A since that is not a StreamToken is 400 M_INVALID_PARAM."""
        for since in ("garbage", "sc1_e", "sc2_e1", "t1-2", "sc1_" + "e1_" * 300):
            channel = self.sync_channel(self.alice, since=since)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"), since)

    def test_malformed_parameters(self) -> None:
        """Bad timeout, full_state, set_presence and filters are 400; an unknown filter ID is 404."""
        cases = [
            ({"timeout": "soon"}, 400), ({"timeout": "-5"}, 400), ({"full_state": "yes"}, 400),
            ({"set_presence": "busy"}, 400), ({"filter": "{not json"}, 400), ({"filter": "abc"}, 400),
            ({"filter": {"room": {"timeline": {"limit": "ten"}}}}, 400), ({"filter": {"room": []}}, 400),
            ({"filter": "[]"}, 400), ({"filter": "12345"}, 404),
        ]
        for params, code in cases:
            channel = self.sync_channel(self.alice, **params)
            self.assertEqual(channel.code, code, (params, channel.json_body))
        self.assertEqual(self.sync_channel(self.alice, set_presence="offline").code, 200)

    def test_requires_auth(self) -> None:
        self.assertEqual(self.make_request("GET", f"{V3}/sync").code, 401)

    def test_future_and_partial_tokens(self) -> None:
        """A token from the future is clamped to now; missing names mean now; unknown names are ignored."""
        room_id = self.create_room()
        now = StreamToken.decode(self.sync(self.alice)["next_batch"], StreamToken())
        future = StreamToken({"e": now.get("e") + 1000, "ad": now.get("ad") + 5, "zz": 3}).encode()
        body = self.sync(self.alice, since=future)
        self.assertEqual(StreamToken.decode(body["next_batch"], StreamToken()).positions, now.positions)
        self.assertEqual(body["rooms"]["join"], {})
        self.assertEqual(self.sync(self.alice, since="sc1")["rooms"]["join"], {})
        # An events-only token still sees new events after it.
        only_e = StreamToken({"e": now.get("e")}).encode()
        new = self.say(room_id, self.alice)
        events = self.sync(self.alice, since=only_e)["rooms"]["join"][room_id]["timeline"]["events"]
        self.assertEqual([e["event_id"] for e in events], [new])

    def test_r0_path(self) -> None:
        self.assertEqual(self.make_request("GET", "/_matrix/client/r0/sync", access_token=self.alice).code, 200)
