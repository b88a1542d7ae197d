"""Room aliases, canonical alias checks and the published room directory (both databases)."""

from __future__ import annotations

import unittest
import urllib.parse
from typing import Any

from homeserver.rooms.directory import MAX_PAGE_SIZE, parse_since_token
from sc_proto.errors import MatrixError
from tests.homeserver.test_rooms_core import V3, RoomsTestCase


def enc(alias: str) -> str:
    return urllib.parse.quote(alias, safe=":")


class DirectoryTestCase(RoomsTestCase):
    def put_alias(self, alias: str, room_id: Any, token: str | None = None) -> Any:
        return self.make_request(
            "PUT", f"{V3}/directory/room/{enc(alias)}", {"room_id": room_id}, access_token=token or self.alice
        )

    def join(self, room_id: str, token: str) -> None:
        channel = self.make_request("POST", f"{V3}/join/{room_id}", {}, access_token=token)
        self.assertEqual(channel.code, 200, channel.json_body)

    def state(self, room_id: str, etype: str, content: Any, token: str | None = None) -> Any:
        return self.make_request("PUT", f"{V3}/rooms/{room_id}/state/{etype}", content, access_token=token or self.alice)

    def current(self, room_id: str, etype: str) -> dict[str, Any] | None:
        head = self.get_success(self.hs.rooms.creator.get_head(room_id))
        assert head is not None
        events = self.get_success(self.hs.rooms.creator.get_state_events(head.state, [(etype, "")]))
        event = events.get((etype, ""))
        return None if event is None else dict(event.content)


class AliasTests(DirectoryTestCase):
    def test_create_resolve_delete(self) -> None:
        """PUT creates an alias, GET resolves it to {room_id, servers}, DELETE removes it (then 404)."""
        room_id = self.create_room()
        self.assertEqual(self.put_alias("#cats:test:8448", room_id).code, 200)
        got = self.make_request("GET", f"{V3}/directory/room/{enc('#cats:test:8448')}")
        self.assertEqual(got.code, 200, got.json_body)
        self.assertEqual(got.json_body, {"room_id": room_id, "servers": ["test:8448"]})
        self.assertEqual(self.make_request("DELETE", f"{V3}/directory/room/{enc('#cats:test:8448')}", access_token=self.alice).code, 200)
        gone = self.make_request("GET", f"{V3}/directory/room/{enc('#cats:test:8448')}")
        self.assertEqual((gone.code, gone.json_body["errcode"]), (404, "M_NOT_FOUND"))
        again = self.make_request("DELETE", f"{V3}/directory/room/{enc('#cats:test:8448')}", access_token=self.alice)
        self.assertEqual(again.code, 404)

    def test_existing_alias_is_409(self) -> None:
        """Creating an alias that exists is 409 M_UNKNOWN, even for the same room."""
        room_id = self.create_room()
        self.assertEqual(self.put_alias("#dup:test:8448", room_id).code, 200)
        channel = self.put_alias("#dup:test:8448", room_id)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (409, "M_UNKNOWN"))

    def test_bad_aliases_and_room_ids(self) -> None:
        """Malformed aliases, other servers' aliases and bad room IDs are 400; unknown rooms 404."""
        room_id = self.create_room()
        for alias in ("nohash:test", "#nodomain", "#:test:8448", "#a:bad domain", "#" + "x" * 300 + ":test"):
            channel = self.put_alias(alias, room_id)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"), alias)
        other = self.put_alias("#cats:elsewhere.org", room_id)
        self.assertEqual((other.code, other.json_body["errcode"]), (400, "M_INVALID_PARAM"))
        for bad in ("not-a-room", 5, None):
            self.assertEqual(self.put_alias("#x:test:8448", bad).code, 400, bad)
        self.assertEqual(self.put_alias("#x:test:8448", "!unknown:test:8448").code, 404)
        body = self.make_request("PUT", f"{V3}/directory/room/{enc('#x:test:8448')}", [1], access_token=self.alice)
        self.assertEqual(body.code, 400)
        self.assertEqual(self.make_request("GET", f"{V3}/directory/room/{enc('bad')}").code, 400)

    def test_remote_alias_lookup_is_404(self) -> None:
        """Other servers' aliases cannot be resolved without federation: 404."""
        channel = self.make_request("GET", f"{V3}/directory/room/{enc('#x:elsewhere.org')}")
        self.assertEqual(channel.code, 404)

    def test_non_member_cannot_create(self) -> None:
        """Only joined members (or admins) point aliases at a room."""
        room_id = self.create_room()
        channel = self.put_alias("#squat:test:8448", room_id, self.bob)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))
        self.register_user("root", admin=True)
        root = self.login("root")["access_token"]
        self.assertEqual(self.put_alias("#byadmin:test:8448", room_id, root).code, 200)

    def test_requires_auth(self) -> None:
        room_id = self.create_room()
        channel = self.make_request("PUT", f"{V3}/directory/room/{enc('#a:test:8448')}", {"room_id": room_id})
        self.assertEqual(channel.code, 401)
        self.assertEqual(self.make_request("DELETE", f"{V3}/directory/room/{enc('#a:test:8448')}").code, 401)

    def test_delete_permissions(self) -> None:
        """The creator, users with canonical-alias power and admins may delete; other members may not."""
        room_id = self.create_room(preset="public_chat")
        self.join(room_id, self.bob)
        self.register_user("carol")
        carol = self.login("carol")["access_token"]
        self.join(room_id, carol)
        self.assertEqual(self.put_alias("#bobs:test:8448", room_id, self.bob).code, 200)
        self.assertEqual(self.put_alias("#alices:test:8448", room_id).code, 200)
        self.assertEqual(self.put_alias("#alices2:test:8448", room_id).code, 200)
        denied = self.make_request("DELETE", f"{V3}/directory/room/{enc('#alices:test:8448')}", access_token=carol)
        self.assertEqual((denied.code, denied.json_body["errcode"]), (403, "M_FORBIDDEN"))
        # bob created his alias; alice has power over the canonical alias; the admin may do anything.
        self.assertEqual(self.make_request("DELETE", f"{V3}/directory/room/{enc('#bobs:test:8448')}", access_token=self.bob).code, 200)
        self.assertEqual(self.make_request("DELETE", f"{V3}/directory/room/{enc('#alices:test:8448')}", access_token=self.alice).code, 200)
        self.register_user("root", admin=True)
        root = self.login("root")["access_token"]
        self.assertEqual(self.make_request("DELETE", f"{V3}/directory/room/{enc('#alices2:test:8448')}", access_token=root).code, 200)

    def test_delete_removes_alias_from_canonical_alias_event(self) -> None:
        """Deleting an alias drops it from m.room.canonical_alias (alias and alt_aliases)."""
        room_id = self.create_room(room_alias_name="main")
        self.assertEqual(self.put_alias("#alt:test:8448", room_id).code, 200)
        ok = self.state(room_id, "m.room.canonical_alias", {"alias": "#main:test:8448", "alt_aliases": ["#alt:test:8448"]})
        self.assertEqual(ok.code, 200, ok.json_body)
        self.make_request("DELETE", f"{V3}/directory/room/{enc('#alt:test:8448')}", access_token=self.alice)
        self.assertEqual(self.current(room_id, "m.room.canonical_alias"), {"alias": "#main:test:8448"})
        self.make_request("DELETE", f"{V3}/directory/room/{enc('#main:test:8448')}", access_token=self.alice)
        self.assertEqual(self.current(room_id, "m.room.canonical_alias"), {})

    def test_delete_by_creator_without_power_still_succeeds(self) -> None:
        """An alias creator without canonical-alias power deletes it; the event stays as it was."""
        room_id = self.create_room(preset="public_chat")
        self.join(room_id, self.bob)
        self.assertEqual(self.put_alias("#bobs:test:8448", room_id, self.bob).code, 200)
        self.assertEqual(self.state(room_id, "m.room.canonical_alias", {"alt_aliases": ["#bobs:test:8448"]}).code, 200)
        channel = self.make_request("DELETE", f"{V3}/directory/room/{enc('#bobs:test:8448')}", access_token=self.bob)
        self.assertEqual(channel.code, 200)
        self.assertEqual(self.current(room_id, "m.room.canonical_alias"), {"alt_aliases": ["#bobs:test:8448"]})

    def test_room_aliases_listing(self) -> None:
        """GET /rooms/{id}/aliases lists local aliases to members; others get 403 unless world_readable."""
        room_id = self.create_room(room_alias_name="one")
        self.put_alias("#two:test:8448", room_id)
        channel = self.make_request("GET", f"{V3}/rooms/{room_id}/aliases", access_token=self.alice)
        self.assertEqual(channel.json_body, {"aliases": ["#one:test:8448", "#two:test:8448"]})
        denied = self.make_request("GET", f"{V3}/rooms/{room_id}/aliases", access_token=self.bob)
        self.assertEqual((denied.code, denied.json_body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertEqual(self.make_request("GET", f"{V3}/rooms/!nope:test:8448/aliases", access_token=self.bob).code, 403)
        self.assertEqual(self.make_request("GET", f"{V3}/rooms/bad/aliases", access_token=self.bob).code, 400)
        self.state(room_id, "m.room.history_visibility", {"history_visibility": "world_readable"})
        allowed = self.make_request("GET", f"{V3}/rooms/{room_id}/aliases", access_token=self.bob)
        self.assertEqual(allowed.code, 200)


class CanonicalAliasTests(DirectoryTestCase):
    def test_aliases_must_point_at_the_room(self) -> None:
        """m.room.canonical_alias naming an alias of another room (or none) is 400 M_BAD_ALIAS."""
        room_id = self.create_room(room_alias_name="here")
        other = self.create_room(room_alias_name="there")
        self.assertNotEqual(room_id, other)
        for content in ({"alias": "#there:test:8448"}, {"alt_aliases": ["#here:test:8448", "#missing:test:8448"]},
                        {"alias": "#far:elsewhere.org"}):
            channel = self.state(room_id, "m.room.canonical_alias", content)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_BAD_ALIAS"), content)
        self.assertEqual(self.current(room_id, "m.room.canonical_alias"), {"alias": "#here:test:8448"})

    def test_malformed_aliases_are_invalid_param(self) -> None:
        room_id = self.create_room(room_alias_name="here")
        for content in ({"alias": "nohash"}, {"alias": 5}, {"alt_aliases": "#here:test:8448"}, {"alt_aliases": [None]}):
            channel = self.state(room_id, "m.room.canonical_alias", content)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"), content)

    def test_valid_and_empty_contents_are_accepted(self) -> None:
        room_id = self.create_room(room_alias_name="here")
        self.put_alias("#also:test:8448", room_id)
        for content in ({"alias": "#here:test:8448", "alt_aliases": ["#also:test:8448"]}, {}, {"alias": None}, {"alias": ""}):
            self.assertEqual(self.state(room_id, "m.room.canonical_alias", content).code, 200, content)


class VisibilityTests(DirectoryTestCase):
    def test_public_creation_is_listed(self) -> None:
        """createRoom with visibility public appears in /publicRooms and reports 'public'."""
        room_id = self.create_room(visibility="public", name="Hall", topic="Chat", room_alias_name="hall")
        private = self.create_room(name="Secret")
        self.assertEqual(self.make_request("GET", f"{V3}/directory/list/room/{room_id}").json_body, {"visibility": "public"})
        self.assertEqual(self.make_request("GET", f"{V3}/directory/list/room/{private}").json_body, {"visibility": "private"})
        body = self.make_request("GET", f"{V3}/publicRooms").json_body
        self.assertEqual(body["total_room_count_estimate"], 1)
        self.assertEqual(body["chunk"], [{
            "room_id": room_id, "name": "Hall", "topic": "Chat", "canonical_alias": "#hall:test:8448",
            "num_joined_members": 1, "world_readable": False, "guest_can_join": False, "join_rule": "public",
        }])
        self.assertNotIn("next_batch", body)
        self.assertNotIn("prev_batch", body)

    def test_publish_and_unpublish(self) -> None:
        room_id = self.create_room()
        url = f"{V3}/directory/list/room/{room_id}"
        self.assertEqual(self.make_request("PUT", url, {"visibility": "public"}, access_token=self.alice).code, 200)
        self.assertEqual(self.make_request("GET", url).json_body["visibility"], "public")
        self.assertEqual(len(self.make_request("GET", f"{V3}/publicRooms").json_body["chunk"]), 1)
        self.assertEqual(self.make_request("PUT", url, {"visibility": "private"}, access_token=self.alice).code, 200)
        self.assertEqual(self.make_request("GET", f"{V3}/publicRooms").json_body["chunk"], [])
        # An empty body means public (the spec's default).
        self.assertEqual(self.make_request("PUT", url, {}, access_token=self.alice).code, 200)
        self.assertEqual(self.make_request("GET", url).json_body["visibility"], "public")

    def test_only_powerful_members_or_admins_publish(self) -> None:
        """Members without canonical-alias power and non-members get 403; admins may publish."""
        room_id = self.create_room(preset="public_chat")
        url = f"{V3}/directory/list/room/{room_id}"
        self.register_user("carol")
        carol = self.login("carol")["access_token"]
        self.assertEqual(self.make_request("PUT", url, {"visibility": "public"}, access_token=carol).code, 403)
        self.join(room_id, self.bob)
        channel = self.make_request("PUT", url, {"visibility": "public"}, access_token=self.bob)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertEqual(self.make_request("GET", url).json_body["visibility"], "private")
        self.register_user("root", admin=True)
        root = self.login("root")["access_token"]
        self.assertEqual(self.make_request("PUT", url, {"visibility": "public"}, access_token=root).code, 200)
        self.assertEqual(self.make_request("PUT", url, {"visibility": "public"}).code, 401)

    def test_unknown_room_and_bad_input(self) -> None:
        self.assertEqual(self.make_request("GET", f"{V3}/directory/list/room/!nope:test:8448").code, 404)
        put = self.make_request("PUT", f"{V3}/directory/list/room/!nope:test:8448", {"visibility": "public"}, access_token=self.alice)
        self.assertEqual(put.code, 404)
        self.assertEqual(self.make_request("GET", f"{V3}/directory/list/room/nope").code, 400)
        room_id = self.create_room()
        for body in ({"visibility": "secret"}, {"visibility": 1}):
            channel = self.make_request("PUT", f"{V3}/directory/list/room/{room_id}", body, access_token=self.alice)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"))


class PublicRoomsTests(DirectoryTestCase):
    def make_rooms(self, count: int) -> list[str]:
        rooms = [self.create_room(visibility="public", name=f"Room {i}") for i in range(count)]
        return rooms

    def test_order_by_members_then_pagination_both_ways(self) -> None:
        """Largest rooms first; next_batch/prev_batch walk the list without repeats or gaps."""
        rooms = self.make_rooms(5)
        self.join(rooms[3], self.bob)  # rooms[3] has 2 members and comes first
        expected = [rooms[3], rooms[0], rooms[1], rooms[2], rooms[4]]
        seen: list[str] = []
        since: str | None = None
        pages = []
        while True:
            url = f"{V3}/publicRooms?limit=2" + (f"&since={since}" if since else "")
            body = self.make_request("GET", url).json_body
            pages.append(body)
            seen += [r["room_id"] for r in body["chunk"]]
            self.assertEqual(body["total_room_count_estimate"], 5)
            since = body.get("next_batch")
            if since is None:
                break
        self.assertEqual(seen, expected)
        self.assertEqual([len(p["chunk"]) for p in pages], [2, 2, 1])
        self.assertNotIn("prev_batch", pages[0])
        back = self.make_request("GET", f"{V3}/publicRooms?limit=2&since={pages[2]['prev_batch']}").json_body
        self.assertEqual([r["room_id"] for r in back["chunk"]], expected[2:4])
        first = self.make_request("GET", f"{V3}/publicRooms?limit=2&since={back['prev_batch']}").json_body
        self.assertEqual([r["room_id"] for r in first["chunk"]], expected[0:2])
        self.assertNotIn("prev_batch", first)
        self.assertIn("next_batch", first)

    def test_filter_by_search_term_and_room_type(self) -> None:
        """generic_search_term matches name, topic and aliases (case-insensitive); room_types filters."""
        self.create_room(visibility="public", name="Cheese Lovers")
        topical = self.create_room(visibility="public", topic="all about CHEESE")
        aliased = self.create_room(visibility="public", room_alias_name="cheddar")
        space = self.create_room(visibility="public", name="A space", creation_content={"type": "m.space"})
        self.create_room(visibility="public", name="Unrelated")

        def search(body: dict[str, Any]) -> list[dict[str, Any]]:
            channel = self.make_request("POST", f"{V3}/publicRooms", body, access_token=self.bob)
            self.assertEqual(channel.code, 200, channel.json_body)
            return list(channel.json_body["chunk"])

        names = {r.get("name") for r in search({"filter": {"generic_search_term": "cheese"}})}
        self.assertEqual(names, {"Cheese Lovers", None})
        ids = {r["room_id"] for r in search({"filter": {"generic_search_term": "cheese"}})}
        self.assertIn(topical, ids)
        self.assertEqual([r["room_id"] for r in search({"filter": {"generic_search_term": "CHEDDAR"}})], [aliased])
        spaces = search({"filter": {"room_types": ["m.space"]}})
        self.assertEqual([(r["room_id"], r["room_type"]) for r in spaces], [(space, "m.space")])
        untyped = search({"filter": {"room_types": [None]}})
        self.assertEqual(len(untyped), 4)
        self.assertEqual(len(search({})), 5)
        self.assertEqual(search({"third_party_instance_id": "irc"}), [])

    def test_filtered_pagination(self) -> None:
        """A filter applies across pages: every matching room is seen exactly once."""
        matching = [self.create_room(visibility="public", name=f"match {i}") for i in range(4)]
        for i in range(3):
            self.create_room(visibility="public", name=f"other {i}")
        seen: list[str] = []
        since = None
        for _ in range(5):
            body: dict[str, Any] = {"limit": 3, "filter": {"generic_search_term": "match"}}
            if since:
                body["since"] = since
            page = self.make_request("POST", f"{V3}/publicRooms", body, access_token=self.bob).json_body
            seen += [r["room_id"] for r in page["chunk"]]
            since = page.get("next_batch")
            if since is None:
                break
        self.assertEqual(sorted(seen), sorted(matching))

    def test_entry_fields(self) -> None:
        """world_readable, guest_can_join, avatar_url, join_rule and room_type come from state."""
        room_id = self.create_room(
            visibility="public", preset="private_chat", creation_content={"type": "m.space"},
            initial_state=[
                {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}},
                {"type": "m.room.avatar", "content": {"url": "mxc://test:8448/abc"}},
            ],
        )
        entry = self.make_request("GET", f"{V3}/publicRooms").json_body["chunk"][0]
        self.assertEqual(entry["room_id"], room_id)
        self.assertTrue(entry["world_readable"])
        self.assertTrue(entry["guest_can_join"])
        self.assertEqual(entry["avatar_url"], "mxc://test:8448/abc")
        self.assertEqual(entry["join_rule"], "invite")
        self.assertEqual(entry["room_type"], "m.space")

    def test_redacted_name_is_not_listed(self) -> None:
        room_id = self.create_room(visibility="public", name="Rude name")
        name_id = self.state(room_id, "m.room.name", {"name": "Rude name"}).json_body["event_id"]
        self.make_request("PUT", f"{V3}/rooms/{room_id}/redact/{name_id}/r1", {}, access_token=self.alice)
        entry = self.make_request("GET", f"{V3}/publicRooms").json_body["chunk"][0]
        self.assertNotIn("name", entry)

    def test_bad_requests(self) -> None:
        """Malformed tokens, limits, filters and other servers are 400; POST needs auth."""
        self.make_rooms(1)
        for query in ("since=garbage", "since=n1", "limit=-1", "limit=abc", "server=elsewhere.org"):
            self.assertEqual(self.make_request("GET", f"{V3}/publicRooms?{query}").code, 400, query)
        self.assertEqual(self.make_request("GET", f"{V3}/publicRooms?server=test:8448").code, 200)
        for body in ({"limit": "5"}, {"filter": []}, {"filter": {"generic_search_term": 5}},
                     {"filter": {"room_types": "m.space"}}, {"filter": {"room_types": [5]}}, {"since": "zzz"}):
            channel = self.make_request("POST", f"{V3}/publicRooms", body, access_token=self.bob)
            self.assertEqual(channel.code, 400, body)
        self.assertEqual(self.make_request("POST", f"{V3}/publicRooms", {}).code, 401)

    def test_limit_is_capped(self) -> None:
        self.make_rooms(2)
        body = self.make_request("GET", f"{V3}/publicRooms?limit={10**9}").json_body
        self.assertEqual(len(body["chunk"]), 2)
        self.assertGreaterEqual(MAX_PAGE_SIZE, 2)

    def test_rooms_everyone_left_are_not_listed(self) -> None:
        room_id = self.create_room(visibility="public")
        self.make_request("POST", f"{V3}/rooms/{room_id}/leave", {}, access_token=self.alice)
        self.assertEqual(self.make_request("GET", f"{V3}/publicRooms").json_body["chunk"], [])

    def test_one_state_query_per_page(self) -> None:
        """Describing a page of rooms reads their state in one batch, not one query per room."""
        self.make_rooms(6)
        calls: list[int] = []
        store = self.hs.room_directory._directory
        original = store.get_directory_state_ids

        async def counting(nids: Any) -> Any:
            calls.append(len(nids))
            return await original(nids)

        store.get_directory_state_ids = counting  # type: ignore[method-assign]  # spy
        body = self.make_request("GET", f"{V3}/publicRooms?limit=5").json_body
        self.assertEqual(len(body["chunk"]), 5)
        self.assertEqual(len(calls), 1)


class TokenTests(unittest.TestCase):
    def test_parse_since_token(self) -> None:
        self.assertEqual(parse_since_token("n3_17"), (True, (-3, 17)))
        self.assertEqual(parse_since_token("p0_1"), (False, (0, 1)))
        for bad in ("", "x3_1", "n_1", "n3_", "n-3_1", "n" + "9" * 40 + "_1"):
            with self.assertRaises(MatrixError):
                parse_since_token(bad)
