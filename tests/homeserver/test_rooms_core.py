"""The rooms write path: createRoom, send, state, membership, redaction (both databases)."""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet.task import deferLater

from tests.homeserver.server_case import FullHomeserverTestCase
from tests.unittest import make_request

V3 = "/_matrix/client/v3"


class RoomsTestCase(FullHomeserverTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.register_user("alice")
        self.register_user("bob")
        self.alice = self.login("alice")["access_token"]
        self.bob = self.login("bob")["access_token"]

    def create_room(self, token: str | None = None, **body: Any) -> str:
        channel = self.make_request("POST", f"{V3}/createRoom", body, access_token=token or self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        room_id: str = channel.json_body["room_id"]
        return room_id

    def send(self, room_id: str, body: Any, token: str, txn: str = "t1", etype: str = "m.room.message") -> Any:
        return self.make_request("PUT", f"{V3}/rooms/{room_id}/send/{etype}/{txn}", body, access_token=token)

    def room_events(self, room_id: str) -> list[Any]:
        head = self.get_success(self.hs.rooms.creator.get_head(room_id))
        assert head is not None

        def all_txn(txn: Any) -> list[Any]:
            txn.execute("SELECT type, sender FROM events WHERE room_nid = ? ORDER BY stream_ordering", (head.room.room_nid,))
            return txn.fetchall()  # type: ignore[no-any-return]

        return self.get_success(self.hs.pool.run_read("all", all_txn))


class CreateRoomTests(RoomsTestCase):
    def test_default_room_is_v12_with_preset_state(self) -> None:
        """A bare createRoom makes a v12 private room: create, join, power levels, join rules, visibility, guest access."""
        room_id = self.create_room()
        self.assertTrue(room_id.startswith("!"))
        self.assertNotIn(":", room_id)  # v12 room IDs carry no server name
        types = [t for t, _ in self.room_events(room_id)]
        self.assertEqual(
            types,
            ["m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules",
             "m.room.history_visibility", "m.room.guest_access"],
        )

    def test_room_versions(self) -> None:
        """10 and 11 are creatable with legacy IDs; unknown versions get 400 M_UNSUPPORTED_ROOM_VERSION."""
        for version in ("10", "11"):
            room_id = self.create_room(room_version=version)
            self.assertTrue(room_id.endswith(":test:8448"))
        channel = self.make_request("POST", f"{V3}/createRoom", {"room_version": "99"}, access_token=self.alice)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_UNSUPPORTED_ROOM_VERSION"))

    def test_name_topic_alias_invite(self) -> None:
        """name, topic, room_alias_name and invite produce their events; a taken alias is M_ROOM_IN_USE."""
        room_id = self.create_room(name="Lobby", topic="Hello", room_alias_name="lobby", invite=["@bob:test:8448"])
        types = [t for t, _ in self.room_events(room_id)]
        for t in ("m.room.name", "m.room.topic", "m.room.canonical_alias"):
            self.assertIn(t, types)
        self.assertEqual(types[-1], "m.room.member")
        again = self.make_request("POST", f"{V3}/createRoom", {"room_alias_name": "lobby"}, access_token=self.alice)
        self.assertEqual((again.code, again.json_body["errcode"]), (400, "M_ROOM_IN_USE"))

    def test_bad_bodies(self) -> None:
        """Malformed createRoom bodies are 400 and create nothing."""
        for body in ({"preset": "party"}, {"invite": "bob"}, {"invite": ["not a user"]}, {"initial_state": [{"type": 1}]},
                     {"name": 5}, {"power_level_content_override": []}, {"visibility": "secret"}):
            channel = self.make_request("POST", f"{V3}/createRoom", body, access_token=self.alice)
            self.assertEqual(channel.code, 400, (body, channel.json_body))

    def test_identical_creations_at_the_same_instant_get_distinct_ids(self) -> None:
        """v12 room IDs are hashes of the create event; identical requests in one millisecond still differ."""
        ids = {self.create_room() for _ in range(3)}
        self.assertEqual(len(ids), 3)

    def test_requires_auth(self) -> None:
        self.assertEqual(self.make_request("POST", f"{V3}/createRoom", {}).code, 401)


class SendTests(RoomsTestCase):
    def test_member_sends_message(self) -> None:
        room_id = self.create_room()
        channel = self.send(room_id, {"msgtype": "m.text", "body": "hi"}, self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertTrue(channel.json_body["event_id"].startswith("$"))

    def test_retried_txn_returns_same_event(self) -> None:
        """CHAT-3: the same transaction ID returns the same event ID and stores one event."""
        room_id = self.create_room()
        first = self.send(room_id, {"msgtype": "m.text", "body": "hi"}, self.alice, txn="abc")
        second = self.send(room_id, {"msgtype": "m.text", "body": "hi"}, self.alice, txn="abc")
        self.assertEqual(first.json_body["event_id"], second.json_body["event_id"])
        self.assertEqual(sum(1 for t, _ in self.room_events(room_id) if t == "m.room.message"), 1)

    def test_concurrent_retries_store_one_event(self) -> None:
        """CHAT-3/RACE: identical sends in flight at once still store one event."""
        room_id = self.create_room()
        channels = [
            make_request(self.reactor, self.site, "PUT", f"{V3}/rooms/{room_id}/send/m.room.message/same",
                         {"msgtype": "m.text", "body": "x"}, self.alice, await_result=False)
            for _ in range(5)
        ]
        self.pump(1)
        ids = {c.json_body["event_id"] for c in channels}
        self.assertEqual(len(ids), 1)
        self.assertEqual(sum(1 for t, _ in self.room_events(room_id) if t == "m.room.message"), 1)

    def test_non_member_gets_403_and_nothing_stored(self) -> None:
        """CHAT-2/SEC-4: a non-member cannot send; nothing is stored."""
        room_id = self.create_room()
        before = self.room_events(room_id)
        channel = self.send(room_id, {"msgtype": "m.text", "body": "intruder"}, self.bob)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertEqual(self.room_events(room_id), before)

    def test_member_without_power_gets_403(self) -> None:
        """CHAT-2: a member below the required power level cannot send that event type."""
        room_id = self.create_room(preset="public_chat", power_level_content_override={"events": {"m.room.message": 50}})
        self.assertEqual(self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob).code, 200)
        channel = self.send(room_id, {"msgtype": "m.text", "body": "hi"}, self.bob)
        self.assertEqual(channel.code, 403)

    def test_oversized_event_is_413(self) -> None:
        """CHAT-1: events over 65,536 bytes are refused with 413 M_TOO_LARGE and not stored."""
        room_id = self.create_room()
        before = self.room_events(room_id)
        channel = self.send(room_id, {"msgtype": "m.text", "body": "x" * 65_000}, self.alice)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (413, "M_TOO_LARGE"))
        self.assertEqual(self.room_events(room_id), before)

    def test_unknown_room_and_bad_bodies(self) -> None:
        """Unknown rooms are 404; floats and non-objects are 400."""
        self.assertEqual(self.send("!nope:test:8448", {"body": "x"}, self.alice).code, 404)
        room_id = self.create_room()
        self.assertEqual(self.send(room_id, {"x": 1.5}, self.alice).code, 400)
        self.assertEqual(self.send(room_id, [1], self.alice).code, 400)


class MembershipTests(RoomsTestCase):
    def test_join_public_room_and_leave(self) -> None:
        room_id = self.create_room(preset="public_chat")
        self.assertEqual(self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob).code, 200)
        rooms = self.make_request("GET", f"{V3}/joined_rooms", access_token=self.bob).json_body["joined_rooms"]
        self.assertEqual(rooms, [room_id])
        self.assertEqual(self.send(room_id, {"body": "hi"}, self.bob).code, 200)
        self.assertEqual(self.make_request("POST", f"{V3}/rooms/{room_id}/leave", {}, access_token=self.bob).code, 200)
        self.assertEqual(self.send(room_id, {"body": "hi"}, self.bob, txn="2").code, 403)

    def test_private_room_needs_invite(self) -> None:
        room_id = self.create_room()
        self.assertEqual(self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob).code, 403)
        invite = self.make_request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": "@bob:test:8448"}, access_token=self.alice)
        self.assertEqual(invite.code, 200, invite.json_body)
        self.assertEqual(self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob).code, 200)

    def test_ban_kick_unban(self) -> None:
        room_id = self.create_room(preset="public_chat")
        self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob)
        kick = self.make_request("POST", f"{V3}/rooms/{room_id}/kick", {"user_id": "@bob:test:8448"}, access_token=self.alice)
        self.assertEqual(kick.code, 200)
        ban = self.make_request("POST", f"{V3}/rooms/{room_id}/ban", {"user_id": "@bob:test:8448"}, access_token=self.alice)
        self.assertEqual(ban.code, 200)
        self.assertEqual(self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob).code, 403)
        unban = self.make_request("POST", f"{V3}/rooms/{room_id}/unban", {"user_id": "@bob:test:8448"}, access_token=self.alice)
        self.assertEqual(unban.code, 200)
        self.assertEqual(self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob).code, 200)

    def test_member_cannot_ban(self) -> None:
        room_id = self.create_room(preset="public_chat")
        self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob)
        ban = self.make_request("POST", f"{V3}/rooms/{room_id}/ban", {"user_id": "@alice:test:8448"}, access_token=self.bob)
        self.assertEqual(ban.code, 403)

    def test_join_by_alias(self) -> None:
        room_id = self.create_room(preset="public_chat", room_alias_name="hall")
        channel = self.make_request("POST", f"{V3}/join/%23hall:test:8448", {}, access_token=self.bob)
        self.assertEqual((channel.code, channel.json_body.get("room_id")), (200, room_id))
        self.assertEqual(self.make_request("POST", f"{V3}/join/%23nohall:test:8448", {}, access_token=self.bob).code, 404)


class StateAndRedactionTests(RoomsTestCase):
    def test_put_state_needs_power(self) -> None:
        room_id = self.create_room(preset="public_chat")
        self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob)
        ok = self.make_request("PUT", f"{V3}/rooms/{room_id}/state/m.room.topic", {"topic": "t"}, access_token=self.alice)
        self.assertEqual(ok.code, 200)
        no = self.make_request("PUT", f"{V3}/rooms/{room_id}/state/m.room.topic/", {"topic": "t"}, access_token=self.bob)
        self.assertEqual(no.code, 403)

    def test_redaction_of_own_and_others_events(self) -> None:
        room_id = self.create_room(preset="public_chat")
        self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob)
        mine = self.send(room_id, {"body": "oops"}, self.bob).json_body["event_id"]
        theirs = self.send(room_id, {"body": "alice says"}, self.alice).json_body["event_id"]
        own = self.make_request("PUT", f"{V3}/rooms/{room_id}/redact/{mine}/r1", {"reason": "typo"}, access_token=self.bob)
        self.assertEqual(own.code, 200, own.json_body)
        other = self.make_request("PUT", f"{V3}/rooms/{room_id}/redact/{theirs}/r2", {}, access_token=self.bob)
        self.assertEqual(other.code, 403)
        stored = self.get_success(self.hs.rooms.events.get_event(mine))
        self.assertEqual(stored.redacted_by, own.json_body["event_id"])


class ProfileAndDeactivationTests(RoomsTestCase):
    def member_content(self, room_id: str, user_id: str) -> dict[str, Any]:
        head = self.get_success(self.hs.rooms.creator.get_head(room_id))
        events = self.get_success(self.hs.rooms.creator.get_state_events(head.state, [("m.room.member", user_id)]))
        return dict(events[("m.room.member", user_id)].content)

    def test_displayname_change_updates_joined_rooms(self) -> None:
        """A profile change sends a new m.room.member event into every joined room."""
        room_a, room_b = self.create_room(), self.create_room()
        channel = self.make_request("PUT", f"{V3}/profile/@alice:test:8448/displayname", {"displayname": "Alice A."},
                                    access_token=self.alice)
        self.assertEqual(channel.code, 200)
        for room_id in (room_a, room_b):
            content = self.member_content(room_id, "@alice:test:8448")
            self.assertEqual((content["membership"], content["displayname"]), ("join", "Alice A."))
        self.make_request("DELETE", f"{V3}/profile/@alice:test:8448/displayname", access_token=self.alice)
        self.assertNotIn("displayname", self.member_content(room_a, "@alice:test:8448"))

    def test_new_joins_carry_the_profile(self) -> None:
        self.make_request("PUT", f"{V3}/profile/@bob:test:8448/displayname", {"displayname": "Bobby"}, access_token=self.bob)
        room_id = self.create_room(preset="public_chat")
        self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob)
        self.assertEqual(self.member_content(room_id, "@bob:test:8448")["displayname"], "Bobby")

    def test_deactivation_leaves_every_room(self) -> None:
        """A deactivated account leaves its rooms (and declines its invites)."""
        joined = self.create_room(preset="public_chat")
        self.make_request("POST", f"{V3}/join/{joined}", {}, access_token=self.bob)
        invited = self.create_room(invite=["@bob:test:8448"])
        auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": "p4ssw0rd-long"}
        channel = self.make_request("POST", f"{V3}/account/deactivate", {"auth": auth}, access_token=self.bob)
        self.assertEqual(channel.code, 200, channel.json_body)
        for room_id in (joined, invited):
            self.assertEqual(self.member_content(room_id, "@bob:test:8448")["membership"], "leave")


class LinearOrderTests(RoomsTestCase):
    def test_concurrent_sends_keep_one_linear_order(self) -> None:
        """Concurrent sends from two users in one room: no event lost, one chain, strictly increasing depth."""
        room_id = self.create_room(preset="public_chat")
        self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob)
        # Make persisting slow (after the event was built on the room's head), so all 30 requests are
        # inside send() at once and only the room's input queue keeps them from building on one head.
        persister = self.hs.rooms.persister
        real_persist = persister.persist

        async def slow_persist(*args: Any) -> Any:
            await deferLater(self.reactor, 0.01, lambda: None)
            return await real_persist(*args)

        persister.persist = slow_persist  # type: ignore[method-assign]
        channels = []
        for i in range(30):
            token = self.alice if i % 2 else self.bob
            channels.append(make_request(
                self.reactor, self.site, "PUT", f"{V3}/rooms/{room_id}/send/m.room.message/c{i}",
                {"msgtype": "m.text", "body": f"m{i}"}, token, await_result=False,
            ))
        self.pump(1)
        self.assertEqual([c.code for c in channels], [200] * 30)
        sent = {c.json_body["event_id"] for c in channels}
        head = self.get_success(self.hs.rooms.creator.get_head(room_id))

        def chain_txn(txn: Any) -> list[Any]:
            txn.execute("SELECT event_id, depth, stream_ordering FROM events WHERE room_nid = ? ORDER BY stream_ordering",
                        (head.room.room_nid,))
            return txn.fetchall()  # type: ignore[no-any-return]

        rows = self.get_success(self.hs.pool.run_read("chain", chain_txn))
        self.assertTrue(sent <= {r[0] for r in rows})
        depths = [r[1] for r in rows]
        self.assertEqual(depths, sorted(set(depths)))  # strictly increasing: a single chain
        events = self.get_success(self.hs.rooms.events.get_events([r[0] for r in rows]))
        for previous, current in itertools.pairwise(rows):
            self.assertEqual(list(events[current[0]].event.prev_event_ids), [previous[0]])
        self.assertEqual(head.extremities, (rows[-1][0],))


class PersisterHookTests(RoomsTestCase):
    def test_in_txn_hook_runs_inside_the_transaction(self) -> None:
        """A failing in-transaction hook aborts the event: nothing is stored, the client gets 500."""
        room_id = self.create_room()
        seen: list[str] = []
        self.hs.rooms.persister.in_txn_hooks.append(lambda txn, event, stream, room_nid: seen.append(event.type))
        self.assertEqual(self.send(room_id, {"body": "a"}, self.alice, txn="h1").code, 200)
        self.assertEqual(seen, ["m.room.message"])

        def broken(txn: Any, event: Any, stream: int, room_nid: int) -> None:
            raise RuntimeError("index failure")

        self.hs.rooms.persister.in_txn_hooks.append(broken)
        before = self.room_events(room_id)
        self.assertEqual(self.send(room_id, {"body": "b"}, self.alice, txn="h2").code, 500)
        self.assertEqual(self.room_events(room_id), before)
        self.hs.rooms.persister.in_txn_hooks.remove(broken)
        self.assertEqual(self.send(room_id, {"body": "c"}, self.alice, txn="h3").code, 200)


class ConcurrentCreateTests(RoomsTestCase):
    def test_identical_concurrent_creations_all_succeed(self) -> None:
        """Ten identical createRoom requests in flight at once (same user, same millisecond) get ten rooms."""
        real_get_room = self.hs.rooms.rooms.get_room

        async def slow_get_room(room_id: str) -> Any:
            await deferLater(self.reactor, 0.01, lambda: None)
            return await real_get_room(room_id)

        self.hs.rooms.rooms.get_room = slow_get_room  # type: ignore[method-assign]
        channels = [
            make_request(self.reactor, self.site, "POST", f"{V3}/createRoom", {}, self.alice, await_result=False)
            for _ in range(10)
        ]
        self.pump(2)
        self.assertEqual([c.code for c in channels], [200] * 10, [c.json_body for c in channels if c.code != 200])
        self.assertEqual(len({c.json_body["room_id"] for c in channels}), 10)
