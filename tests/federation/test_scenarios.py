"""Federation scenarios over the production wiring (issue 13): two or three real homeservers whose
events travel through the real sender, ``/send``, keyring, state resolution, ``get_missing_events``
and ``/backfill`` (see ``tests/federation/harness.py``). Every scenario compares what clients see
on each server (``/messages``, ``/state``)."""

from __future__ import annotations

import itertools
import urllib.parse
from typing import Any

from federation.sender.queue import QueueSettings
from federation.sender.service import SenderSettings
from sc_proto.crypto.keys import generate_signing_key, get_key_id
from sc_proto.events.builder import finalise_event
from tests.federation.harness import FederatedServer, FederationTestCase

_txn = itertools.count()


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class ScenarioCase(FederationTestCase):
    """Helpers shared by the scenarios: client calls that assert success, and what clients see."""

    def ok(self, server: FederatedServer, method: str, path: str, content: Any, token: str) -> dict[str, Any]:
        channel = self.request(server, method, path, content, token)
        self.assertEqual(channel.code, 200, (server.name, path, channel.json_body))
        return dict(channel.json_body)

    def say(self, server: FederatedServer, token: str, room_id: str, body: str) -> str:
        path = f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/t{next(_txn)}"
        return str(self.ok(server, "PUT", path, {"msgtype": "m.text", "body": body}, token)["event_id"])

    def put_state(self, server: FederatedServer, token: str, room_id: str, event_type: str, content: Any) -> str:
        path = f"/_matrix/client/v3/rooms/{q(room_id)}/state/{event_type}/"
        return str(self.ok(server, "PUT", path, content, token)["event_id"])

    def join(self, server: FederatedServer, token: str, room: str, via: FederatedServer) -> None:
        self.ok(server, "POST", f"/_matrix/client/v3/join/{q(room)}?server_name={q(via.name)}", {}, token)

    def invite(self, server: FederatedServer, token: str, room_id: str, user_id: str) -> None:
        self.ok(server, "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/invite", {"user_id": user_id}, token)

    def timeline(self, server: FederatedServer, token: str, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The room's events as ``/messages`` (backwards from the end) shows them, oldest first."""
        body = self.ok(server, "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/messages?dir=b&limit={limit}", None, token)
        return list(reversed(body["chunk"]))

    def message_ids(self, server: FederatedServer, token: str, room_id: str) -> list[str]:
        return [e["event_id"] for e in self.timeline(server, token, room_id) if e["type"] == "m.room.message"]

    def bodies(self, server: FederatedServer, token: str, room_id: str) -> list[str | None]:
        """The bodies of the room's messages, oldest first (None: a redacted one)."""
        return [e["content"].get("body") for e in self.timeline(server, token, room_id) if e["type"] == "m.room.message"]

    def state(self, server: FederatedServer, token: str, room_id: str) -> dict[tuple[str, str], str]:
        """The room's current state as ``/state`` shows it: ``(type, state_key) -> event_id``."""
        channel = self.request(server, "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/state", None, token)
        self.assertEqual(channel.code, 200, channel.json_body)
        return {(e["type"], e["state_key"]): e["event_id"] for e in channel.json_body}


class JoinInviteMessageScenarios(ScenarioCase):
    SERVER_NAMES = ("a.test:8448", "b.test:8448", "c.test:8448")

    def test_joins_both_ways_invites_and_one_order_everywhere(self) -> None:
        """A's user joins B's room and B's user joins A's room; a user of C is invited over
        federation and joins; messages from all three servers read in one order on every server."""
        alice, alice_t = self.user_on(self.a, "alice")
        bob, bob_t = self.user_on(self.b, "bob")
        carol, carol_t = self.user_on(self.c, "carol")
        room_a = self.create_room(self.a, alice_t, preset="public_chat", name="A's room")
        room_b = self.create_room(self.b, bob_t, preset="private_chat")
        self.join(self.b, bob_t, room_a, via=self.a)
        self.invite(self.b, bob_t, room_b, alice)
        self.assertEqual(self.membership_on(self.a, room_b, alice), "invite")
        self.join(self.a, alice_t, room_b, via=self.b)
        self.invite(self.a, alice_t, room_a, carol)
        self.assertEqual(self.membership_on(self.c, room_a, carol), "invite")
        self.join(self.c, carol_t, room_a, via=self.a)
        for server, token, body in (
            (self.a, alice_t, "a1"), (self.b, bob_t, "b1"), (self.c, carol_t, "c1"),
            (self.b, bob_t, "b2"), (self.a, alice_t, "a2"), (self.c, carol_t, "c2"),
        ):
            self.say(server, token, room_a, body)
        self.say(self.a, alice_t, room_b, "in b's room from a")
        self.say(self.b, bob_t, room_b, "reply from b")
        expected = ["a1", "b1", "c1", "b2", "a2", "c2"]
        views = {
            s.name: self.message_ids(s, t, room_a) for s, t in ((self.a, alice_t), (self.b, bob_t), (self.c, carol_t))
        }
        self.assertEqual(len(set(map(tuple, views.values()))), 1, views)
        for server, token in ((self.a, alice_t), (self.b, bob_t), (self.c, carol_t)):
            self.assertEqual(self.bodies(server, token, room_a), expected, server.name)
            self.assertEqual(self.membership_on(server, room_a, carol), "join", server.name)
        self.assertEqual(self.bodies(self.a, alice_t, room_b), ["in b's room from a", "reply from b"])
        self.assertEqual(self.message_ids(self.a, alice_t, room_b), self.message_ids(self.b, bob_t, room_b))
        self.assertEqual(self.state(self.a, alice_t, room_a), self.state(self.c, carol_t, room_a))
        self.assertEqual(self.network.pdu_failures, [])
        sends = {(r.origin, r.destination) for r in self.network.requests if "/send/" in r.path}
        self.assertTrue({(self.a.name, self.b.name), (self.b.name, self.a.name), (self.c.name, self.a.name)} <= sends)
        self.assertIn(bob, {e["sender"] for e in self.timeline(self.c, carol_t, room_a)})


class ConflictScenarios(ScenarioCase):
    def _shared_room(self) -> tuple[str, str, str, str, str]:
        alice, alice_t = self.user_on(self.a, "alice")
        bob, bob_t = self.user_on(self.b, "bob")
        room = self.create_room(self.a, alice_t, preset="public_chat")
        self.join(self.b, bob_t, room, via=self.a)
        self.put_state(self.a, alice_t, room, "m.room.power_levels", self._levels(alice, bob))
        return alice, alice_t, bob, bob_t, room

    def _levels(self, alice: str, bob: str, **extra: int) -> dict[str, Any]:
        # Room version 12 (the default): the creator's power is implicit and may not be listed.
        return {"users": {bob: 100, **extra}, "users_default": 0, "events_default": 0,
                "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0}

    def test_concurrent_state_changes_converge_by_state_resolution(self) -> None:
        """A and B change the power levels and the name while partitioned; once reconnected both
        hold both forks and the same current state, the one state resolution v2 picks: for two
        power events of equally powerful senders the later (origin_server_ts) is applied last and
        wins; for the name (a normal state event) the mainline/timestamp order picks the later too."""
        alice, alice_t, bob, bob_t, room = self._shared_room()
        self.network.partition(self.a.name, self.b.name)
        pl_a = self.put_state(self.a, alice_t, room, "m.room.power_levels", self._levels(alice, bob, **{"@x:a.test:8448": 50}))
        name_a = self.put_state(self.a, alice_t, room, "m.room.name", {"name": "from a"})
        self.reactor.advance(1)
        pl_b = self.put_state(self.b, bob_t, room, "m.room.power_levels", self._levels(alice, bob, **{"@y:b.test:8448": 75}))
        name_b = self.put_state(self.b, bob_t, room, "m.room.name", {"name": "from b"})
        self.assertEqual(self.state(self.a, alice_t, room)[("m.room.power_levels", "")], pl_a)
        self.assertEqual(self.state(self.b, bob_t, room)[("m.room.power_levels", "")], pl_b)
        self.network.heal()
        self.settle()
        state_a, state_b = self.state(self.a, alice_t, room), self.state(self.b, bob_t, room)
        self.assertEqual(state_a, state_b)
        self.assertEqual(state_a[("m.room.power_levels", "")], pl_b)
        self.assertEqual(state_a[("m.room.name", "")], name_b)
        for server in (self.a, self.b):
            head = self.get_success(server.hs.rooms.creator.get_head(room))
            self.assertEqual(set(head.extremities), {name_a, name_b}, server.name)
        # The next event merges the forks on each side and still agrees.
        merge = self.say(self.a, alice_t, room, "after the merge")
        self.say(self.b, bob_t, room, "agreed")
        self.assertEqual(self.state(self.a, alice_t, room), self.state(self.b, bob_t, room))
        self.assertEqual(self.bodies(self.b, bob_t, room)[-2:], ["after the merge", "agreed"])
        merged = self.get_success(self.b.hs.rooms.room_input.get_pdu(merge))
        self.assertEqual(set(merged.prev_event_ids), {name_a, name_b})
        self.assertEqual(self.network.pdu_failures, [])

    def test_soft_failed_event_is_stored_but_not_shown(self) -> None:
        """B's user, banned on A while B was cut off, sends a message built on the old prev events:
        A authorises it against the state before it (it passes) but not the current state (bob is
        banned): it is stored soft-failed and no client of A sees it; both converge on the ban."""
        _alice, alice_t, bob, bob_t, room = self._shared_room()
        self.say(self.b, bob_t, room, "before the ban")
        self.network.partition(self.a.name, self.b.name)
        self.ok(self.a, "POST", f"/_matrix/client/v3/rooms/{q(room)}/ban", {"user_id": bob}, alice_t)
        late = self.say(self.b, bob_t, room, "sent while banned")
        self.network.heal()
        self.settle()
        stored = self.get_success(self.a.hs.rooms.events.get_event(late))
        self.assertIsNotNone(stored)
        self.assertTrue(stored.outlier)
        self.assertIsNone(stored.rejected_reason)
        self.assertNotIn("sent while banned", self.bodies(self.a, alice_t, room))
        self.assertIn("before the ban", self.bodies(self.a, alice_t, room))
        head = self.get_success(self.a.hs.rooms.creator.get_head(room))
        self.assertNotIn(late, head.extremities)
        channel = self.request(self.a, "GET", f"/_matrix/client/v3/rooms/{q(room)}/event/{q(late)}", None, alice_t)
        self.assertEqual(channel.code, 404)
        synced = self.ok(self.a, "GET", "/_matrix/client/v3/sync", None, alice_t)
        timeline = synced["rooms"]["join"][room]["timeline"]["events"]
        self.assertNotIn(late, [e["event_id"] for e in timeline])
        self.assertEqual(self.membership_on(self.a, room, bob), "ban")
        self.assertEqual(self.membership_on(self.b, room, bob), "ban")


class BackfillScenarios(ScenarioCase):
    def test_late_joiner_pages_back_past_its_join(self) -> None:
        """A's user joins B's room after twelve messages; paging /messages back past the join
        fetches the older history from B through /backfill, in B's order."""
        _alice, alice_t = self.user_on(self.a, "alice")
        _bob, bob_t = self.user_on(self.b, "bob")
        room = self.create_room(self.b, bob_t, preset="public_chat")
        history = [f"old {i}" for i in range(12)]
        for body in history:
            self.say(self.b, bob_t, room, body)
        self.join(self.a, alice_t, room, via=self.b)
        self.say(self.b, bob_t, room, "new")
        self.assertFalse(any("/backfill/" in r.path for r in self.network.requests))
        since = self.ok(self.a, "GET", "/_matrix/client/v3/sync", None, alice_t)["next_batch"]
        self.assertEqual(self.bodies(self.a, alice_t, room), [*history, "new"])
        self.assertTrue(any("/backfill/" in r.path and r.origin == self.a.name for r in self.network.requests))
        b_order = [e["event_id"] for e in self.timeline(self.b, bob_t, room) if e["type"] == "m.room.message"]
        a_order = [e["event_id"] for e in self.timeline(self.a, alice_t, room) if e["type"] == "m.room.message"]
        self.assertEqual(a_order, b_order)
        # Backfilled history is not news: the next /sync does not return it, nor counts it unread.
        later = self.ok(self.a, "GET", f"/_matrix/client/v3/sync?timeout=0&since={since}", None, alice_t)
        joined = later.get("rooms", {}).get("join", {}).get(room, {})
        self.assertEqual(joined.get("timeline", {}).get("events", []), [])
        self.assertEqual(joined.get("unread_notifications", {}).get("notification_count", 0), 0)
        # Before "old 0" A holds only outliers (the join's state): once that answer brought nothing
        # new, further pages to the start ask nobody.
        backfills = sum("/backfill/" in r.path for r in self.network.requests)
        self.assertEqual(self.bodies(self.a, alice_t, room), [*history, "new"])
        self.assertEqual(self.bodies(self.a, alice_t, room), [*history, "new"])
        self.assertEqual(sum("/backfill/" in r.path for r in self.network.requests), backfills)
        # Backfilled history moved neither A's forward extremities nor its current state.
        head = self.get_success(self.a.hs.rooms.creator.get_head(room))
        self.assertEqual(len(head.extremities), 1)
        self.assertEqual(self.state(self.a, alice_t, room), self.state(self.b, bob_t, room))

    def test_tampered_backfill_answer_is_not_shown(self) -> None:
        """B's /backfill answer altered on the way (a message's body changed after signing) does not
        put the altered text in A's timeline: the content hash fails, so A keeps the redacted event
        (the spec's rule for a PDU whose signature holds but whose hash does not)."""
        _alice, alice_t = self.user_on(self.a, "alice")
        _bob, bob_t = self.user_on(self.b, "bob")
        room = self.create_room(self.b, bob_t, preset="public_chat")
        for i in range(3):
            self.say(self.b, bob_t, room, f"old {i}")
        self.join(self.a, alice_t, room, via=self.b)

        def tamper(body: dict[str, Any]) -> dict[str, Any]:
            for pdu in body.get("pdus", []):
                if pdu.get("content", {}).get("body") == "old 1":
                    pdu["content"]["body"] = "forged"
            return body

        self.network.tamper[(self.b.name, "backfill")] = tamper
        shown = self.bodies(self.a, alice_t, room)
        self.assertTrue(any("/backfill/" in r.path for r in self.network.requests))
        self.assertEqual(shown, ["old 0", None, "old 2"])

    def test_local_room_does_not_backfill(self) -> None:
        """A room created here holds its start: paging to it asks nobody."""
        _alice, alice_t = self.user_on(self.a, "alice")
        room = self.create_room(self.a, alice_t, preset="public_chat")
        self.say(self.a, alice_t, room, "hi")
        before = len(self.network.requests)
        self.assertEqual(self.bodies(self.a, alice_t, room), ["hi"])
        self.assertEqual(len(self.network.requests), before)


class OutageScenarios(ScenarioCase):
    SENDER_SETTINGS = SenderSettings(queue=QueueSettings(max_pending_pdus=2))

    def test_server_down_then_back_catches_up_in_order(self) -> None:
        """B goes away while A's users talk; A's queue for B falls back to catch-up. When B is back,
        A sends the newest event, B fills the gap with get_missing_events, in order."""
        _alice, alice_t = self.user_on(self.a, "alice")
        _bob, bob_t = self.user_on(self.b, "bob")
        room = self.create_room(self.a, alice_t, preset="public_chat")
        self.join(self.b, bob_t, room, via=self.a)
        self.say(self.a, alice_t, room, "before")
        self.network.take_down(self.b.name)
        missed = [f"missed {i}" for i in range(5)]
        for body in missed:
            self.say(self.a, alice_t, room, body)
        queue = self.a.sender.queue_for(self.b.name)
        assert queue is not None
        self.assertTrue(queue.catching_up)
        self.assertNotIn("missed 0", self.bodies(self.b, bob_t, room))
        self.network.bring_up(self.b.name)
        self.settle()
        self.assertEqual(self.bodies(self.b, bob_t, room), ["before", *missed])
        self.assertEqual(self.message_ids(self.b, bob_t, room), self.message_ids(self.a, alice_t, room))
        self.assertTrue(any("/get_missing_events/" in r.path and r.origin == self.b.name for r in self.network.requests))
        self.assertFalse(queue.catching_up)
        self.say(self.b, bob_t, room, "back")
        self.assertEqual(self.bodies(self.a, alice_t, room)[-1], "back")
        self.assertEqual(self.network.pdu_failures, [])


class ForgedInputScenarios(ScenarioCase):
    SERVER_NAMES = ("a.test:8448", "b.test:8448", "c.test:8448")

    def test_forged_pdus_from_c_are_refused_and_nothing_changes(self) -> None:
        """Server C sends A a /send with PDUs in the name of B's user (signed by C, or by a key C
        claims is B's) and one of its own user who is not in the room: each is refused in the
        answer, and A's timeline and state do not change."""
        _alice, alice_t = self.user_on(self.a, "alice")
        bob, bob_t = self.user_on(self.b, "bob")
        room = self.create_room(self.a, alice_t, preset="public_chat")
        self.join(self.b, bob_t, room, via=self.a)
        self.say(self.b, bob_t, room, "genuine")
        before_timeline = self.timeline(self.a, alice_t, room)
        before_state = self.state(self.a, alice_t, room)
        head = self.get_success(self.a.hs.rooms.creator.get_head(room))
        rv = head.version
        auth = [head.state[("m.room.create", "")], head.state[("m.room.power_levels", "")]]
        base = {
            "room_id": room, "type": "m.room.message", "depth": head.max_depth + 1,
            "prev_events": list(head.extremities), "origin_server_ts": self.clock.time_msec(),
            "hashes": {}, "signatures": {},
        }

        def pdu(sender: str, server_name: str, key: Any, body: str, extra_auth: list[str]) -> dict[str, Any]:
            raw = {**base, "sender": sender, "content": {"msgtype": "m.text", "body": body},
                   "auth_events": auth + extra_auth}
            if rv.identifier in ("1", "2"):
                raw["event_id"] = f"$forged{body}:{server_name}"
            return dict(finalise_event(raw, rv, server_name, get_key_id(key), key).pdu)

        bob_member = head.state[("m.room.member", bob)]
        fake_b_key = generate_signing_key(self.b.signing_key.version)
        forged = [
            pdu(bob, self.c.name, self.c.signing_key, "signed by c", [bob_member]),
            pdu(bob, self.b.name, fake_b_key, "fake b key", [bob_member]),
            pdu("@carol:c.test:8448", self.c.name, self.c.signing_key, "not a member", []),
        ]
        body = {"origin": self.c.name, "origin_server_ts": self.clock.time_msec(), "pdus": forged}
        answer = self.get_success(self.c.http.put_json(self.a.name, "/_matrix/federation/v1/send/forged1", body))
        results = answer["pdus"]
        self.assertEqual(len(results), 3, answer)
        self.assertTrue(all("error" in r for r in results.values()), answer)
        self.settle()
        self.assertEqual(self.timeline(self.a, alice_t, room), before_timeline)
        self.assertEqual(self.state(self.a, alice_t, room), before_state)
        self.assertEqual(self.get_success(self.a.hs.rooms.creator.get_head(room)).extremities, head.extremities)
        # B never heard of any of it either.
        self.assertNotIn("signed by c", self.bodies(self.b, bob_t, room))
