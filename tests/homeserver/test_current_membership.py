"""One answer to "what is this user's current membership?" (issue 10, ADR 0015), on both databases.

Every domain rule that depends on a user's current membership in a room (kick/unban preconditions,
forgetting, alias permissions, ``/joined_members``, room access, the typing/receipt checks) asks
:class:`~homeserver.rooms.state_reader.RoomStateReader`. The tests walk a user through every
membership and check that all of them give the same answer, and that they follow the reader when its
answer is forced (so a rule that computes membership by hand again fails here).
"""

from __future__ import annotations

from typing import Any
from unittest import mock

from twisted.internet.defer import ensureDeferred
from twisted.python.failure import Failure

from homeserver.ephemeral.access import get_current_member_event, require_joined
from homeserver.rooms.state_reader import RoomStateReader
from sc_proto.errors import MatrixError
from tests.homeserver.test_rooms_core import V3, RoomsTestCase

BOB = "@bob:test:8448"
MEMBERSHIPS = ("invite", "join", "leave", "ban", "knock")


class CurrentMembershipTestCase(RoomsTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.alice_id = "@alice:test:8448"
        knock_rule = {"type": "m.room.join_rules", "content": {"join_rule": "knock"}}
        self.room_id = self.create_room(room_version="11", preset="private_chat", initial_state=[knock_rule])
        self.reader = self.hs.rooms.creator.state
        self.aliases_made = 0

    def post(self, path: str, token: str, body: Any = None) -> Any:
        channel = self.make_request("POST", f"{V3}{path}", body if body is not None else {}, access_token=token)
        self.assertEqual(channel.code, 200, (path, channel.json_body))
        return channel

    def move_bob_to(self, membership: str) -> None:
        """Moves bob to ``membership`` through the client API (from any membership)."""
        current = self.get_success(self.reader.get_membership(self.room_id, BOB))
        if current == membership:
            return
        if current == "ban":
            self.post(f"/rooms/{self.room_id}/unban", self.alice, {"user_id": BOB})
        elif current in ("join", "invite", "knock") and membership in ("leave", "knock"):
            self.post(f"/rooms/{self.room_id}/kick", self.alice, {"user_id": BOB})
        if membership == "invite":
            self.post(f"/rooms/{self.room_id}/invite", self.alice, {"user_id": BOB})
        elif membership == "join":
            if self.get_success(self.reader.get_membership(self.room_id, BOB)) != "invite":
                self.post(f"/rooms/{self.room_id}/invite", self.alice, {"user_id": BOB})
            self.post(f"/join/{self.room_id}", self.bob)
        elif membership == "ban":
            self.post(f"/rooms/{self.room_id}/ban", self.alice, {"user_id": BOB})
        elif membership == "knock":
            self.post(f"/knock/{self.room_id}", self.bob)
        self.assertEqual(self.get_success(self.reader.get_membership(self.room_id, BOB)), membership)

    # ------------------------------------------------------------------ what each user of the answer says

    def answers(self) -> dict[str, Any]:
        """Bob's membership as every reader and every rule depending on it sees it right now."""
        creator = self.hs.rooms.creator
        head = self.get_success(creator.get_head(self.room_id))
        assert head is not None
        state = self.get_success(creator.get_state_events(head.state))
        member = self.get_success(self.reader.get_current_member(self.room_id, BOB))
        ephemeral = self.get_success(get_current_member_event(creator, self.room_id, BOB))
        by_store = self.get_success(self.hs.stores.rooms.get_rooms_for_user(BOB, MEMBERSHIPS))
        return {
            "reader": self.get_success(self.reader.get_membership(self.room_id, BOB)),
            "reader_event": None if member is None else member.event.membership,
            "in_loaded_state": RoomStateReader.membership_in(state, BOB),
            "ephemeral": None if ephemeral is None else ephemeral.membership,
            "store_column": by_store.get(head.room.room_nid),
            "visibility": self._room_access_membership(),
        }

    def decisions(self) -> dict[str, bool]:
        """The membership-dependent rules, each as "allowed?" (nothing is changed by asking)."""
        membership = self.hs.membership
        aliases = self.hs.aliases
        self.aliases_made += 1
        alias = f"#probe{self.aliases_made}:test:8448"
        return {
            "require_joined": self._succeeds(require_joined(self.hs.rooms.creator, self.room_id, BOB)),
            "joined_members": self._succeeds(membership.get_joined_members(BOB, self.room_id)),
            "local_aliases": self._succeeds(aliases.get_local_aliases(BOB, False, self.room_id)),
            "create_alias": self._succeeds(aliases.create_alias(BOB, False, alias, self.room_id)),
            "kick_precondition": self._succeeds(
                membership._require_membership(self.room_id, BOB, ("join", "invite", "knock"), "kick")
            ),
            "unban_precondition": self._succeeds(membership._require_membership(self.room_id, BOB, ("ban",), "unban")),
        }

    def _room_access_membership(self) -> str | None:
        try:
            access = self.get_success(self.hs.rooms.visibility.get_room_access(BOB, self.room_id))
        except Exception:  # 403: not a member and never joined; the membership is then not join
            return "refused"
        return access.membership

    def _succeeds(self, coroutine: Any) -> bool:
        results: list[Any] = []
        ensureDeferred(coroutine).addBoth(results.append)
        self.pump()
        self.assertEqual(len(results), 1)
        outcome = results[0]
        if isinstance(outcome, Failure):
            self.assertIsNotNone(outcome.check(MatrixError), outcome)
            return False
        return True


class AgreementTests(CurrentMembershipTestCase):
    def test_every_reader_gives_the_same_membership(self) -> None:
        """After invite, join, leave, ban, unban and knock, every reader answers the same membership."""
        self.assertEqual(set(self.answers().values()) - {"refused"}, {None})
        for membership in ("invite", "join", "leave", "ban", "leave", "knock", "join"):
            self.move_bob_to(membership)
            answers = self.answers()
            expected = dict.fromkeys(answers, membership)
            # Room access reports the membership, or refuses someone who is not joined and never was.
            if answers["visibility"] == "refused":
                self.assertNotIn(membership, ("join", "leave", "ban"), answers)
                expected["visibility"] = "refused"
            self.assertEqual(answers, expected, membership)

    def test_every_rule_decides_from_the_same_membership(self) -> None:
        """Kick/unban preconditions, alias rights, joined_members and the typing/receipt check agree."""
        for membership in ("invite", "join", "leave", "ban", "knock"):
            self.move_bob_to(membership)
            joined = membership == "join"
            expected = {
                "require_joined": joined,
                "joined_members": joined,
                "local_aliases": joined,
                "create_alias": joined,
                "kick_precondition": membership in ("join", "invite", "knock"),
                "unban_precondition": membership == "ban",
            }
            self.assertEqual(self.decisions(), expected, membership)

    def test_forget_follows_the_same_membership(self) -> None:
        """Forgetting is refused while invited, joined or knocking, and allowed after leave or ban."""
        for membership, allowed in (("invite", False), ("join", False), ("knock", False), ("ban", True)):
            self.move_bob_to(membership)
            self.assertEqual(self._succeeds(self.hs.membership.forget(BOB, self.room_id)), allowed, membership)
        never = self.get_failure(self.hs.membership.forget("@carol:test:8448", self.room_id), MatrixError)
        self.assertEqual(never.value.http_status, 404)


class SingleSourceTests(CurrentMembershipTestCase):
    """Forcing the reader's answer changes every rule's decision: none computes membership by hand."""

    def _forced(self, membership: str) -> Any:
        real = self.reader.get_current_member
        real_in = RoomStateReader.membership_in

        async def forced_member(room_id: str, user_id: str, head: Any = None) -> Any:
            if user_id != BOB:
                return await real(room_id, user_id, head)
            return mock.Mock(event=mock.Mock(membership=membership, content={}))

        def forced_in(state: Any, user_id: str) -> str | None:
            return membership if user_id == BOB else real_in(state, user_id)

        return mock.patch.multiple(
            self.reader, get_current_member=forced_member
        ), mock.patch.object(RoomStateReader, "membership_in", staticmethod(forced_in))

    def test_rules_follow_the_reader(self) -> None:
        """Bob is really invited; with the reader saying join (or ban) every rule acts on that."""
        self.move_bob_to("invite")
        for forced, joined in (("join", True), ("ban", False)):
            patch_member, patch_in = self._forced(forced)
            with patch_member, patch_in:
                decisions = self.decisions()
            self.assertEqual(
                decisions,
                {
                    "require_joined": joined,
                    "joined_members": joined,
                    "local_aliases": joined,
                    "create_alias": joined,
                    "kick_precondition": joined,
                    "unban_precondition": not joined,
                },
                forced,
            )
