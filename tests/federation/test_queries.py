"""Federation queries: our servlets over the real core, and the outbound queriers over a fake peer."""

from __future__ import annotations

import urllib.parse
from typing import Any

from federation.interfaces import RemoteHttpError, RemoteUnreachable
from federation.queries import (
    DIRECTORY_PATH,
    PROFILE_PATH,
    PUBLIC_ROOMS_PATH,
    RemoteDirectoryQueries,
    RemoteProfileQueries,
    RemoteRoomDirectoryQuerier,
)
from federation.query_servlets import PREFIX
from federation.sender_wiring import build_outbound, start_outbound, with_outbound_ports
from sc_proto.errors import MatrixError
from tests.federation.fakes import FakeFederationHttp, FakeRouter
from tests.homeserver.server_case import TEST_SERVER_NAME
from tests.homeserver.test_rooms_core import V3, RoomsTestCase
from tests.storage.harness import get_failure, get_success

DIRECTORY = f"{PREFIX}/query/directory"
PROFILE = f"{PREFIX}/query/profile"
PUBLIC_ROOMS = f"{PREFIX}/publicRooms"


class QueryServletTests(RoomsTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.router = FakeRouter()
        api = self.hs.api
        assert api.outbound_events is not None and api.directory is not None and api.profiles is not None
        outbound = build_outbound(TEST_SERVER_NAME, self.clock, FakeFederationHttp())
        self.get_success(
            start_outbound(outbound, TEST_SERVER_NAME, self.hs.pool, api.outbound_events, self.router, api.directory, api.profiles)
        )
        self.alias = f"#lobby:{TEST_SERVER_NAME}"
        self.room_id = self.create_room(preset="public_chat", name="Lobby", topic="chat here")
        channel = self.make_request(
            "PUT", f"{V3}/directory/room/{urllib.parse.quote(self.alias)}", {"room_id": self.room_id}, access_token=self.alice
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        self.alice_id = f"@alice:{TEST_SERVER_NAME}"
        channel = self.make_request(
            "PUT", f"{V3}/profile/{urllib.parse.quote(self.alice_id)}/displayname", {"displayname": "Alice"},
            access_token=self.alice,
        )
        self.assertEqual(channel.code, 200, channel.json_body)

    def call(self, method: str, path: str, query: dict[str, list[str]] | None = None, content: Any = None) -> Any:
        return self.get_success(self.router.request(method, path, query, content))

    def error(self, method: str, path: str, query: dict[str, list[str]] | None = None, content: Any = None) -> tuple[int, str]:
        failure = self.get_failure(self.router.request(method, path, query, content), MatrixError)
        return failure.value.http_status, failure.value.errcode.value

    def test_routes_are_authenticated(self) -> None:
        """Every query route requires X-Matrix (registered as authenticated)."""
        self.assertEqual(set(self.router.routes), {("GET", DIRECTORY), ("GET", PROFILE), ("GET", PUBLIC_ROOMS), ("POST", PUBLIC_ROOMS)})
        self.assertTrue(all(self.router.authenticated.values()))

    def test_existing_alias(self) -> None:
        """Our alias answers its room and our server first."""
        status, body = self.call("GET", DIRECTORY, {"room_alias": [self.alias]})
        self.assertEqual(status, 200)
        self.assertEqual(body, {"room_id": self.room_id, "servers": [TEST_SERVER_NAME]})

    def test_missing_foreign_and_malformed_alias(self) -> None:
        """Unknown and foreign aliases are 404; a missing or malformed parameter is 400."""
        self.assertEqual(self.error("GET", DIRECTORY, {"room_alias": [f"#nope:{TEST_SERVER_NAME}"]}), (404, "M_NOT_FOUND"))
        self.assertEqual(self.error("GET", DIRECTORY, {"room_alias": ["#lobby:elsewhere.example"]}), (404, "M_NOT_FOUND"))
        self.assertEqual(self.error("GET", DIRECTORY), (400, "M_MISSING_PARAM"))
        self.assertEqual(self.error("GET", DIRECTORY, {"room_alias": [""]}), (400, "M_INVALID_PARAM"))
        for bad in ("lobby", "#", "#no-domain", "!room:test:8448", "#a:" + "x" * 300, "#a:bad host"):
            self.assertEqual(self.error("GET", DIRECTORY, {"room_alias": [bad]}), (400, "M_INVALID_PARAM"), bad)

    def test_local_profile(self) -> None:
        """Our user's profile, whole or one field."""
        self.assertEqual(self.call("GET", PROFILE, {"user_id": [self.alice_id]}), (200, {"displayname": "Alice"}))
        self.assertEqual(
            self.call("GET", PROFILE, {"user_id": [self.alice_id], "field": ["displayname"]}), (200, {"displayname": "Alice"})
        )

    def test_unset_field_foreign_and_missing_profile(self) -> None:
        """An unset field, another server's user and an unknown user are 404."""
        self.assertEqual(self.error("GET", PROFILE, {"user_id": [self.alice_id], "field": ["avatar_url"]}), (404, "M_NOT_FOUND"))
        self.assertEqual(self.error("GET", PROFILE, {"user_id": ["@alice:elsewhere.example"]}), (404, "M_NOT_FOUND"))
        self.assertEqual(self.error("GET", PROFILE, {"user_id": [f"@nobody:{TEST_SERVER_NAME}"]}), (404, "M_NOT_FOUND"))

    def test_malformed_profile_params(self) -> None:
        """A missing or malformed user ID or field is 400, never 500."""
        self.assertEqual(self.error("GET", PROFILE), (400, "M_MISSING_PARAM"))
        for bad in ("alice", "@", "@alice", "#alice:test:8448", "@alice:bad host", "@" + "a" * 2000 + ":x"):
            status, _ = self.error("GET", PROFILE, {"user_id": [bad]})
            self.assertEqual(status, 400, bad)
        self.assertEqual(self.error("GET", PROFILE, {"user_id": [self.alice_id], "field": ["x" * 300]}), (400, "M_INVALID_PARAM"))

    def test_public_rooms(self) -> None:
        """Published rooms are listed (GET and POST with a filter); limit and since paginate."""
        channel = self.make_request("PUT", f"{V3}/directory/list/room/{self.room_id}", {"visibility": "public"}, access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        other = self.create_room(preset="public_chat", name="Other")
        channel = self.make_request("PUT", f"{V3}/directory/list/room/{other}", {"visibility": "public"}, access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        status, body = self.call("GET", PUBLIC_ROOMS)
        self.assertEqual(status, 200)
        self.assertEqual({r["room_id"] for r in body["chunk"]}, {self.room_id, other})
        status, page = self.call("GET", PUBLIC_ROOMS, {"limit": ["1"]})
        self.assertEqual(len(page["chunk"]), 1)
        status, rest = self.call("GET", PUBLIC_ROOMS, {"limit": ["1"], "since": [page["next_batch"]]})
        self.assertEqual({page["chunk"][0]["room_id"], rest["chunk"][0]["room_id"]}, {self.room_id, other})
        status, found = self.call("POST", PUBLIC_ROOMS, content={"filter": {"generic_search_term": "lobby"}})
        self.assertEqual([r["room_id"] for r in found["chunk"]], [self.room_id])
        status, everything = self.call("GET", PUBLIC_ROOMS, {"include_all_networks": ["true"]})
        self.assertEqual(len(everything["chunk"]), 2)
        self.assertEqual(self.call("GET", PUBLIC_ROOMS, {"third_party_instance_id": ["irc"]})[1]["chunk"], [])
        self.assertEqual(self.call("POST", PUBLIC_ROOMS, content={"third_party_instance_id": "irc"})[1]["chunk"], [])

    def test_malformed_public_rooms_params(self) -> None:
        """Bad limit, since, booleans, filters and bodies are 400, never 500."""
        for query in ({"limit": ["-1"]}, {"limit": ["ten"]}, {"limit": ["9" * 30]}, {"since": ["garbage"]},
                      {"include_all_networks": ["yes"]}):
            status, _ = self.error("GET", PUBLIC_ROOMS, query)
            self.assertEqual(status, 400, query)
        for content in ({"limit": "10"}, {"limit": -1}, {"limit": 1.5}, {"since": 5}, {"filter": "x"},
                        {"filter": {"generic_search_term": 5}}, {"filter": {"room_types": "m.space"}},
                        {"filter": {"room_types": [5]}}, {"include_all_networks": "true"}, {"since": "garbage"}, None, [1]):
            status, _ = self.error("POST", PUBLIC_ROOMS, content=content)
            self.assertEqual(status, 400, content)


class RemoteDirectoryTests(RoomsTestCase):
    def querier(self, answer: Any) -> tuple[RemoteDirectoryQueries, FakeFederationHttp]:
        http = FakeFederationHttp()
        http.answers[("remote.example", DIRECTORY_PATH)] = answer
        return RemoteDirectoryQueries(http), http

    def test_resolves_and_validates(self) -> None:
        """A good answer is returned with invalid and duplicate servers dropped; the alias's server is asked."""
        q, http = self.querier({"room_id": "!r:remote.example", "servers": ["remote.example", "a.example:8448", "bad host", 5, "a.example:8448"]})
        self.assertEqual(get_success(q.resolve_alias("#x:remote.example")), ("!r:remote.example", ["remote.example", "a.example:8448"]))
        self.assertEqual(http.requests, [("GET", "remote.example", DIRECTORY_PATH, {"room_alias": ["#x:remote.example"]})])

    def test_empty_servers_fall_back_to_the_alias_server(self) -> None:
        """An answer without usable servers still names the server that knows the alias."""
        q, _ = self.querier({"room_id": "!r:remote.example", "servers": []})
        self.assertEqual(get_success(q.resolve_alias("#x:remote.example")), ("!r:remote.example", ["remote.example"]))

    def test_errors(self) -> None:
        """404 stays 404; garbage answers, 5xx and unreachable servers are 502; a bad alias is 400."""
        cases = [
            (RemoteHttpError("remote.example", 404, {}), 404),
            (RemoteHttpError("remote.example", 500, {}), 502),
            (RemoteUnreachable("remote.example", "refused"), 502),
            ({"room_id": "not a room", "servers": []}, 502),
            ({"room_id": "!r:remote.example", "servers": "remote.example"}, 502),
            ({"servers": []}, 502),
            (lambda _args: ["not", "an", "object"], 502),
        ]
        for answer, status in cases:
            q, _ = self.querier(answer)
            self.assertEqual(get_failure(q.resolve_alias("#x:remote.example"), MatrixError).http_status, status, answer)  # type: ignore[attr-defined]
        q, _ = self.querier({})
        self.assertEqual(get_failure(q.resolve_alias("nope"), MatrixError).http_status, 400)  # type: ignore[attr-defined]


class RemoteProfileTests(RoomsTestCase):
    def querier(self, answer: Any) -> tuple[RemoteProfileQueries, FakeFederationHttp]:
        http = FakeFederationHttp()
        http.answers[("remote.example", PROFILE_PATH)] = answer
        return RemoteProfileQueries(http), http

    def test_profile_is_filtered(self) -> None:
        """Well-formed fields are kept; a non-mxc avatar, a non-string name and oversized values are dropped."""
        q, http = self.querier({"displayname": 5, "avatar_url": "https://x", "m.tz": "Europe/Paris", "long": "x" * 5000, "extra": True})
        self.assertEqual(get_success(q.get_profile("@bob:remote.example")), {"m.tz": "Europe/Paris", "extra": True})
        q, http = self.querier({"displayname": "Bob", "avatar_url": "mxc://remote.example/a"})
        self.assertEqual(get_success(q.get_profile("@bob:remote.example", "displayname")), {"displayname": "Bob"})
        self.assertEqual(http.requests[-1][3], {"user_id": ["@bob:remote.example"], "field": ["displayname"]})

    def test_errors(self) -> None:
        """404 and 403 pass through; other failures are 502; a bad user ID is 400."""
        for answer, status in [
            (RemoteHttpError("remote.example", 404, {}), 404),
            (RemoteHttpError("remote.example", 403, {}), 403),
            (RemoteHttpError("remote.example", 502, {}), 502),
            (RemoteUnreachable("remote.example", "timeout"), 502),
        ]:
            q, _ = self.querier(answer)
            self.assertEqual(get_failure(q.get_profile("@bob:remote.example"), MatrixError).http_status, status)  # type: ignore[attr-defined]
        q, _ = self.querier({})
        self.assertEqual(get_failure(q.get_profile("bob"), MatrixError).http_status, 400)  # type: ignore[attr-defined]


class RemotePublicRoomsTests(RoomsTestCase):
    def test_get_and_post_and_validation(self) -> None:
        """GET without a search term, POST with one; malformed entries are dropped; garbage is 502."""
        http = FakeFederationHttp()
        answer = {
            "chunk": [
                {"room_id": "!a:remote.example", "num_joined_members": 3, "name": "A"},
                {"room_id": "nope", "num_joined_members": 1},
                {"room_id": "!b:remote.example", "num_joined_members": True},
                "garbage",
            ],
            "next_batch": "n1",
            "total_room_count_estimate": 3,
        }
        http.answers[("remote.example", PUBLIC_ROOMS_PATH)] = answer
        q = RemoteRoomDirectoryQuerier(http)
        result = get_success(q.get_public_rooms("remote.example", limit=5))
        self.assertEqual(result, {"chunk": [answer["chunk"][0]], "next_batch": "n1", "total_room_count_estimate": 3})  # type: ignore[index]
        self.assertEqual(http.requests[-1][0:3], ("GET", "remote.example", PUBLIC_ROOMS_PATH))
        get_success(q.get_public_rooms("remote.example", search_term="a"))
        self.assertEqual(http.requests[-1][0], "POST")
        self.assertEqual(http.requests[-1][3]["filter"], {"generic_search_term": "a"})
        http.answers[("remote.example", PUBLIC_ROOMS_PATH)] = {"chunk": "x"}
        self.assertEqual(get_failure(q.get_public_rooms("remote.example"), MatrixError).http_status, 502)  # type: ignore[attr-defined]


class ClientRemoteDirectoryTests(RoomsTestCase):
    """The client API reaches other servers through our queriers once they are the ports."""

    def make_ports(self) -> Any:
        from homeserver.api.local import local_only_ports

        self.http = FakeFederationHttp()
        outbound = build_outbound(TEST_SERVER_NAME, _NoClock(), self.http)  # type: ignore[arg-type]
        return with_outbound_ports(local_only_ports(), outbound)

    def test_public_rooms_of_another_server(self) -> None:
        """GET and POST /publicRooms?server= ask that server (POST with the filter) and relay its checked answer."""
        answer = {"chunk": [{"room_id": "!a:remote.example", "num_joined_members": 2}], "total_room_count_estimate": 1}
        self.http.answers[("remote.example", PUBLIC_ROOMS_PATH)] = answer
        channel = self.make_request("GET", f"{V3}/publicRooms?server=remote.example&limit=5")
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body, answer)
        self.assertEqual(self.http.requests[-1][3]["limit"], ["5"])
        body = {"filter": {"generic_search_term": "x", "room_types": [None]}, "limit": 3}
        channel = self.make_request("POST", f"{V3}/publicRooms?server=remote.example", body, access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.http.requests[-1][3]["filter"], {"generic_search_term": "x", "room_types": [None]})

    def test_unreachable_or_malformed_server(self) -> None:
        """An unknown server is the peer's 404, an unreachable one 502, a malformed name 400."""
        self.assertEqual(self.make_request("GET", f"{V3}/publicRooms?server=remote.example").code, 404)
        self.http.answers[("down.example", PUBLIC_ROOMS_PATH)] = RemoteUnreachable("down.example", "refused")
        self.assertEqual(self.make_request("GET", f"{V3}/publicRooms?server=down.example").code, 502)
        self.assertEqual(self.make_request("GET", f"{V3}/publicRooms?server=bad%20name").code, 400)
        self.assertEqual(self.make_request("GET", f"{V3}/publicRooms?server={TEST_SERVER_NAME}").code, 200)

    def test_remote_alias_and_profile_through_the_ports(self) -> None:
        """GET /directory/room/{alias} and /profile/{userId} of another server use the queriers."""
        self.http.answers[("remote.example", DIRECTORY_PATH)] = {"room_id": "!r:remote.example", "servers": ["remote.example"]}
        channel = self.make_request("GET", f"{V3}/directory/room/{urllib.parse.quote('#x:remote.example')}")
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body, {"room_id": "!r:remote.example", "servers": ["remote.example"]})
        self.http.answers[("remote.example", PROFILE_PATH)] = {"displayname": "Bob", "avatar_url": 7}
        channel = self.make_request("GET", f"{V3}/profile/{urllib.parse.quote('@bob:remote.example')}", access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body, {"displayname": "Bob"})


class _NoClock:
    """The queriers need no clock; the sender only reads the start time."""

    def time_msec(self) -> int:
        return 0
