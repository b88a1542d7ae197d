"""NUL characters in client strings get one answer on both databases (issue 12).

PostgreSQL text cannot hold NUL, SQLite can: every string that would reach a text column with a NUL
is refused with 400 ``M_INVALID_PARAM`` on both engines (nothing is written), while NUL inside event
content is stored as JSON (escaped) and read back intact. These tests run on SQLite in ``tox -e py``
and on PostgreSQL in ``tox -e postgres``; before the rule, the first test answered 500 on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from tests.homeserver.test_rooms_core import V3, RoomsTestCase


class NulStringTests(RoomsTestCase):
    """NUL handling, identical on SQLite and PostgreSQL."""

    def count_events(self, room_id: str) -> int:
        return len(self.room_events(room_id))

    def assert_invalid_param(self, channel: Any) -> None:
        self.assertEqual(channel.code, 400, channel.json_body)
        self.assertEqual(channel.json_body["errcode"], "M_INVALID_PARAM")

    def test_state_key_with_nul_is_refused(self) -> None:
        """PUT /state/m.custom/a%00b answers 400 M_INVALID_PARAM and stores nothing; the room still works."""
        room_id = self.create_room()
        before = self.count_events(room_id)
        channel = self.make_request(
            "PUT", f"{V3}/rooms/{room_id}/state/m.custom/a%00b", {"x": 1}, access_token=self.alice
        )
        self.assert_invalid_param(channel)
        self.assertEqual(self.count_events(room_id), before)
        channel = self.make_request("GET", f"{V3}/rooms/{room_id}/state/m.custom/a%00b", access_token=self.alice)
        self.assert_invalid_param(channel)
        self.assertEqual(self.send(room_id, {"msgtype": "m.text", "body": "after"}, self.alice).code, 200)
        self.assertEqual(self.count_events(room_id), before + 1)

    def test_event_type_and_txn_id_with_nul_are_refused(self) -> None:
        """A NUL in the event type or the transaction ID of a send is refused, nothing stored."""
        room_id = self.create_room()
        before = self.count_events(room_id)
        body = {"msgtype": "m.text", "body": "hi"}
        self.assert_invalid_param(self.send(room_id, body, self.alice, etype="m.te%00st"))
        self.assert_invalid_param(self.send(room_id, body, self.alice, txn="t%00x"))
        self.assertEqual(self.count_events(room_id), before)

    def test_nul_in_content_is_stored_intact(self) -> None:
        """A message body holding NUL is accepted and read back exactly (event JSON escapes it)."""
        room_id = self.create_room()
        channel = self.send(room_id, {"msgtype": "m.text", "body": "a\u0000b"}, self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        event_id = channel.json_body["event_id"]
        got = self.make_request("GET", f"{V3}/rooms/{room_id}/event/{event_id}", access_token=self.alice)
        self.assertEqual(got.code, 200, got.json_body)
        self.assertEqual(got.json_body["content"]["body"], "a\u0000b")

    def test_reaction_key_with_nul_is_stored_not_aggregated(self) -> None:
        """An annotation whose key holds NUL is stored (200) but not indexed as a relation."""
        room_id = self.create_room()
        target = self.send(room_id, {"msgtype": "m.text", "body": "x"}, self.alice).json_body["event_id"]
        reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "\u0000"}}
        channel = self.send(room_id, reaction, self.alice, txn="r1", etype="m.reaction")
        self.assertEqual(channel.code, 200, channel.json_body)
        rel = self.make_request("GET", f"{V1}/rooms/{room_id}/relations/{target}", access_token=self.alice)
        self.assertEqual(rel.code, 200, rel.json_body)
        self.assertEqual(rel.json_body["chunk"], [])

    def test_profile_and_account_data_with_nul_are_refused(self) -> None:
        """Display names, account data types and device names with NUL are refused alike."""
        whoami = self.make_request("GET", f"{V3}/account/whoami", access_token=self.alice).json_body
        user_id = whoami["user_id"]
        self.assert_invalid_param(
            self.make_request("PUT", f"{V3}/profile/{user_id}/displayname", {"displayname": "a\u0000b"},
                              access_token=self.alice)
        )
        self.assert_invalid_param(
            self.make_request("PUT", f"{V3}/user/{user_id}/account_data/m.x%00y", {"a": 1}, access_token=self.alice)
        )
        self.assert_invalid_param(
            self.make_request("PUT", f"{V3}/devices/{whoami['device_id']}", {"display_name": "p\u0000c"},
                              access_token=self.alice)
        )
        profile = self.make_request("GET", f"{V3}/profile/{user_id}", access_token=self.alice)
        self.assertNotIn("\u0000", str(profile.json_body))


V1 = "/_matrix/client/v1"


class PathParameterLengthTests(RoomsTestCase):
    """Client-chosen identifiers in paths are bounded (issue 12): 255 bytes, like the spec's identifiers."""

    def test_overlong_txn_id_is_refused(self) -> None:
        """A 5,000-character transaction ID is refused with 400 M_INVALID_PARAM and nothing is stored."""
        room_id = self.create_room()
        before = len(self.room_events(room_id))
        channel = self.send(room_id, {"msgtype": "m.text", "body": "x"}, self.alice, txn="t" * 5000)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"))
        self.assertEqual(len(self.room_events(room_id)), before)

    def test_txn_id_at_the_bound_is_accepted(self) -> None:
        """255 bytes is still fine, and a retry with it returns the same event."""
        room_id = self.create_room()
        first = self.send(room_id, {"msgtype": "m.text", "body": "x"}, self.alice, txn="t" * 255)
        self.assertEqual(first.code, 200, first.json_body)
        again = self.send(room_id, {"msgtype": "m.text", "body": "x"}, self.alice, txn="t" * 255)
        self.assertEqual(again.json_body["event_id"], first.json_body["event_id"])

    def test_overlong_state_key_is_refused(self) -> None:
        """A state key over 255 bytes in the URL is refused (the spec's state_key limit)."""
        room_id = self.create_room()
        channel = self.make_request(
            "PUT", f"{V3}/rooms/{room_id}/state/m.custom/{'k' * 256}", {"x": 1}, access_token=self.alice
        )
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"))
