"""Remote branches of the core go through the outward ports (``homeserver.api.ports``, ADR 0009).

Each test injects recording fake ports into a real homeserver and checks that a remote case calls
its port with the right arguments and relays the port's answer or error to the client; the
local-only defaults keep the answers clients got before federation.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from homeserver.api.ports import RemoteJoinResult, RemotePorts
from sc_proto.errors import Codes, MatrixError
from tests.homeserver.fake_ports import FakePorts
from tests.homeserver.server_case import TEST_SERVER_NAME
from tests.homeserver.test_keys import KeysTestCase
from tests.homeserver.test_rooms_core import V3, RoomsTestCase

REMOTE = "remote.example"
CAROL = f"@carol:{REMOTE}"
ALICE = f"@alice:{TEST_SERVER_NAME}"
BOB = f"@bob:{TEST_SERVER_NAME}"


def enc(value: str) -> str:
    return urllib.parse.quote(value, safe=":")


class PortsTestCase(RoomsTestCase):
    """alice and bob on a homeserver whose outward ports are recording fakes (``self.fake``)."""

    def make_ports(self) -> RemotePorts:
        self.fake = FakePorts()
        return self.fake.ports()

    def member_event(self, room_id: str, user_id: str) -> Any:
        head = self.get_success(self.hs.rooms.creator.get_head(room_id))
        assert head is not None
        events = self.get_success(self.hs.rooms.creator.get_state_events(head.state, [("m.room.member", user_id)]))
        return events.get(("m.room.member", user_id))


class RemoteInviteTests(PortsTestCase):
    def test_invite_is_countersigned_through_the_port(self) -> None:
        """The authorised invite and the room's stripped state go to the port; its answer is persisted."""
        room_id = self.create_room(name="Plans")

        def countersign(room_version: str, event: dict[str, Any], state: list[Any]) -> dict[str, Any]:
            signed = dict(event)
            signed["signatures"] = {**event["signatures"], REMOTE: {"ed25519:k": "c2ln"}}
            return signed

        self.fake.membership.answers["invite"] = countersign
        channel = self.make_request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": CAROL}, access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        [(room_version, event, state)] = self.fake.membership.called("invite")
        self.assertEqual((event["type"], event["state_key"], event["content"]["membership"]), ("m.room.member", CAROL, "invite"))
        self.assertEqual(room_version, self.member_event(room_id, ALICE).room_version.identifier)
        types = {(e["type"], e["state_key"]) for e in state}
        self.assertIn(("m.room.create", ""), types)
        self.assertIn(("m.room.name", ""), types)
        self.assertIn(("m.room.member", ALICE), types)
        stored = self.member_event(room_id, CAROL)
        self.assertEqual(stored.membership, "invite")
        self.assertIn(REMOTE, stored.pdu["signatures"])

    def test_invite_refused_by_the_port_is_relayed(self) -> None:
        """The invitee's server's refusal reaches the client and nothing is persisted."""
        room_id = self.create_room()
        self.fake.membership.answers["invite"] = MatrixError(403, Codes.FORBIDDEN, "not accepting invites")
        channel = self.make_request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": CAROL}, access_token=self.alice)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertIsNone(self.member_event(room_id, CAROL))

    def test_invite_answer_for_another_event_is_refused(self) -> None:
        """An answer that is not the invite we sent (different event ID) is a 502 and is not persisted."""
        room_id = self.create_room()

        def tamper(room_version: str, event: dict[str, Any], state: list[Any]) -> dict[str, Any]:
            return {**event, "content": {"membership": "join"}}

        self.fake.membership.answers["invite"] = tamper
        channel = self.make_request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": CAROL}, access_token=self.alice)
        self.assertEqual(channel.code, 502, channel.json_body)
        self.assertIsNone(self.member_event(room_id, CAROL))

    def test_unauthorised_invite_never_reaches_the_port(self) -> None:
        """The auth rules run first: bob, not in the room, cannot invite (403) and no request leaves."""
        room_id = self.create_room()
        channel = self.make_request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": CAROL}, access_token=self.bob)
        self.assertEqual(channel.code, 403, channel.json_body)
        self.assertEqual(self.fake.membership.called("invite"), [])


class RemoteJoinTests(PortsTestCase):
    def test_join_unknown_room_through_via_and_server_name(self) -> None:
        """``via`` then ``server_name`` servers (ours left out) and the member content go to the port."""
        self.make_request("PUT", f"{V3}/profile/{ALICE}/displayname", {"displayname": "Alice"}, access_token=self.alice)
        self.fake.membership.answers["join"] = RemoteJoinResult("10", {})
        room_id = f"!elsewhere:{REMOTE}"
        query = f"via={REMOTE}&via={TEST_SERVER_NAME}&server_name=other.example"
        channel = self.make_request("POST", f"{V3}/join/{enc(room_id)}?{query}", {"reason": "hi"}, access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body, {"room_id": room_id})
        self.assertEqual(
            self.fake.membership.called("join"),
            [([REMOTE, "other.example"], room_id, ALICE, {"membership": "join", "displayname": "Alice", "reason": "hi"})],
        )

    def test_join_port_error_is_relayed(self) -> None:
        """A refusal from the remote room's server is the client's answer."""
        self.fake.membership.answers["join"] = MatrixError(403, Codes.FORBIDDEN, "banned")
        channel = self.make_request("POST", f"{V3}/rooms/{enc('!r:' + REMOTE)}/join?via={REMOTE}", {}, access_token=self.alice)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (403, "M_FORBIDDEN"))

    def test_unknown_room_without_servers_is_404_without_asking(self) -> None:
        """No server to ask: 404 as before, and the port is not called."""
        channel = self.make_request("POST", f"{V3}/join/{enc('!r:' + REMOTE)}", {}, access_token=self.alice)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"))
        self.assertEqual(self.fake.membership.calls, [])

    def test_join_remote_alias_through_its_servers(self) -> None:
        """A remote alias is resolved through the directory port, then joined via the servers it names."""
        self.fake.directory.answers["resolve_alias"] = (f"!r:{REMOTE}", [REMOTE])
        self.fake.membership.answers["join"] = RemoteJoinResult("10", {})
        channel = self.make_request("POST", f"{V3}/join/{enc('#plans:' + REMOTE)}", {}, access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body, {"room_id": f"!r:{REMOTE}"})
        self.assertEqual(self.fake.directory.called("resolve_alias"), [(f"#plans:{REMOTE}",)])
        self.assertEqual([c[0] for c in self.fake.membership.called("join")], [[REMOTE]])

    def test_remote_alias_of_a_room_we_know_joins_locally(self) -> None:
        """When the alias names a room this server is in, the join is local (no join port call)."""
        room_id = self.create_room(preset="public_chat")
        self.fake.directory.answers["resolve_alias"] = (room_id, [REMOTE])
        channel = self.make_request("POST", f"{V3}/join/{enc('#plans:' + REMOTE)}", {}, access_token=self.bob)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.member_event(room_id, BOB).membership, "join")
        self.assertEqual(self.fake.membership.called("join"), [])

    def test_knock_unknown_room_through_via(self) -> None:
        """A knock on a room we do not know goes to the port with the servers and member content."""
        self.fake.membership.answers["knock"] = {}
        room_id = f"!r:{REMOTE}"
        channel = self.make_request("POST", f"{V3}/knock/{enc(room_id)}?via={REMOTE}", {"reason": "me"}, access_token=self.bob)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.fake.membership.called("knock"), [([REMOTE], room_id, BOB, {"membership": "knock", "reason": "me"})])


class RemoteAliasTests(PortsTestCase):
    def test_remote_alias_lookup_relays_the_port(self) -> None:
        """GET /directory/room for another server's alias answers what the directory port says."""
        self.fake.directory.answers["resolve_alias"] = (f"!r:{REMOTE}", [REMOTE, "other.example"])
        channel = self.make_request("GET", f"{V3}/directory/room/{enc('#a:' + REMOTE)}")
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body, {"room_id": f"!r:{REMOTE}", "servers": [REMOTE, "other.example"]})
        self.fake.directory.answers["resolve_alias"] = MatrixError(502, Codes.UNKNOWN, "unreachable")
        channel = self.make_request("GET", f"{V3}/directory/room/{enc('#a:' + REMOTE)}")
        self.assertEqual(channel.code, 502, channel.json_body)

    def test_canonical_alias_checks_remote_aliases_through_the_port(self) -> None:
        """A remote alias in m.room.canonical_alias is accepted when it resolves to the room, else 400."""
        room_id = self.create_room()
        self.fake.directory.answers["resolve_alias"] = (room_id, [REMOTE])
        path = f"{V3}/rooms/{room_id}/state/m.room.canonical_alias"
        channel = self.make_request("PUT", path, {"alt_aliases": [f"#a:{REMOTE}"]}, access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.fake.directory.answers["resolve_alias"] = (f"!other:{REMOTE}", [REMOTE])
        channel = self.make_request("PUT", path, {"alt_aliases": [f"#a:{REMOTE}"]}, access_token=self.alice)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_BAD_ALIAS"))
        self.fake.directory.answers["resolve_alias"] = MatrixError(404, Codes.NOT_FOUND, "no")
        channel = self.make_request("PUT", path, {"alt_aliases": [f"#a:{REMOTE}"]}, access_token=self.alice)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_BAD_ALIAS"))


class RemoteProfileTests(PortsTestCase):
    def test_remote_profile_and_field_through_the_port(self) -> None:
        """Another server's user's profile (and one field) come from the profile port."""
        self.fake.profiles.answers["get_profile"] = lambda user_id, field: {"displayname": "Carol"}
        channel = self.make_request("GET", f"{V3}/profile/{CAROL}")
        self.assertEqual((channel.code, channel.json_body), (200, {"displayname": "Carol"}))
        channel = self.make_request("GET", f"{V3}/profile/{CAROL}/displayname")
        self.assertEqual((channel.code, channel.json_body), (200, {"displayname": "Carol"}))
        channel = self.make_request("GET", f"{V3}/profile/{CAROL}/avatar_url")
        self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"))
        self.assertEqual(
            self.fake.profiles.called("get_profile"), [(CAROL, None), (CAROL, "displayname"), (CAROL, "avatar_url")]
        )

    def test_remote_profile_error_is_relayed(self) -> None:
        self.fake.profiles.answers["get_profile"] = MatrixError(502, Codes.UNKNOWN, "unreachable")
        channel = self.make_request("GET", f"{V3}/profile/{CAROL}")
        self.assertEqual(channel.code, 502, channel.json_body)


class RemoteSenderTests(PortsTestCase):
    def test_sender_is_told_about_each_new_event(self) -> None:
        """Every persisted event advances the federation sender's events position."""
        room_id = self.create_room()
        channel = self.send(room_id, {"msgtype": "m.text", "body": "x"}, self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        positions = [c[1] for c in self.fake.sender.calls if c[0] == "notify_new_events"]
        self.assertTrue(positions)
        self.assertEqual(positions, sorted(positions))
        stored = self.get_success(self.hs.rooms.events.get_event(channel.json_body["event_id"]))
        self.assertEqual(positions[-1], stored.stream_ordering)


class LocalOnlyPortsTests(RoomsTestCase):
    """Without federation the remote branches answer what clients always got."""

    def test_remote_invite_is_400(self) -> None:
        room_id = self.create_room()
        channel = self.make_request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": CAROL}, access_token=self.alice)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_UNKNOWN"))
        self.assertNotIn(CAROL, str(self.room_events(room_id)))

    def test_remote_join_and_knock_are_404(self) -> None:
        for path in (f"join/{enc('!r:' + REMOTE)}?via={REMOTE}", f"knock/{enc('!r:' + REMOTE)}?via={REMOTE}",
                     f"join/{enc('#a:' + REMOTE)}"):
            channel = self.make_request("POST", f"{V3}/{path}", {}, access_token=self.alice)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"), path)


class RemoteKeysTests(KeysTestCase):
    def make_ports(self) -> RemotePorts:
        self.fake = FakePorts()
        return self.fake.ports()

    def test_query_asks_each_server_and_merges_its_users_only(self) -> None:
        """One query per server with the request's timeout; answers about other servers' users are dropped."""
        carol_keys = {"DEV": {"user_id": CAROL, "device_id": "DEV"}}
        self.fake.keys.answers["query_keys"] = lambda server, query, timeout: {
            "device_keys": {CAROL: carol_keys, ALICE: {"EVIL": {}}},
            "master_keys": {CAROL: {"user_id": CAROL, "usage": ["master"]}},
        }
        channel = self.make_request(
            "POST", f"{V3}/keys/query", {"device_keys": {CAROL: ["DEV"], ALICE: []}, "timeout": 2500},
            access_token=self.bob,
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.fake.keys.called("query_keys"), [(REMOTE, {CAROL: ["DEV"]}, 2500)])
        body = channel.json_body
        self.assertEqual(body["device_keys"][CAROL], carol_keys)
        self.assertNotIn("EVIL", body["device_keys"].get(ALICE, {}))
        self.assertEqual(body["master_keys"][CAROL]["usage"], ["master"])
        self.assertEqual(body["failures"], {})

    def test_query_failure_is_reported_by_server_name(self) -> None:
        """A failing server appears in ``failures`` with its status; the others still answer."""

        def answer(server: str, query: Any, timeout: int) -> dict[str, Any]:
            if server != "ok.example":
                raise MatrixError(504, Codes.UNKNOWN, "timed out")
            return {"device_keys": {f"@dan:{server}": {}}}

        self.fake.keys.answers["query_keys"] = answer
        channel = self.query(self.bob, {CAROL: [], "@dan:ok.example": []})
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(channel.json_body["failures"], {REMOTE: {"status": 504, "message": "timed out"}})
        self.assertEqual(channel.json_body["device_keys"], {"@dan:ok.example": {}})
        self.assertEqual(self.fake.keys.called("query_keys")[0][2], 10_000)  # the spec's default timeout

    def test_claim_asks_each_server(self) -> None:
        """Remote one-time key claims go to the user's server; its keys are merged, errors in failures."""
        key = {"signed_curve25519:AAA": {"key": "k"}}
        self.fake.keys.answers["claim_keys"] = lambda server, query, timeout: {
            "one_time_keys": {CAROL: {"DEV": key}, ALICE: {"X": key}}
        }
        channel = self.claim(self.bob, {CAROL: {"DEV": "signed_curve25519"}})
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.fake.keys.called("claim_keys"), [(REMOTE, {CAROL: {"DEV": "signed_curve25519"}}, 10_000)])
        self.assertEqual(channel.json_body, {"one_time_keys": {CAROL: {"DEV": key}}, "failures": {}})
        self.fake.keys.answers["claim_keys"] = MatrixError(502, Codes.UNKNOWN, "unreachable")
        channel = self.claim(self.bob, {CAROL: {"DEV": "signed_curve25519"}})
        self.assertEqual(channel.json_body["failures"], {REMOTE: {"status": 502, "message": "unreachable"}})

    def test_local_only_failures_are_unchanged(self) -> None:
        """The local-only querier's failure entry is what clients got before federation."""
        from homeserver.api.local import LocalOnlyKeyQuerier
        from homeserver.e2ee.device_keys import DeviceKeysService

        self.hs.features.get(DeviceKeysService)._remote = LocalOnlyKeyQuerier()
        channel = self.query(self.bob, {CAROL: []})
        self.assertEqual(channel.json_body["failures"], {REMOTE: {"status": 503, "message": "Federation is not available yet"}})


class RemoteToDeviceTests(KeysTestCase):
    def make_ports(self) -> RemotePorts:
        self.fake = FakePorts()
        return self.fake.ports()

    def send_to_device(self, messages: Any, txn: str) -> Any:
        return self.make_request(
            "PUT", f"{V3}/sendToDevice/m.room_key_request/{txn}", {"messages": messages}, access_token=self.alice
        )

    def edus(self) -> list[tuple[Any, ...]]:
        return [c[1:] for c in self.fake.sender.calls if c[0] == "send_edu"]

    def test_remote_messages_become_one_edu_per_server(self) -> None:
        """``m.direct_to_device`` per destination with sender, type, message_id and that server's messages."""
        messages = {
            CAROL: {"DEV": {"a": 1}},
            f"@dan:{REMOTE}": {"*": {"b": 2}},
            "@erin:other.example": {"E": {"c": 3}},
            BOB: {self.bob_device: {"d": 4}},
        }
        channel = self.send_to_device(messages, "t1")
        self.assertEqual(channel.code, 200, channel.json_body)
        edus = self.edus()
        self.assertEqual([(d, t) for d, t, _ in edus], [(["other.example"], "m.direct_to_device"), ([REMOTE], "m.direct_to_device")])
        content = edus[1][2]
        self.assertEqual(content["sender"], ALICE)
        self.assertEqual(content["type"], "m.room_key_request")
        self.assertEqual(content["messages"], {CAROL: {"DEV": {"a": 1}}, f"@dan:{REMOTE}": {"*": {"b": 2}}})
        self.assertEqual(edus[0][2]["message_id"], content["message_id"])
        self.assertLessEqual(len(content["message_id"]), 32)

    def test_retried_transaction_sends_nothing_again(self) -> None:
        """A client retry of the same transaction ID does not queue the EDU twice."""
        self.send_to_device({CAROL: {"DEV": {"a": 1}}}, "t1")
        self.send_to_device({CAROL: {"DEV": {"a": 1}}}, "t1")
        self.assertEqual(len(self.edus()), 1)
        self.send_to_device({CAROL: {"DEV": {"a": 1}}}, "t2")
        self.assertEqual(len(self.edus()), 2)
        self.assertNotEqual(self.edus()[0][2]["message_id"], self.edus()[1][2]["message_id"])

    def test_sender_failure_does_not_fail_the_request(self) -> None:
        """The local part succeeded: a failing sender is logged, the client gets 200."""
        self.fake.sender.answers["send_edu"] = RuntimeError("queue down")
        channel = self.send_to_device({CAROL: {"DEV": {"a": 1}}, BOB: {self.bob_device: {"d": 4}}}, "t1")
        self.assertEqual(channel.code, 200, channel.json_body)
