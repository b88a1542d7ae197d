"""The rooms core's entry points for the dances (``hs.api.room_federation``), driven directly."""

from __future__ import annotations

from typing import Any

from homeserver.api.services import PDUStatus
from sc_proto.crypto.keys import get_key_id
from sc_proto.errors import MatrixError
from sc_proto.events.builder import finalise_event
from sc_proto.events.model import Event
from sc_proto.federation.requests import fill_membership_template
from sc_proto.room_versions import get_room_version
from tests.federation.harness import FederationTestCase


class CoreEntryPointTests(FederationTestCase):
    def setUp(self) -> None:
        super().setUp()
        _, self.bob_token = self.user_on(self.b, "bob")
        self.room_id = self.create_room(self.b, self.bob_token, preset="public_chat", room_version="11")
        self.alice = self.a.user("alice")
        self.rv = get_room_version("11")
        self.b_api: Any = self.b.hs.api.room_federation
        self.a_api: Any = self.a.hs.api.room_federation

    def _join_and_state(self) -> tuple[Event, list[Event], list[Event]]:
        """A join of alice built on B's template, and B's current state and auth chain (as A gets them)."""
        template = self.get_success(self.b_api.make_membership_template(self.room_id, self.alice, "join"))
        filled = fill_membership_template(
            template.event, room_id=self.room_id, user_id=self.alice, membership="join", origin=self.a.name,
            origin_server_ts=self.clock.time_msec(),
        )
        join = finalise_event(filled, self.rv, self.a.name, get_key_id(self.a.signing_key), self.a.signing_key)
        head = self.get_success(self.b.hs.rooms.creator.get_head(self.room_id))
        last = head.extremities[-1]
        state, auth = self.get_success(self.b_api.get_state_and_auth_chain(self.room_id, last))
        # ``get_state_and_auth_chain`` gives the state *before* ``last``; add ``last`` itself.
        last_event = self.get_success(self.b.hs.rooms.room_input.get_pdu(last))
        events = [Event.from_pdu(p, self.rv) for p in state]
        if last_event.state_key is not None:
            events = [e for e in events if (e.type, e.state_key) != (last_event.type, last_event.state_key)]
            events.append(last_event)
        return join, events, [Event.from_pdu(p, self.rv) for p in auth]

    def test_persist_join_and_duplicate(self) -> None:
        """The join becomes the room's head with the given state; a second call is DUPLICATE."""
        join, state, auth = self._join_and_state()
        outcome = self.get_success(self.a_api.persist_join(self.b.name, "11", auth, state, join))
        self.assertEqual(outcome.status, PDUStatus.ACCEPTED)
        head = self.get_success(self.a.hs.rooms.creator.get_head(self.room_id))
        self.assertEqual(head.extremities, (join.event_id,))
        self.assertEqual(head.state[("m.room.member", self.alice)], join.event_id)
        self.assertIn(("m.room.create", ""), head.state)
        again = self.get_success(self.a_api.persist_join(self.b.name, "11", auth, state, join))
        self.assertEqual(again.status, PDUStatus.DUPLICATE)

    def test_persist_join_without_create_event(self) -> None:
        join, state, auth = self._join_and_state()
        state = [e for e in state if e.type != "m.room.create"]
        failure = self.get_failure(self.a_api.persist_join(self.b.name, "11", auth, state, join), MatrixError)
        self.assertEqual(failure.value.http_status, 502)
        self.assertIsNone(self.get_success(self.a.hs.rooms.rooms.get_room(self.room_id)))

    def test_persist_join_the_state_does_not_allow(self) -> None:
        """A state whose join rule is invite does not authorise the join: 502, nothing stored."""
        join, state, auth = self._join_and_state()
        rules = next(e for e in state if e.type == "m.room.join_rules")
        forged = Event({**dict(rules.pdu), "content": {"join_rule": "invite"}}, self.rv, rules.event_id)
        state = [forged if e is rules else e for e in state]
        failure = self.get_failure(self.a_api.persist_join(self.b.name, "11", auth, state, join), MatrixError)
        self.assertEqual(failure.value.http_status, 502)
        self.assertIsNone(self.get_success(self.a.hs.rooms.rooms.get_room(self.room_id)))

    def test_out_of_band_membership_is_idempotent_and_not_in_room(self) -> None:
        """An out-of-band invite makes a stub room: we are not 'in' it and serve no templates."""
        pdu = {
            "type": "m.room.member", "room_id": "!stub:c.test", "sender": "@carol:c.test", "state_key": self.alice,
            "content": {"membership": "invite"}, "origin_server_ts": 1, "depth": 3, "prev_events": [],
            "auth_events": [],
        }
        invite = finalise_event(pdu, self.rv, "c.test", get_key_id(self.a.signing_key), self.a.signing_key)
        stripped = [{"type": "m.room.name", "state_key": "", "content": {"name": "Stub"}, "sender": "@carol:c.test"}]
        first = self.get_success(self.a_api.store_out_of_band_membership(invite, stripped))
        second = self.get_success(self.a_api.store_out_of_band_membership(invite, stripped))
        self.assertEqual(first.stream_ordering, second.stream_ordering)
        self.assertEqual(self.membership_on(self.a, "!stub:c.test", self.alice), "invite")
        self.assertFalse(self.get_success(self.a_api.is_server_in_room("!stub:c.test")))
        self.assertEqual(self.get_success(self.a_api.get_room_version("!stub:c.test")), "11")
        failure = self.get_failure(
            self.a_api.make_membership_template("!stub:c.test", "@dave:c.test", "join"), MatrixError
        )
        self.assertEqual(failure.value.http_status, 404)

    def test_template_refused_by_the_rules(self) -> None:
        """make_* templates are checked: a leave for someone with no membership is 403."""
        failure = self.get_failure(self.b_api.make_membership_template(self.room_id, self.alice, "leave"), MatrixError)
        self.assertEqual(failure.value.http_status, 403)
