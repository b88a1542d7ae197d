"""SecureConnect federates with a real Synapse (1.163.2, ``SC_TEST_SYNAPSE``), both directions (issue 13).

One Synapse and one SecureConnect server start in parallel once for the module, both named
``127.0.0.1:<port>`` over loopback TLS (docs/adr/0018-federation-tests-against-synapse.md). Each test
uses fresh users and rooms. Synapse stages inbound PDUs and handles them after answering ``/send``,
so every remote effect is polled for.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.integration import synapse_harness as harness
from tests.integration.synapse_harness import (
    Homeserver,
    MatrixClient,
    SecureConnectHomeserver,
    SynapseHomeserver,
)

pytestmark = pytest.mark.integration

Servers = tuple[SynapseHomeserver, SecureConnectHomeserver]
WAIT_S = 30.0


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Synapse and SecureConnect, started in parallel, stopped (exit 0 asserted) after the module."""
    python = harness.synapse_python()
    base = tmp_path_factory.mktemp("fed-syn")
    syn, ours = harness.start_parallel(
        lambda: harness.start_synapse(base / "syn", python=python),
        lambda: harness.start_secureconnect(base / "ours", ready_paths=harness.READY_PATHS),
    )
    assert isinstance(syn, SynapseHomeserver) and isinstance(ours, SecureConnectHomeserver)
    yield syn, ours
    problems = harness.stop_all([syn, ours])
    assert not problems, "\n".join(problems)


@pytest.fixture(autouse=True)
def _logs(request: pytest.FixtureRequest, servers: Servers) -> None:
    harness.attach_logs(request.node, servers)


def _q(value: str) -> str:
    return harness._q(value)


def bodies(client: MatrixClient, room_id: str) -> list[str]:
    """Message bodies of the room, oldest first, read backwards from the end through every page."""
    found: list[str] = []
    path = f"/_matrix/client/v3/rooms/{_q(room_id)}/messages?dir=b&limit=100"
    token = None
    for _ in range(20):
        answer = client.request("GET", path + (f"&from={_q(token)}" if token else ""))
        found.extend(
            e["content"]["body"] for e in answer["chunk"] if e["type"] == "m.room.message" and "body" in e["content"]
        )
        token = answer.get("end")
        if not answer["chunk"] or not token:
            break
    return list(reversed(found))


def wait_for_bodies(client: MatrixClient, room_id: str, expected: list[str], timeout: float = WAIT_S) -> None:
    """Polls until the room's message bodies are exactly ``expected`` (in that order)."""
    last: list[list[str]] = [[]]

    def check() -> bool:
        last[0] = bodies(client, room_id)
        return last[0] == expected

    try:
        harness.poll(check, timeout, interval=0.2, what=f"{len(expected)} messages on {client.base_url}")
    except AssertionError as e:
        raise AssertionError(f"{e}: have {last[0]!r}") from None


def state_map(client: MatrixClient, room_id: str) -> dict[tuple[str, str], str]:
    """The room's current state as ``(type, state_key) -> event_id``."""
    return {(e["type"], e["state_key"]): e["event_id"] for e in client.state(room_id)}


def wait_for_same_state(first: MatrixClient, second: MatrixClient, room_id: str) -> dict[tuple[str, str], str]:
    """Polls until both servers return the same ``/state`` (by event ID); returns it."""
    seen: list[Any] = [None, None]

    def same() -> dict[tuple[str, str], str] | None:
        seen[0], seen[1] = state_map(first, room_id), state_map(second, room_id)
        return seen[0] if seen[0] == seen[1] else None

    try:
        return dict(harness.poll(same, WAIT_S, interval=0.2, what="identical /state"))
    except AssertionError as e:
        only = set(seen[0].items()) ^ set(seen[1].items())
        raise AssertionError(f"{e}: differing entries {sorted(only)!r}") from None


def membership(client: MatrixClient, room_id: str, user_id: str) -> str | None:
    """``user_id``'s membership in the room's current state on ``client``'s server."""
    status, answer = client.request(
        "GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/state/m.room.member/{_q(user_id)}", expect=None
    )
    return str(answer.get("membership")) if status == 200 else None


def invited_rooms(client: MatrixClient) -> set[str]:
    """Rooms ``client`` is invited to, from an initial ``/sync``."""
    answer = client.request("GET", "/_matrix/client/v3/sync?timeout=0")
    return set(answer.get("rooms", {}).get("invite", {}))


def exchange(room_id: str, first: MatrixClient, second: MatrixClient, count: int = 4) -> None:
    """Alternating messages, each awaited on the other side; both servers then agree on the order."""
    expected = []
    for i in range(count):
        sender, other = (first, second) if i % 2 == 0 else (second, first)
        body = f"{room_id} m{i} from {sender.user_id}"
        sender.send_message(room_id, body)
        other.wait_for_message(room_id, body, timeout=WAIT_S)
        expected.append(body)
    wait_for_bodies(first, room_id, expected)
    wait_for_bodies(second, room_id, expected)


def pair(servers: Servers) -> tuple[Homeserver, Homeserver, MatrixClient, MatrixClient]:
    syn, ours = servers
    return syn, ours, syn.register(), ours.register()


class JoinTests:
    def test_our_user_joins_a_synapse_room_by_alias(self, servers: Servers) -> None:
        syn, _ours, s_user, o_user = pair(servers)
        room_id = s_user.create_room(alias="syn-lobby")
        assert o_user.join(f"#syn-lobby:{syn.server_name}") == room_id
        s_user.wait_for_member(room_id, o_user.user_id, timeout=WAIT_S)
        exchange(room_id, s_user, o_user)
        assert s_user.joined_members(room_id) == o_user.joined_members(room_id) == {s_user.user_id, o_user.user_id}

    def test_our_user_joins_a_synapse_room_by_id_via(self, servers: Servers) -> None:
        syn, _ours, s_user, o_user = pair(servers)
        room_id = s_user.create_room(name="syn by id")
        assert o_user.join(room_id, via=[syn.server_name]) == room_id
        s_user.wait_for_member(room_id, o_user.user_id, timeout=WAIT_S)
        exchange(room_id, o_user, s_user)
        wait_for_same_state(s_user, o_user, room_id)

    def test_synapse_user_joins_our_room_by_alias(self, servers: Servers) -> None:
        _syn, ours, s_user, o_user = pair(servers)
        room_id = o_user.create_room(alias="ours-lobby")
        assert s_user.join(f"#ours-lobby:{ours.server_name}") == room_id
        o_user.wait_for_member(room_id, s_user.user_id, timeout=WAIT_S)
        exchange(room_id, o_user, s_user)

    def test_synapse_user_joins_our_room_by_id_via(self, servers: Servers) -> None:
        _syn, ours, s_user, o_user = pair(servers)
        room_id = o_user.create_room(name="ours by id")
        assert s_user.join(room_id, via=[ours.server_name]) == room_id
        o_user.wait_for_member(room_id, s_user.user_id, timeout=WAIT_S)
        exchange(room_id, s_user, o_user)
        wait_for_same_state(s_user, o_user, room_id)


class InviteTests:
    def test_synapse_invites_our_user_to_a_private_room(self, servers: Servers) -> None:
        syn, _ours, s_user, o_user = pair(servers)
        room_id = s_user.create_room(public=False)
        with pytest.raises(AssertionError, match="403"):
            o_user.join(room_id, via=[syn.server_name])
        s_user.invite(room_id, o_user.user_id)
        harness.poll(lambda: room_id in invited_rooms(o_user), WAIT_S, what="invite on ours")
        assert o_user.join(room_id) == room_id
        s_user.wait_for_member(room_id, o_user.user_id, timeout=WAIT_S)
        exchange(room_id, s_user, o_user, count=2)

    def test_we_invite_a_synapse_user_to_a_private_room(self, servers: Servers) -> None:
        syn, ours, s_user, o_user = pair(servers)
        room_id = o_user.create_room(public=False)
        with pytest.raises(AssertionError, match="403"):
            s_user.join(room_id, via=[ours.server_name])
        o_user.invite(room_id, s_user.user_id)
        harness.poll(lambda: room_id in invited_rooms(s_user), WAIT_S, what="invite on Synapse")
        assert s_user.join(room_id) == room_id
        o_user.wait_for_member(room_id, s_user.user_id, timeout=WAIT_S)
        exchange(room_id, o_user, s_user, count=2)
        # Spec v1.16: whole PDUs in invite_room_state (Synapse only warns for room versions 1-11).
        assert "failed to validate `invite_room_state`" not in syn.log_path.read_text(errors="replace")


class KickLeaveTests:
    @pytest.mark.parametrize("host", ["synapse", "ours"])
    def test_kick_then_leave(self, servers: Servers, host: str) -> None:
        syn, ours, s_user, o_user = pair(servers)
        owner, guest = (s_user, o_user) if host == "synapse" else (o_user, s_user)
        guest_server = ours if host == "synapse" else syn
        second_guest = guest_server.register()
        room_id = owner.create_room(name=f"kicks on {host}")
        home = syn if host == "synapse" else ours
        guest.join(room_id, via=[home.server_name])
        second_guest.join(room_id, via=[home.server_name])
        owner.wait_for_member(room_id, second_guest.user_id, timeout=WAIT_S)
        owner.request("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/kick", {"user_id": guest.user_id})
        harness.poll(lambda: membership(second_guest, room_id, guest.user_id) == "leave", WAIT_S, what="kick")
        harness.poll(lambda: room_id not in guest.joined_rooms(), WAIT_S, what="kicked user's rooms")
        second_guest.leave(room_id)
        harness.poll(lambda: membership(owner, room_id, second_guest.user_id) == "leave", WAIT_S, what="leave")
        assert owner.joined_members(room_id) == {owner.user_id}


class StateConflictTests:
    def test_concurrent_name_and_power_level_changes_converge(self, servers: Servers) -> None:
        syn, _ours, s_user, o_user = pair(servers)
        room_id = s_user.create_room(name="conflict")
        o_user.join(room_id, via=[syn.server_name])
        s_user.wait_for_member(room_id, o_user.user_id, timeout=WAIT_S)
        levels = s_user.request("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/state/m.room.power_levels/")
        levels["users"][o_user.user_id] = 100
        s_user.set_state(room_id, "m.room.power_levels", levels)
        wait_for_same_state(s_user, o_user, room_id)
        # Both sides change the name and the power levels at about the same time: forked DAG.
        mine = dict(levels, events_default=0, state_default=51)
        theirs = dict(levels, events_default=0, state_default=52)
        s_user.set_state(room_id, "m.room.name", {"name": "name from Synapse"})
        o_user.set_state(room_id, "m.room.name", {"name": "name from SecureConnect"})
        s_user.set_state(room_id, "m.room.power_levels", theirs)
        o_user.set_state(room_id, "m.room.power_levels", mine)
        state = wait_for_same_state(s_user, o_user, room_id)
        assert ("m.room.name", "") in state
        # A later message from either side lands on the merged DAG and is seen by both.
        o_user.send_message(room_id, "after the conflict")
        s_user.wait_for_message(room_id, "after the conflict", timeout=WAIT_S)
        wait_for_same_state(s_user, o_user, room_id)


class BackfillTests:
    """A user joining late on one side pages ``/messages`` back through 200 messages of the other."""

    HISTORY = 200

    def _fill(self, owner: MatrixClient, room_id: str, *, parallel: bool) -> list[str]:
        """Sends the history; returns it in the owner's own order.

        Our server orders a room's local events one at a time, so a few threads at once still make a
        linear history. Synapse builds concurrent events of a room on the same parents (equal depths),
        whose relative order is each server's own choice, so its history is sent one at a time.
        """
        with ThreadPoolExecutor(max_workers=8 if parallel else 1) as pool:
            list(pool.map(lambda i: owner.send_message(room_id, f"history {i}"), range(self.HISTORY)))
        sent = bodies(owner, room_id)
        assert sorted(sent) == sorted(f"history {i}" for i in range(self.HISTORY))
        return sent

    def test_synapse_user_joining_late_pages_back_our_history(self, servers: Servers) -> None:
        _syn, ours, s_user, o_user = pair(servers)
        room_id = o_user.create_room(name="history on ours")
        sent = self._fill(o_user, room_id, parallel=True)
        s_user.join(room_id, via=[ours.server_name])
        wait_for_bodies(s_user, room_id, sent, timeout=60)

    def test_our_user_joining_late_pages_back_synapse_history(self, servers: Servers) -> None:
        syn, _ours, s_user, o_user = pair(servers)
        room_id = s_user.create_room(name="history on synapse")
        sent = self._fill(s_user, room_id, parallel=False)
        o_user.join(room_id, via=[syn.server_name])
        wait_for_bodies(o_user, room_id, sent, timeout=60)
