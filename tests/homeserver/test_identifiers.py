"""Identifiers with port-bearing and IPv6-literal server names, end to end (issue 10).

Every scenario runs three times: with the suite's ``test:8448``, with ``localhost:8448`` (what a new
user types) and with the IPv6 literal ``[::1]:8448``. Splitting a user ID at its last colon gets all
three wrong, so each scenario fails against the hand-split code it replaced.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.homeserver.server_case import BASE_CONFIG, TEST_SERVER_NAME, FullHomeserverTestCase

V3 = "/_matrix/client/v3"


class _IdentifierScenarios(FullHomeserverTestCase):
    """The scenarios; subclasses pick the server name (``server_name``)."""

    server_name = TEST_SERVER_NAME
    skip = "abstract: run through the subclasses"

    def default_config(self) -> dict[str, Any]:
        config = {k: dict(v) for k, v in BASE_CONFIG.items()}
        config["server"]["server_name"] = self.server_name
        return config

    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.alice_id = self.register_user("alice")
        self.bob_id = self.register_user("bob")
        self.alice = self.login("alice")["access_token"]
        self.bob = self.login("bob")["access_token"]

    def uid(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def post(self, path: str, token: str | None, body: Any = None) -> Any:
        return self.make_request("POST", f"{V3}{path}", body if body is not None else {}, access_token=token)

    def create_room(self, **body: Any) -> str:
        channel = self.post("/createRoom", self.alice, body)
        self.assertEqual(channel.code, 200, channel.json_body)
        room_id: str = channel.json_body["room_id"]
        return room_id

    def member_content(self, room_id: str, user_id: str) -> dict[str, Any] | None:
        head = self.get_success(self.hs.rooms.creator.get_head(room_id))
        assert head is not None
        key = ("m.room.member", user_id)
        event = self.get_success(self.hs.rooms.creator.get_state_events(head.state, [key])).get(key)
        return None if event is None else {"membership": event.membership, **event.content}

    # ------------------------------------------------------------------ scenarios

    def test_user_ids_are_built_with_the_full_server_name(self) -> None:
        """Registration and direct creation give ``@alice:<server name>``, port and brackets included."""
        self.assertEqual(self.alice_id, self.uid("alice"))
        channel = self.post("/register", None, {"username": "carol", "password": "p4ssw0rd-long",
                                                "auth": {"type": "m.login.dummy"}})
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body["user_id"], self.uid("carol"))

    def test_login_with_a_bare_localpart(self) -> None:
        """``identifier.user: "alice"`` logs in as ``@alice:<server name>``; the full ID works too."""
        for user in ("alice", self.uid("alice")):
            body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
                    "password": "p4ssw0rd-long"}
            channel = self.post("/login", None, body)
            self.assertEqual(channel.code, 200, channel.json_body)
            self.assertEqual(channel.json_body["user_id"], self.uid("alice"))

    def test_create_room_inviting_a_local_user(self) -> None:
        """``invite`` in createRoom names a local user: the invite is sent, not refused as remote."""
        room_id = self.create_room(invite=[self.bob_id])
        self.assertEqual((self.member_content(room_id, self.bob_id) or {}).get("membership"), "invite")
        self.assertEqual(self.post(f"/join/{room_id}", self.bob).code, 200)
        self.assertEqual((self.member_content(room_id, self.bob_id) or {}).get("membership"), "join")

    def test_restricted_join_names_a_local_authoriser(self) -> None:
        """A restricted join finds alice (local, may invite) as ``join_authorised_via_users_server``."""
        space = self.create_room(preset="public_chat")
        self.assertEqual(self.post(f"/join/{space}", self.bob).code, 200)
        allow = [{"type": "m.room_membership", "room_id": space}]
        room_id = self.create_room(room_version="10", preset="private_chat", initial_state=[
            {"type": "m.room.join_rules", "content": {"join_rule": "restricted", "allow": allow}}])
        channel = self.post(f"/join/{room_id}", self.bob)
        self.assertEqual(channel.code, 200, channel.json_body)
        content = self.member_content(room_id, self.bob_id) or {}
        self.assertEqual(content.get("join_authorised_via_users_server"), self.alice_id)

    def test_alias_create_and_resolve(self) -> None:
        """An alias of ours resolves, and ``servers`` names our server once, whole."""
        room_id = self.create_room(room_alias_name="hall", preset="public_chat")
        alias = f"#hall:{self.server_name}"
        self.assertEqual(self.post(f"/join/{room_id}", self.bob).code, 200)  # a second local member adds no server
        channel = self.make_request("GET", f"{V3}/directory/room/{quote(alias)}")
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body, {"room_id": room_id, "servers": [self.server_name]})
        extra = f"#extra:{self.server_name}"
        channel = self.make_request("PUT", f"{V3}/directory/room/{quote(extra)}", {"room_id": room_id},
                                    access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        channel = self.post(f"/join/{quote(extra)}", self.bob)
        self.assertEqual((channel.code, channel.json_body.get("room_id")), (200, room_id))

    def test_profile_get_and_set(self) -> None:
        """Our users' profiles are read and written through the path user ID."""
        path = f"{V3}/profile/{quote(self.alice_id)}/displayname"
        channel = self.make_request("PUT", path, {"displayname": "Alice"}, access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.make_request("GET", path).json_body, {"displayname": "Alice"})

    def test_register_user_refuses_other_servers(self) -> None:
        """``register-user "@bob:other.org"`` (``Homeserver.create_user``) fails instead of creating a foreign user."""
        failure = self.get_failure(self.hs.create_user("@zed:other.org", "p4ssw0rd-long"), ValueError)
        self.assertIn("not a user of this server", str(failure.value))
        self.assertIsNone(self.get_success(self.hs.stores.users.find_user_case_insensitive("@zed:other.org")))
        self.assertEqual(self.get_success(self.hs.create_user(self.uid("zed"), "p4ssw0rd-long")), self.uid("zed"))

    def test_admin_put_of_a_remote_user_is_400(self) -> None:
        """``PUT /_synapse/admin/v2/users/@bob:other.org`` answers 400 like Synapse and creates nothing."""
        self.register_user("root", admin=True)
        token = self.login("root")["access_token"]
        channel = self.make_request("PUT", f"/_synapse/admin/v2/users/{quote('@zed:other.org')}",
                                    {"password": "p4ssw0rd-long"}, access_token=token)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"))
        self.assertEqual(channel.json_body["error"], "This endpoint can only be used with local users")


class PortBearingTestNameTests(_IdentifierScenarios):
    """The suite's own name, ``test:8448``."""

    skip = None
    server_name = TEST_SERVER_NAME


class LocalhostWithPortTests(_IdentifierScenarios):
    """``localhost:8448``, as a new user configures it."""

    skip = None
    server_name = "localhost:8448"


class IPv6LiteralTests(_IdentifierScenarios):
    """An IPv6 literal with a port, ``[::1]:8448``: every colon inside the brackets is the host's."""

    skip = None
    server_name = "[::1]:8448"
