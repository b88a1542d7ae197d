"""History visibility (spec "Room History Visibility"): the per-event rules, through
``filter_events_for_client`` and through /messages (both databases)."""

from __future__ import annotations

from typing import Any

from homeserver.rooms.visibility import HistoryVisibilityFilter, is_allowed, visibility_of
from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.state_groups import StateGroupStore
from tests.homeserver.test_messages import ReadsTestCase
from tests.homeserver.test_rooms_core import V3

ALL = ("m1", "m2", "m3", "m4")

# Who sees which of the scenario's messages (see VisibilityMatrixTests.scenario).
EXPECTED: dict[str, dict[str, tuple[str, ...]]] = {
    "world_readable": {"alice": ALL, "bob": ALL, "carol": ALL, "dave": ALL},
    "shared": {"alice": ALL, "bob": ("m1", "m2", "m3"), "carol": (), "dave": ()},
    "invited": {"alice": ALL, "bob": ("m2", "m3"), "carol": (), "dave": ("m2", "m3", "m4")},
    "joined": {"alice": ALL, "bob": ("m3",), "carol": (), "dave": ()},
}


class VisibilityTestCase(ReadsTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.register_user("carol")
        self.register_user("dave")
        self.carol = self.login("carol")["access_token"]
        self.dave = self.login("dave")["access_token"]

    def room_with(self, visibility: str) -> str:
        return self.create_room(
            preset="public_chat",
            initial_state=[{"type": "m.room.history_visibility", "state_key": "",
                            "content": {"history_visibility": visibility}}],
        )

    def membership(self, room_id: str, action: str, token: str, **body: Any) -> None:
        path = f"{V3}/join/{room_id}" if action == "join" else f"{V3}/rooms/{room_id}/{action}"
        channel = self.make_request("POST", path, body, access_token=token)
        self.assertEqual(channel.code, 200, channel.json_body)

    def text(self, room_id: str, body: str, token: str | None = None) -> str:
        channel = self.send(room_id, {"msgtype": "m.text", "body": body}, token or self.alice, txn=body)
        self.assertEqual(channel.code, 200, channel.json_body)
        event_id: str = channel.json_body["event_id"]
        return event_id

    def stored(self, event_ids: list[str]) -> list[StoredEvent]:
        found = self.get_success(self.hs.rooms.events.get_events(event_ids))
        return [found[e] for e in event_ids]

    def visible(self, user: str, event_ids: list[str]) -> list[str]:
        events = self.stored(event_ids)
        kept = self.get_success(self.hs.rooms.visibility.filter_events_for_client(f"@{user}:test:8448", events))
        return [e.event_id for e in kept]


class VisibilityMatrixTests(VisibilityTestCase):
    def scenario(self, visibility: str) -> tuple[str, dict[str, str]]:
        """m1; bob and dave invited; m2; bob joins; m3; bob leaves; m4. Carol is never in the room."""
        room_id = self.room_with(visibility)
        ids = {"m1": self.text(room_id, "m1")}
        self.membership(room_id, "invite", self.alice, user_id="@bob:test:8448")
        self.membership(room_id, "invite", self.alice, user_id="@dave:test:8448")
        ids["m2"] = self.text(room_id, "m2")
        self.membership(room_id, "join", self.bob)
        ids["m3"] = self.text(room_id, "m3")
        self.membership(room_id, "leave", self.bob)
        ids["m4"] = self.text(room_id, "m4")
        return room_id, ids

    def test_matrix(self) -> None:
        """Each history_visibility value × a member, a user who was invited then joined then left, a
        user never in the room and a user still invited."""
        for visibility, expected in EXPECTED.items():
            _room_id, ids = self.scenario(visibility)
            by_id = {v: k for k, v in ids.items()}
            for user, names in expected.items():
                seen = tuple(by_id[e] for e in self.visible(user, list(ids.values())))
                self.assertEqual(seen, names, (visibility, user))

    def test_messages_endpoint_applies_the_rules(self) -> None:
        """/messages: a departed user reads up to their leave; strangers and invitees get 403 unless
        the room is world_readable."""
        room_id, _ids = self.scenario("joined")
        chunk = self.ok_messages(room_id, self.bob, limit=100)["chunk"]
        texts = [e["content"].get("body") for e in chunk if e["type"] == "m.room.message"]
        self.assertEqual(texts, ["m3"])
        memberships = [e["content"]["membership"] for e in chunk if e["type"] == "m.room.member"
                       and e["state_key"] == "@bob:test:8448"]
        # Own membership events: visible when the membership before or after allows (not the invite).
        self.assertEqual(memberships, ["leave", "join"])
        for token in (self.carol, self.dave):
            self.assertEqual(self.messages(room_id, token).code, 403)
        open_room, _ = self.scenario("world_readable")
        self.assertEqual(len(self.ok_messages(open_room, self.carol, limit=100, filter={"types": ["m.room.message"]})["chunk"]), 4)

    def test_shared_after_rejoin(self) -> None:
        """shared: an event sent while the user was away is visible once they join again; joined: not."""
        for visibility, expected in (("shared", True), ("joined", False)):
            room_id = self.room_with(visibility)
            self.membership(room_id, "join", self.bob)
            self.membership(room_id, "leave", self.bob)
            away = self.text(room_id, "away")
            self.assertEqual(self.visible("bob", [away]), [])
            self.membership(room_id, "join", self.bob)
            self.assertEqual(self.visible("bob", [away]) == [away], expected, visibility)


class VisibilityChangeTests(VisibilityTestCase):
    def test_history_visibility_events_visible_before_or_after(self) -> None:
        """A stranger sees the changes to and from world_readable and what was sent in between."""
        room_id = self.room_with("joined")
        hidden = self.text(room_id, "hidden")
        opened = self.make_request("PUT", f"{V3}/rooms/{room_id}/state/m.room.history_visibility",
                                   {"history_visibility": "world_readable"}, access_token=self.alice).json_body["event_id"]
        public = self.text(room_id, "public")
        closed = self.make_request("PUT", f"{V3}/rooms/{room_id}/state/m.room.history_visibility",
                                   {"history_visibility": "joined"}, access_token=self.alice).json_body["event_id"]
        private = self.text(room_id, "private")
        self.assertEqual(self.visible("carol", [hidden, opened, public, closed, private]), [opened, public, closed])

    def test_unknown_value_counts_as_shared(self) -> None:
        """A history_visibility the server does not understand behaves as shared."""
        room_id = self.room_with("bogus")
        early = self.text(room_id, "early")
        self.assertEqual(self.visible("bob", [early]), [])
        self.membership(room_id, "join", self.bob)
        self.assertEqual(self.visible("bob", [early]), [early])

    def test_pure_rules(self) -> None:
        """The decision table and the value parser."""
        self.assertTrue(is_allowed("joined", "join", False))
        self.assertFalse(is_allowed("joined", "invite", True))
        self.assertTrue(is_allowed("invited", "invite", False))
        self.assertFalse(is_allowed("shared", None, False))
        self.assertTrue(is_allowed("shared", "leave", True))
        self.assertTrue(is_allowed("world_readable", None, False))
        self.assertEqual(visibility_of(None), "shared")
        self.assertEqual(visibility_of({"history_visibility": 5}), "shared")
        self.assertEqual(visibility_of({"history_visibility": "invited"}), "invited")

    def test_outliers_and_rejected_events_are_hidden(self) -> None:
        """Events without known state (outliers) and rejected events are never shown."""
        from dataclasses import replace

        room_id = self.room_with("world_readable")
        event = self.stored([self.text(room_id, "x")])[0]
        vis = self.hs.rooms.visibility
        self.assertEqual(self.get_success(vis.filter_events_for_client("@carol:test:8448", [replace(event, outlier=True)])), [])
        rejected = replace(event, rejected_reason="auth")
        self.assertEqual(self.get_success(vis.filter_events_for_client("@carol:test:8448", [rejected])), [])


class VisibilityCostTests(VisibilityTestCase):
    def count_reads(self) -> list[str]:
        calls: list[str] = []
        original = self.hs.pool.run_read

        def counting(name: str, *args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return original(name, *args, **kwargs)

        self.hs.pool.run_read = counting  # type: ignore[method-assign,assignment]  # counting wrapper
        self.addCleanup(setattr, self.hs.pool, "run_read", original)
        return calls

    def fresh_filter(self) -> HistoryVisibilityFilter:
        core = self.hs.rooms
        events = EventStore(self.hs.pool)
        groups = StateGroupStore(self.hs.pool, core.state_groups._ids)
        return HistoryVisibilityFilter(events, core.rooms, groups, core.creator)

    def test_queries_do_not_grow_with_events_and_are_memoised(self) -> None:
        """SCALE-4: filtering 3 or 20 events of one stretch costs the same queries; a second call
        with the same events costs none."""
        room_id = self.room_with("shared")
        ids = [self.text(room_id, f"x{i}") for i in range(20)]
        calls = self.count_reads()
        counts = []
        for subset in (ids[:3], ids):
            events = self.stored(subset)
            calls.clear()
            self.get_success(self.fresh_filter().filter_events_for_client("@bob:test:8448", events))
            counts.append(len(calls))
        self.assertEqual(counts[0], counts[1])
        vis = self.fresh_filter()
        events = self.stored(ids)
        self.get_success(vis.filter_events_for_client("@alice:test:8448", events))
        calls.clear()
        self.assertEqual(len(self.get_success(vis.filter_events_for_client("@alice:test:8448", events))), 20)
        self.assertEqual(calls, [])
