"""Chat through matrix-nio against a real server process, on SQLite and PostgreSQL.

Two ``AsyncClient`` instances (alice and bob) register and log in, create a room, invite and join,
exchange messages that each receives through nio's own ``/sync`` handling (so the responses also pass
nio's JSON-schema validation), retry a send with the same transaction id, leave, and read the history
back with ``/messages``. matrix-nio runs on asyncio/aiohttp; each test drives it with ``asyncio.run``
in the test's own thread while the server runs as a separate process (see conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    JoinResponse,
    LoginResponse,
    MessageDirection,
    RegisterResponse,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomLeaveResponse,
    RoomMemberEvent,
    RoomMessagesResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from bench.common import ServerProcess
from tests.integration.conftest import SERVER_NAME

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-battery"
SCENARIO_TIMEOUT_S = 60.0
SYNC_POLL_MS = 1000
LONG_POLL_MS = 20_000
T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    """Runs an asyncio scenario to completion, bounded by ``SCENARIO_TIMEOUT_S``."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout=SCENARIO_TIMEOUT_S)

    return asyncio.run(bounded())


def uid(localpart: str) -> str:
    return f"@{localpart}:{SERVER_NAME}"


@asynccontextmanager
async def nio_client(server: ServerProcess, store: Path, user: str = "") -> AsyncIterator[AsyncClient]:
    """An AsyncClient without encryption that never retries (a 429 or timeout is returned, not slept on)."""
    config = AsyncClientConfig(
        encryption_enabled=False, store_sync_tokens=False, max_limit_exceeded=0, max_timeouts=0
    )
    store.mkdir(parents=True, exist_ok=True)
    client = AsyncClient(server.base_url, user, config=config, store_path=str(store))
    try:
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def logged_in(server: ServerProcess, tmp_path: Path, localpart: str) -> AsyncIterator[AsyncClient]:
    """Registers ``localpart`` on one client, then yields a second client logged in with the password."""
    async with nio_client(server, tmp_path / f"{localpart}-reg") as registrar:
        registered = await registrar.register(localpart, PASSWORD, device_name="registration")
        assert isinstance(registered, RegisterResponse), registered
    async with nio_client(server, tmp_path / localpart, uid(localpart)) as client:
        login = await client.login(PASSWORD, device_name=f"{localpart}'s chat client")
        assert isinstance(login, LoginResponse), login
        assert client.user_id == uid(localpart)
        yield client


def timeline(response: SyncResponse, room_id: str) -> list[Any]:
    """The events of ``room_id``'s joined-room timeline in one sync response (empty when absent)."""
    room = response.rooms.join.get(room_id)
    return list(room.timeline.events) if room is not None else []


def texts(events: list[Any]) -> list[tuple[str, str]]:
    """``(sender, body)`` of every ``m.text`` message among ``events``, in order."""
    return [(e.sender, e.body) for e in events if isinstance(e, RoomMessageText)]


async def sync_once(client: AsyncClient, timeout_ms: int = SYNC_POLL_MS) -> SyncResponse:
    response = await client.sync(timeout=timeout_ms)
    assert isinstance(response, SyncResponse), response
    return response


async def sync_until(
    client: AsyncClient, found: Callable[[SyncResponse], bool], *, polls: int = 30
) -> SyncResponse:
    """Syncs (1 s long-polls, at most ``polls`` of them) until ``found(response)`` is true."""
    for _ in range(polls):
        response = await sync_once(client)
        if found(response):
            return response
    raise AssertionError(f"{client.user_id}: not seen after {polls} syncs")


async def send_text(client: AsyncClient, room_id: str, body: str, tx_id: str | None = None) -> str:
    response = await client.room_send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": body}, tx_id=tx_id
    )
    assert isinstance(response, RoomSendResponse), response
    return str(response.event_id)


async def history(client: AsyncClient, room_id: str, limit: int, start: str | None = None) -> list[Any]:
    """Every event of the room, newest first, paging backwards with ``limit`` per request."""
    events: list[Any] = []
    token = start
    for _ in range(200):
        page = await client.room_messages(room_id, start=token, direction=MessageDirection.back, limit=limit)
        assert isinstance(page, RoomMessagesResponse), page
        assert len(page.chunk) <= limit
        events.extend(page.chunk)
        if not page.chunk or page.end is None:
            return events
        assert page.end != token, "pagination made no progress"
        token = page.end
    raise AssertionError("back-pagination did not end after 200 pages")


async def chat_room(alice: AsyncClient, bob: AsyncClient) -> str:
    """Alice creates a room and invites bob, who sees the invite in his sync and joins."""
    created = await alice.room_create(name="Chat")
    assert isinstance(created, RoomCreateResponse), created
    room_id = str(created.room_id)
    invited = await alice.room_invite(room_id, uid("bob"))
    assert isinstance(invited, RoomInviteResponse), invited

    def invite_seen(response: SyncResponse) -> bool:
        info = response.rooms.invite.get(room_id)
        return info is not None and any(
            isinstance(e, InviteMemberEvent) and e.membership == "invite" and e.state_key == uid("bob")
            for e in info.invite_state
        )

    await sync_until(bob, invite_seen)
    joined = await bob.join(room_id)
    assert isinstance(joined, JoinResponse), joined
    assert joined.room_id == room_id
    return room_id


class ChatTests:
    def test_conversation_sync_retry_leave_and_history(
        self, homeserver_any_db: ServerProcess, tmp_path: Path
    ) -> None:
        """Each client gets the other's exact text by sync; a retried txn id is one event; history is ordered."""
        hello, reply = "Hello Bob — ünïcødé ✓ 👋", "hi alice\nsecond line"

        async def scenario() -> None:
            async with (
                logged_in(homeserver_any_db, tmp_path, "alice") as alice,
                logged_in(homeserver_any_db, tmp_path, "bob") as bob,
            ):
                room_id = await chat_room(alice, bob)
                # Both clients catch up; after this, new messages arrive through incremental syncs.
                await sync_until(bob, lambda r: room_id in r.rooms.join)
                await sync_until(
                    alice,
                    lambda r: any(
                        isinstance(e, RoomMemberEvent)
                        and e.state_key == uid("bob")
                        and e.membership == "join"
                        for e in timeline(r, room_id)
                    ),
                )

                # bob's long-poll is parked (or about to be) when alice sends: it must be woken, not time out.
                loop = asyncio.get_running_loop()
                started = loop.time()
                poll = asyncio.ensure_future(sync_once(bob, LONG_POLL_MS))
                await send_text(alice, room_id, hello)
                woken = await poll
                if (uid("alice"), hello) not in texts(timeline(woken, room_id)):
                    woken = await sync_until(
                        bob, lambda r: (uid("alice"), hello) in texts(timeline(r, room_id))
                    )
                assert loop.time() - started < LONG_POLL_MS / 1000 - 5, "bob's sync was not woken by the send"

                await send_text(bob, room_id, reply)
                got = await sync_until(alice, lambda r: (uid("bob"), reply) in texts(timeline(r, room_id)))
                # alice had not synced since her own message: it comes first, then bob's reply.
                assert texts(timeline(got, room_id))[-2:] == [(uid("alice"), hello), (uid("bob"), reply)]

                first = await send_text(alice, room_id, "retried", tx_id="retry-txn-1")
                again = await send_text(alice, room_id, "retried", tx_id="retry-txn-1")
                assert again == first

                left = await bob.room_leave(room_id)
                assert isinstance(left, RoomLeaveResponse), left
                await sync_until(bob, lambda r: room_id in r.rooms.leave)
                await sync_until(
                    alice,
                    lambda r: any(
                        isinstance(e, RoomMemberEvent)
                        and e.state_key == uid("bob")
                        and e.membership == "leave"
                        for e in timeline(r, room_id)
                    ),
                )

                newest_first = await history(alice, room_id, limit=3)
                events = list(reversed(newest_first))
                assert texts(events) == [
                    (uid("alice"), hello),
                    (uid("bob"), reply),
                    (uid("alice"), "retried"),
                ]
                assert [e.event_id for e in events].count(first) == 1
                assert events[0].source["type"] == "m.room.create"
                assert isinstance(events[-1], RoomMemberEvent) and events[-1].membership == "leave"
                ids = [e.event_id for e in events]
                assert len(ids) == len(set(ids)), "an event was returned twice across pages"

        run(scenario)

    def test_back_pagination_from_a_sync_token(
        self, homeserver_any_db: ServerProcess, tmp_path: Path
    ) -> None:
        """``/messages`` from the sync's ``prev_batch`` and from ``next_batch`` returns the history in order."""

        async def scenario() -> None:
            async with logged_in(homeserver_any_db, tmp_path, "alice") as alice:
                created = await alice.room_create(name="History")
                assert isinstance(created, RoomCreateResponse), created
                room_id = str(created.room_id)
                bodies = [f"message {i:02d}" for i in range(25)]
                for body in bodies:
                    await send_text(alice, room_id, body)
                synced = await sync_once(alice, 0)
                room = synced.rooms.join[room_id]
                shown = texts(list(room.timeline.events))
                # prev_batch points just before the sync's (possibly limited) timeline.
                earlier = await history(alice, room_id, limit=7, start=room.timeline.prev_batch)
                before = [body for _, body in texts(list(reversed(earlier)))]
                assert before + [body for _, body in shown] == bodies
                # next_batch is "now": paging back from it yields everything.
                everything = await history(alice, room_id, limit=10, start=alice.next_batch)
                assert [body for _, body in texts(list(reversed(everything)))] == bodies
                assert everything[-1].source["type"] == "m.room.create"

        run(scenario)

    def test_unknown_room_and_non_member_are_refused(
        self, homeserver_any_db: ServerProcess, tmp_path: Path
    ) -> None:
        """A non-member cannot send to or read a room; nio gets an error response, not an exception."""

        async def scenario() -> None:
            async with (
                logged_in(homeserver_any_db, tmp_path, "alice") as alice,
                logged_in(homeserver_any_db, tmp_path, "eve") as eve,
            ):
                created = await alice.room_create(name="Private")
                assert isinstance(created, RoomCreateResponse), created
                room_id = str(created.room_id)
                await send_text(alice, room_id, "secret")
                sent = await eve.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "x"})
                assert not isinstance(sent, RoomSendResponse)
                assert sent.status_code == "M_FORBIDDEN"
                read = await eve.room_messages(room_id, limit=10)
                assert not isinstance(read, RoomMessagesResponse)
                assert read.status_code == "M_FORBIDDEN"
                joined = await eve.join(room_id)
                assert not isinstance(joined, JoinResponse)
                assert joined.status_code == "M_FORBIDDEN"

        run(scenario)
