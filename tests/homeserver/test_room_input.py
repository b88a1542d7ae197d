"""The room input: received PDUs join the room's queue (issue 10; docs/adr/0006-room-input.md).

A fake remote server ``remote:8448`` with its own signing key builds PDUs with ``sc_proto``; the tests
call :meth:`RoomInput.receive_pdu` as the federation adapter would after checking signatures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred

from homeserver.api.services import PDUStatus
from homeserver.events.persister import PersistContext
from homeserver.rooms.state_reader import RoomHead
from sc_proto.auth.rules import auth_types_for_event
from sc_proto.crypto.keys import generate_signing_key, get_key_id
from sc_proto.errors import MatrixError
from sc_proto.events.builder import build_event, finalise_event
from sc_proto.events.model import Event, StateKey
from tests.homeserver.server_case import TEST_SERVER_NAME
from tests.homeserver.test_rooms_core import V3, RoomsTestCase

REMOTE = "remote:8448"
RITA = f"@rita:{REMOTE}"
ALICE = f"@alice:{TEST_SERVER_NAME}"


class RoomInputTestCase(RoomsTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.remote_key = generate_signing_key("r1")
        self.room_id = self.create_room(preset="public_chat")
        self.input = self.hs.rooms.creator.input

    def head(self) -> RoomHead:
        head = self.get_success(self.hs.rooms.creator.get_head(self.room_id))
        assert head is not None
        return head

    def state_after(self, event_id: str) -> dict[StateKey, str]:
        stored = self.get_success(self.hs.rooms.events.get_event(event_id))
        assert stored is not None and stored.state_group_after is not None
        return dict(self.get_success(self.hs.rooms.state_groups.get_state(stored.state_group_after)))

    def remote_event(
        self,
        etype: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        prevs: list[str] | None = None,
        state: Mapping[StateKey, str] | None = None,
        sender: str = RITA,
        ts: int | None = None,
    ) -> Event:
        """A PDU from ``remote:8448``: auth events picked from ``state`` (default: the current state)."""
        head = self.head()
        prevs = list(head.extremities) if prevs is None else prevs
        state = head.state if state is None else state
        fields: dict[str, Any] = {"type": etype, "sender": sender, "content": dict(content)}
        if state_key is not None:
            fields["state_key"] = state_key
        auth = [state[k] for k in auth_types_for_event(fields, head.version) if k in state]
        known = self.get_success(self.hs.rooms.events.get_events(prevs))
        depth = max((s.depth for s in known.values()), default=head.max_depth) + 1
        pdu = build_event(
            room_version=head.version, room_id=self.room_id, type=etype, sender=sender, content=content,
            state_key=state_key, prev_event_ids=prevs, auth_event_ids=auth, depth=depth,
            origin_server_ts=ts if ts is not None else int(self.clock.time() * 1000), origin=REMOTE,
        )
        return finalise_event(pdu, head.version, REMOTE, get_key_id(self.remote_key), self.remote_key)

    def receive(self, event: Event, *, outlier: bool = False) -> Any:
        return self.get_success(self.input.receive_pdu(REMOTE, event, outlier=outlier))

    def join_rita(self) -> str:
        join = self.remote_event("m.room.member", {"membership": "join"}, state_key=RITA)
        self.assertEqual(self.receive(join).status, PDUStatus.ACCEPTED)
        return join.event_id

    def message_ids(self) -> list[str]:
        channel = self.make_request("GET", f"{V3}/rooms/{self.room_id}/messages?dir=b&limit=100", access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        return [e["event_id"] for e in channel.json_body["chunk"]]

    def sync_timeline_ids(self) -> list[str]:
        channel = self.make_request("GET", f"{V3}/sync", access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        room = channel.json_body["rooms"]["join"][self.room_id]
        return [e["event_id"] for e in room["timeline"]["events"]]

    def db_current_state(self) -> dict[StateKey, str]:
        return dict(self.get_success(self.hs.rooms.rooms.get_current_state_ids(self.head().room.room_nid)))

    def db_extremities(self) -> set[str]:
        return set(self.get_success(self.hs.rooms.rooms.get_forward_extremities(self.head().room.room_nid)))


class ReceivePduTests(RoomInputTestCase):
    def test_accepted_events_reach_local_clients(self) -> None:
        """A remote join and message are accepted, become the extremity and appear in /sync and /messages."""
        join = self.join_rita()
        msg = self.remote_event("m.room.message", {"msgtype": "m.text", "body": "hi"})
        outcome = self.receive(msg)
        self.assertEqual(outcome.status, PDUStatus.ACCEPTED)
        self.assertIsNotNone(outcome.stream_ordering)
        self.assertEqual(self.db_extremities(), {msg.event_id})
        self.assertEqual(self.db_current_state()[("m.room.member", RITA)], join)
        self.assertIn(msg.event_id, self.message_ids())
        self.assertIn(msg.event_id, self.sync_timeline_ids())
        self.assertEqual(self.get_success(self.input.get_pdu(msg.event_id)), msg)
        state_ids = self.get_success(self.input.get_state_ids_at(self.room_id, msg.event_id))
        self.assertIn(join, state_ids or [])

    def test_duplicate(self) -> None:
        """A PDU received twice is stored once."""
        self.join_rita()
        msg = self.remote_event("m.room.message", {"msgtype": "m.text", "body": "hi"})
        self.assertEqual(self.receive(msg).status, PDUStatus.ACCEPTED)
        self.assertEqual(self.receive(msg).status, PDUStatus.DUPLICATE)
        self.assertEqual(self.message_ids().count(msg.event_id), 1)

    def test_unknown_room_is_404(self) -> None:
        """A PDU for a room we do not know (not its create event) is refused with 404."""
        msg = self.remote_event("m.room.message", {"msgtype": "m.text", "body": "hi"})
        other = Event(dict(msg.pdu, room_id=f"!nowhere:{REMOTE}"), msg.room_version, "$other")
        failure = self.get_failure(self.input.receive_pdu(REMOTE, other), MatrixError)
        self.assertEqual(failure.value.http_status, 404)

    def test_rejected_when_sender_not_joined(self) -> None:
        """A message from a remote user who never joined fails its own auth events: stored rejected, never shown."""
        before = self.db_extremities()
        msg = self.remote_event("m.room.message", {"msgtype": "m.text", "body": "let me in"})
        outcome = self.receive(msg)
        self.assertEqual(outcome.status, PDUStatus.REJECTED)
        self.assertIsNotNone(outcome.reason)
        stored = self.get_success(self.hs.rooms.events.get_event(msg.event_id))
        assert stored is not None
        self.assertIsNotNone(stored.rejected_reason)
        self.assertEqual(self.db_extremities(), before)
        self.assertNotIn(msg.event_id, self.message_ids())
        self.assertNotIn(msg.event_id, self.sync_timeline_ids())

    def test_soft_failed_when_banned_in_current_state(self) -> None:
        """A message authorised at its own state (sender joined) but not the current one (banned) soft-fails."""
        join = self.join_rita()
        at_join = self.state_after(join)
        ban = self.make_request("POST", f"{V3}/rooms/{self.room_id}/ban", {"user_id": RITA}, access_token=self.alice)
        self.assertEqual(ban.code, 200, ban.json_body)
        current = self.db_current_state()
        msg = self.remote_event("m.room.message", {"msgtype": "m.text", "body": "sneaky"}, prevs=[join], state=at_join)
        outcome = self.receive(msg)
        self.assertEqual(outcome.status, PDUStatus.SOFT_FAILED)
        self.assertNotIn(msg.event_id, self.db_extremities())
        self.assertEqual(self.db_current_state(), current)
        self.assertNotIn(msg.event_id, self.message_ids())
        self.assertNotIn(msg.event_id, self.sync_timeline_ids())

    def test_outlier_when_prev_events_missing(self) -> None:
        """A PDU whose prev events nobody can supply is stored as an outlier: no state, never shown."""
        self.join_rita()
        before = self.db_extremities()
        msg = self.remote_event("m.room.message", {"msgtype": "m.text", "body": "?"}, prevs=["$missing-prev"])
        self.assertEqual(self.receive(msg).status, PDUStatus.OUTLIER)
        stored = self.get_success(self.hs.rooms.events.get_event(msg.event_id))
        assert stored is not None
        self.assertTrue(stored.outlier)
        self.assertIsNone(stored.state_group_after)
        self.assertEqual(self.db_extremities(), before)
        self.assertIsNone(self.get_success(self.input.get_state_ids_at(self.room_id, msg.event_id)))
        self.assertNotIn(msg.event_id, self.message_ids())
        self.assertNotIn(msg.event_id, self.sync_timeline_ids())

    def test_outlier_on_request(self) -> None:
        """``outlier=True`` stores the event without state even when its prevs are known."""
        self.join_rita()
        msg = self.remote_event("m.room.message", {"msgtype": "m.text", "body": "auth chain"})
        self.assertEqual(self.receive(msg, outlier=True).status, PDUStatus.OUTLIER)
        self.assertNotIn(msg.event_id, self.db_extremities())
        self.assertNotIn(msg.event_id, self.message_ids())


class ForkAndMergeTests(RoomInputTestCase):
    def _fork(self) -> tuple[str, str]:
        """Rita (PL 100) and Alice set the topic concurrently on the same parent; Rita's is older."""
        self.join_rita()
        pl = self.make_request("GET", f"{V3}/rooms/{self.room_id}/state/m.room.power_levels/", access_token=self.alice)
        content = dict(pl.json_body)
        content["users"] = dict(content.get("users", {}), **{RITA: 100})
        put = self.make_request("PUT", f"{V3}/rooms/{self.room_id}/state/m.room.power_levels/", content, access_token=self.alice)
        self.assertEqual(put.code, 200, put.json_body)
        parent = put.json_body["event_id"]
        at_parent = self.state_after(parent)
        old_ts = int(self.clock.time() * 1000)
        self.reactor.advance(10)
        local = self.make_request("PUT", f"{V3}/rooms/{self.room_id}/state/m.room.topic/", {"topic": "alice"}, access_token=self.alice)
        self.assertEqual(local.code, 200, local.json_body)
        remote = self.remote_event("m.room.topic", {"topic": "rita"}, state_key="", prevs=[parent], state=at_parent, ts=old_ts)
        self.assertEqual(self.receive(remote).status, PDUStatus.ACCEPTED)
        return local.json_body["event_id"], remote.event_id

    def test_fork_resolves_current_state(self) -> None:
        """A received fork leaves two extremities and current_state = the resolution (the later topic wins),
        not the received event's own key."""
        local, remote = self._fork()
        self.assertEqual(self.db_extremities(), {local, remote})
        self.assertEqual(self.db_current_state()[("m.room.topic", "")], local)
        self.assertEqual(self.db_current_state(), dict(self.head().state))

    def test_local_event_merges_the_fork(self) -> None:
        """The next local event has both extremities as prevs and leaves one; current state stays resolved."""
        local, remote = self._fork()
        resolved = self.db_current_state()
        channel = self.send(self.room_id, {"msgtype": "m.text", "body": "merge"}, self.alice, txn="merge")
        self.assertEqual(channel.code, 200, channel.json_body)
        merge = channel.json_body["event_id"]
        stored = self.get_success(self.hs.rooms.events.get_event(merge))
        assert stored is not None
        self.assertEqual(set(stored.event.prev_event_ids), {local, remote})
        self.assertEqual(self.db_extremities(), {merge})
        self.assertEqual(self.db_current_state(), resolved)
        self.assertEqual(self.state_after(merge), resolved)

    def test_remote_merge_event(self) -> None:
        """A received event whose prevs are both extremities is accepted and becomes the only extremity."""
        local, remote = self._fork()
        msg = self.remote_event("m.room.message", {"msgtype": "m.text", "body": "merged"}, prevs=[local, remote])
        self.assertEqual(self.receive(msg).status, PDUStatus.ACCEPTED)
        self.assertEqual(self.db_extremities(), {msg.event_id})
        self.assertEqual(self.db_current_state()[("m.room.topic", "")], local)
        self.assertIn(msg.event_id, self.message_ids())


class CurrentStateDiffTests(RoomInputTestCase):
    def test_merge_state_replaces_other_keys(self) -> None:
        """A (merge) event whose state before differs from the old current state in another key than its
        own leaves current_state equal to that state, with one delta row per changed key."""
        old_topic = self.make_request("PUT", f"{V3}/rooms/{self.room_id}/state/m.room.topic/", {"topic": "a"}, access_token=self.alice)
        new_topic = self.make_request("PUT", f"{V3}/rooms/{self.room_id}/state/m.room.topic/", {"topic": "b"}, access_token=self.alice)
        head = self.head()
        resolved = dict(head.state)
        resolved[("m.room.topic", "")] = old_topic.json_body["event_id"]
        event, _ = self.get_success(
            self.hs.rooms.creator.builder.build(head, ALICE, "m.room.message", {"msgtype": "m.text", "body": "m"}, None, None)
        )
        persisted = self.get_success(self.hs.rooms.persister.persist(head.room, event, PersistContext(None, resolved, current_state_before=head.state)))
        self.assertEqual(self.db_current_state(), resolved)

        def deltas_txn(txn: Any) -> list[Any]:
            txn.execute(
                "SELECT type, state_key, event_id, prev_event_id FROM current_state_deltas WHERE stream_id = ?",
                (persisted.stored.stream_ordering,),
            )
            return list(txn.fetchall())

        rows = self.get_success(self.hs.pool.run_read("deltas", deltas_txn))
        self.assertEqual(
            [tuple(r) for r in rows],
            [("m.room.topic", "", old_topic.json_body["event_id"], new_topic.json_body["event_id"])],
        )


class OneQueueTests(RoomInputTestCase):
    def test_local_send_and_received_pdu_share_the_room_queue(self) -> None:
        """A received PDU waits for the room's turn like a local event: queued behind a local send, it
        is persisted after it (the guard: receive_pdu must not bypass the queue)."""
        join = self.join_rita()
        remote = self.remote_event("m.room.message", {"msgtype": "m.text", "body": "remote"}, prevs=[join])
        gate: Deferred[None] = Deferred()

        async def hold() -> None:
            async with self.hs.rooms.creator.queue.queue(self.room_id):
                await gate

        held = ensureDeferred(hold())
        local = ensureDeferred(
            self.hs.rooms.creator.send(self.room_id, ALICE, "m.room.message", {"msgtype": "m.text", "body": "local"})
        )
        received = ensureDeferred(self.input.receive_pdu(REMOTE, remote))
        self.pump()
        self.assertFalse(local.called)
        self.assertFalse(received.called)
        gate.callback(None)
        self.get_success(held)
        local_stored = self.get_success(local)
        outcome = self.get_success(received)
        self.assertEqual(outcome.status, PDUStatus.ACCEPTED)
        assert outcome.stream_ordering is not None
        self.assertLess(local_stored.stream_ordering, outcome.stream_ordering)
        self.assertEqual(self.db_extremities(), {local_stored.event_id, remote.event_id})


class CurrentMembershipTests(RoomInputTestCase):
    def test_membership_follows_received_and_local_events(self) -> None:
        """The one current-membership helper reads the head: None before, join after the PDU, ban after a ban."""
        reader = self.hs.rooms.creator.state
        self.assertIsNone(self.get_success(reader.get_membership(self.room_id, RITA)))
        self.join_rita()
        self.assertEqual(self.get_success(reader.get_membership(self.room_id, RITA)), "join")
        ban = self.make_request("POST", f"{V3}/rooms/{self.room_id}/ban", {"user_id": RITA}, access_token=self.alice)
        self.assertEqual(ban.code, 200, ban.json_body)
        self.assertEqual(self.get_success(reader.get_membership(self.room_id, RITA)), "ban")
        self.assertIsNone(self.get_success(reader.get_membership(f"!unknown:{TEST_SERVER_NAME}", RITA)))


class _FakeFetcher:
    """The remote server's answer to ``/get_missing_events``: the PDUs it was given."""

    def __init__(self, pdus: list[dict[str, Any]]) -> None:
        self.pdus = pdus
        self.asked: list[tuple[str, list[str]]] = []

    async def get_missing_events(
        self, destination: str, room_id: str, earliest: Any, latest: Any, limit: int
    ) -> list[dict[str, Any]]:
        self.asked.append((destination, list(latest)))
        return self.pdus

    async def get_event_auth(self, destination: str, room_id: str, event_id: str) -> list[dict[str, Any]]:
        return []

    async def get_event(self, destination: str, event_id: str) -> dict[str, Any] | None:
        return None


class MissingPrevEventsTests(RoomInputTestCase):
    def test_missing_prev_is_fetched_from_the_origin(self) -> None:
        """A PDU whose prev event we lack triggers get_missing_events; both are then accepted in order."""
        self.join_rita()
        first = self.remote_event("m.room.message", {"msgtype": "m.text", "body": "one"})
        second = self.remote_event("m.room.message", {"msgtype": "m.text", "body": "two"}, prevs=[first.event_id])
        fetcher = _FakeFetcher([dict(first.pdu)])
        self.input._fetcher = fetcher
        self.assertEqual(self.receive(second).status, PDUStatus.ACCEPTED)
        self.assertEqual(fetcher.asked, [(REMOTE, [second.event_id])])
        self.assertEqual(self.db_extremities(), {second.event_id})
        ids = self.message_ids()
        self.assertLess(ids.index(second.event_id), ids.index(first.event_id))  # newest first
