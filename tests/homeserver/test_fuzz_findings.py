"""Server bugs the Client-Server API fuzzer found (issue 12), each pinned by a unit test (both databases).

The inputs that found them are in ``tests/integration/fuzz_corpus/`` and are replayed against a
real server by ``tests/integration/test_fuzz_corpus.py``.
"""

from __future__ import annotations

from tests.homeserver.test_rooms_core import V3, RoomsTestCase


class JoinedMembersTests(RoomsTestCase):
    def test_unset_profile_fields_are_omitted_not_null(self) -> None:
        """Members without a display name or avatar get no such key: the spec types both as strings."""
        room_id = self.create_room()
        channel = self.make_request("GET", f"{V3}/rooms/{room_id}/joined_members", access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        member = channel.json_body["joined"]["@alice:test:8448"]
        self.assertNotIn(None, member.values())
        self.assertNotIn("avatar_url", member)

    def test_set_profile_fields_are_strings(self) -> None:
        """A display name set before joining is reported as a string; a non-string value is dropped."""
        room_id = self.create_room(preset="public_chat")
        self.make_request("PUT", f"{V3}/profile/@bob:test:8448/displayname", {"displayname": "Bob"},
                          access_token=self.bob)
        self.assertEqual(self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=self.bob).code, 200)
        channel = self.make_request("GET", f"{V3}/rooms/{room_id}/joined_members", access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body["joined"]["@bob:test:8448"], {"display_name": "Bob"})
        odd = {"membership": "join", "displayname": 5, "avatar_url": ["x"]}
        put = self.make_request("PUT", f"{V3}/rooms/{room_id}/state/m.room.member/@alice:test:8448", odd,
                                access_token=self.alice)
        if put.code == 200:  # the server may refuse such a member event; if stored, it must not leak
            channel = self.make_request("GET", f"{V3}/rooms/{room_id}/joined_members", access_token=self.alice)
            self.assertEqual(channel.json_body["joined"]["@alice:test:8448"], {})
