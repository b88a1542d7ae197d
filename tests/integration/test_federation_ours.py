"""Two real SecureConnect processes federate over loopback TLS (issue 13).

Both servers are named ``127.0.0.1:<port>`` (IP literals with ports), accept each other's
self-signed certificates (``federation.verify_certificates: false``) and may reach loopback because
``federation.ip_range_whitelist`` covers ``127.0.0.0/8`` — for IP-literal server names too
(docs/adr/0018-federation-tests-against-synapse.md). The servers start once for the module; every
remote effect is polled for.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration import synapse_harness as harness
from tests.integration.synapse_harness import MatrixClient, SecureConnectHomeserver

pytestmark = pytest.mark.integration

Pair = tuple[SecureConnectHomeserver, SecureConnectHomeserver]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two SecureConnect servers, started in parallel, stopped (exit 0 asserted) after the module."""
    base = tmp_path_factory.mktemp("fed-ours")
    a, b = harness.start_parallel(
        lambda: harness.start_secureconnect(base / "a", ready_paths=harness.READY_PATHS),
        lambda: harness.start_secureconnect(base / "b", ready_paths=harness.READY_PATHS),
    )
    assert isinstance(a, SecureConnectHomeserver) and isinstance(b, SecureConnectHomeserver)
    yield a, b
    problems = harness.stop_all([a, b])
    assert not problems, "\n".join(problems)


@pytest.fixture(autouse=True)
def _logs(request: pytest.FixtureRequest, servers: Pair) -> None:
    harness.attach_logs(request.node, servers)


def bodies(client: MatrixClient, room_id: str) -> list[str]:
    """Message bodies of the room, oldest first, as ``client``'s server has them."""
    events = client.messages(room_id, direction="f", limit=200)
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message" and "body" in e["content"]]


def wait_for_bodies(client: MatrixClient, room_id: str, expected: list[str], timeout: float = 20.0) -> None:
    """Polls until the room's message bodies are exactly ``expected`` (in that order)."""
    harness.poll(lambda: bodies(client, room_id) == expected, timeout, what=f"{expected} on {client.base_url}")


def state_ids(client: MatrixClient, room_id: str) -> dict[tuple[str, str], str]:
    """The room's current state as ``(type, state_key) -> event_id``."""
    return {(e["type"], e["state_key"]): e["event_id"] for e in client.state(room_id)}


def membership(client: MatrixClient, room_id: str, user_id: str) -> str | None:
    """``user_id``'s membership in the room's current state on ``client``'s server."""
    for event in client.state(room_id):
        if event["type"] == "m.room.member" and event["state_key"] == user_id:
            return str(event["content"].get("membership"))
    return None


class PublicRoomTests:
    def test_server_names_are_ip_literals(self, servers: Pair) -> None:
        for server in servers:
            assert server.server_name == "127.0.0.1:" + server.base_url.rsplit(":", 1)[1]

    def test_join_by_alias_and_messages_in_one_order(self, servers: Pair) -> None:
        a, b = servers
        alice, bob = a.register(), b.register()
        room_id = alice.create_room(alias="lobby")
        assert bob.join(f"#lobby:{a.server_name}") == room_id
        alice.wait_for_member(room_id, bob.user_id)
        expected = []
        for i in range(5):
            sender = alice if i % 2 == 0 else bob
            body = f"m{i} from {sender.user_id}"
            sender.send_message(room_id, body)
            expected.append(body)
            # wait for each message on the other side so the order is well defined
            (bob if sender is alice else alice).wait_for_message(room_id, body)
        wait_for_bodies(alice, room_id, expected)
        wait_for_bodies(bob, room_id, expected)
        assert alice.joined_members(room_id) == bob.joined_members(room_id) == {alice.user_id, bob.user_id}

    def test_join_by_room_id_via_and_state_propagates(self, servers: Pair) -> None:
        a, b = servers
        alice, bob = a.register(), b.register()
        room_id = alice.create_room(name="by id")
        assert bob.join(room_id, via=[a.server_name]) == room_id
        alice.wait_for_member(room_id, bob.user_id)
        alice.set_state(room_id, "m.room.topic", {"topic": "from A"})
        harness.poll(lambda: state_ids(alice, room_id) == state_ids(bob, room_id), 20, what="state equal")
        levels = alice.request("GET", f"/_matrix/client/v3/rooms/{harness._q(room_id)}/state/m.room.power_levels/")
        levels["users"][bob.user_id] = 50
        alice.set_state(room_id, "m.room.power_levels", levels)
        harness.poll(lambda: state_ids(alice, room_id) == state_ids(bob, room_id), 20, what="levels equal")
        bob.set_state(room_id, "m.room.topic", {"topic": "from B"})
        harness.poll(lambda: state_ids(alice, room_id) == state_ids(bob, room_id), 20, what="state equal")
        topic = [e for e in alice.state(room_id) if e["type"] == "m.room.topic"]
        assert topic[0]["content"]["topic"] == "from B"


class PrivateRoomTests:
    def test_invite_accepted_with_plain_join(self, servers: Pair) -> None:
        a, b = servers
        alice, bob = a.register(), b.register()
        room_id = alice.create_room(public=False)
        with pytest.raises(AssertionError, match="403"):
            bob.join(room_id, via=[a.server_name])
        alice.invite(room_id, bob.user_id)
        harness.poll(lambda: room_id in _invited_rooms(bob), 20, what="invite on B")
        assert bob.join(room_id) == room_id
        alice.wait_for_member(room_id, bob.user_id)
        bob.send_message(room_id, "private hello")
        alice.wait_for_message(room_id, "private hello")

    def test_invite_from_b_to_a(self, servers: Pair) -> None:
        a, b = servers
        alice, bob = a.register(), b.register()
        room_id = bob.create_room(public=False)
        bob.invite(room_id, alice.user_id)
        harness.poll(lambda: room_id in _invited_rooms(alice), 20, what="invite on A")
        assert alice.join(room_id) == room_id
        bob.wait_for_member(room_id, alice.user_id)


class MembershipChangeTests:
    def test_kick_and_leave(self, servers: Pair) -> None:
        a, b = servers
        alice, bob, carol = a.register(), b.register(), b.register()
        room_id = alice.create_room(alias="kicks")
        bob.join(f"#kicks:{a.server_name}")
        carol.join(room_id, via=[a.server_name])
        alice.wait_for_member(room_id, carol.user_id)
        alice.request(
            "POST", f"/_matrix/client/v3/rooms/{harness._q(room_id)}/kick", {"user_id": bob.user_id, "reason": "x"}
        )
        harness.poll(lambda: membership(carol, room_id, bob.user_id) == "leave", 20, what="kick seen on B")
        assert room_id not in bob.joined_rooms()
        carol.leave(room_id)
        harness.poll(lambda: membership(alice, room_id, carol.user_id) == "leave", 20, what="leave seen on A")
        assert alice.joined_members(room_id) == {alice.user_id}
        # bob may come back (a kick is not a ban)
        bob.join(room_id, via=[a.server_name])
        alice.wait_for_member(room_id, bob.user_id)


def _invited_rooms(client: MatrixClient) -> set[str]:
    answer = client.request("GET", "/_matrix/client/v3/sync?timeout=0")
    return set(answer.get("rooms", {}).get("invite", {}))
