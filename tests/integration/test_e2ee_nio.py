"""End-to-end encryption through matrix-nio (vodozemac) against a real server, on SQLite and PostgreSQL.

Two encryption-enabled ``AsyncClient`` instances (alice and bob, each with its own crypto store in the
test's temporary directory) register, log in and upload device and one-time keys. Alice creates a room
with ``m.room.encryption`` (megolm) in its initial state and invites bob, who joins. Alice's client
queries bob's keys, claims a one-time key, shares the megolm session over Olm (to-device) and sends
an encrypted message; bob's client decrypts it to the exact plaintext. Then alice sends bob an
Olm-encrypted to-device message of a custom type, which bob's client decrypts (the decrypted payload
is captured from nio's Olm machine, since nio ignores custom Olm event types). The server only ever
sees ciphertext: the test also checks that the stored event is ``m.room.encrypted``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    JoinResponse,
    KeysQueryResponse,
    KeysUploadResponse,
    LoginResponse,
    MegolmEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
    ToDeviceMessage,
    ToDeviceResponse,
)

from bench.common import ServerProcess, http_json
from tests.integration.conftest import SERVER_NAME

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-battery"
SCENARIO_TIMEOUT_S = 90.0
SYNC_POLL_MS = 500
T = TypeVar("T")
SECRET_TYPE = "org.securec.test.secret"


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout=SCENARIO_TIMEOUT_S)

    return asyncio.run(bounded())


def uid(localpart: str) -> str:
    return f"@{localpart}:{SERVER_NAME}"


@asynccontextmanager
async def e2e_client(server: ServerProcess, tmp_path: Path, localpart: str) -> AsyncIterator[AsyncClient]:
    """Registers ``localpart``, logs in an encryption-enabled client and uploads its keys."""
    plain = AsyncClientConfig(encryption_enabled=False, store_sync_tokens=False, max_limit_exceeded=0, max_timeouts=0)
    (tmp_path / f"{localpart}-reg").mkdir(parents=True, exist_ok=True)
    registrar = AsyncClient(server.base_url, "", config=plain, store_path=str(tmp_path / f"{localpart}-reg"))
    try:
        registered = await registrar.register(localpart, PASSWORD, device_name="registration")
        assert isinstance(registered, RegisterResponse), registered
    finally:
        await registrar.close()
    store = tmp_path / f"{localpart}-crypto"
    store.mkdir(parents=True, exist_ok=True)
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True, max_limit_exceeded=0, max_timeouts=0)
    client = AsyncClient(server.base_url, uid(localpart), config=config, store_path=str(store))
    try:
        login = await client.login(PASSWORD, device_name=f"{localpart}'s e2e client")
        assert isinstance(login, LoginResponse), login
        assert client.olm is not None, "nio has no Olm machine (vodozemac missing?)"
        assert client.should_upload_keys
        uploaded = await client.keys_upload()
        assert isinstance(uploaded, KeysUploadResponse), uploaded
        assert uploaded.signed_curve25519_count > 0
        yield client
    finally:
        await client.close()


async def sync_once(client: AsyncClient) -> SyncResponse:
    response = await client.sync(timeout=SYNC_POLL_MS)
    assert isinstance(response, SyncResponse), response
    return response


async def sync_until(client: AsyncClient, found: Callable[[SyncResponse], bool], *, polls: int = 40) -> SyncResponse:
    for _ in range(polls):
        response = await sync_once(client)
        if found(response):
            return response
    raise AssertionError(f"{client.user_id}: not seen after {polls} syncs")


def room_events(response: SyncResponse, room_id: str) -> list[Any]:
    room = response.rooms.join.get(room_id)
    return list(room.timeline.events) if room is not None else []


async def encrypted_room(alice: AsyncClient, bob: AsyncClient) -> str:
    """Alice creates a megolm-encrypted room, invites bob; bob joins; both clients see the room as encrypted."""
    created = await alice.room_create(
        name="Secret",
        invite=[uid("bob")],
        initial_state=[{"type": "m.room.encryption", "state_key": "",
                        "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
    )
    assert isinstance(created, RoomCreateResponse), created
    room_id = str(created.room_id)

    def invited(response: SyncResponse) -> bool:
        info = response.rooms.invite.get(room_id)
        return info is not None and any(isinstance(e, InviteMemberEvent) for e in info.invite_state)

    await sync_until(bob, invited)
    joined = await bob.join(room_id)
    assert isinstance(joined, JoinResponse), joined
    await sync_until(bob, lambda r: room_id in r.rooms.join)
    await sync_until(alice, lambda r: uid("bob") in alice.rooms[room_id].users if room_id in alice.rooms else False)
    assert alice.rooms[room_id].encrypted and bob.rooms[room_id].encrypted
    return room_id


def capture_olm_payloads(client: AsyncClient) -> list[dict[str, Any]]:
    """Records every Olm payload the client's machine decrypts (nio drops custom types after decryption)."""
    payloads: list[dict[str, Any]] = []
    olm = client.olm
    assert olm is not None
    original = olm._handle_olm_event

    def recording(sender: str, sender_key: str, payload: dict[str, Any]) -> Any:
        payloads.append(payload)
        return original(sender, sender_key, payload)

    olm._handle_olm_event = recording  # type: ignore[method-assign]
    return payloads


class EncryptedChatTests:
    def test_megolm_message_and_olm_to_device(self, homeserver_any_db: ServerProcess, tmp_path: Path) -> None:
        """Bob decrypts alice's megolm room message and her Olm to-device message to the exact plaintext."""
        plaintext = "Top secret — ünïcødé ✓ 🔐 line1\nline2"
        secret = {"body": "to-device secret ✓", "n": 42}

        async def scenario() -> None:
            async with (
                e2e_client(homeserver_any_db, tmp_path, "alice") as alice,
                e2e_client(homeserver_any_db, tmp_path, "bob") as bob,
            ):
                bob_payloads = capture_olm_payloads(bob)
                room_id = await encrypted_room(alice, bob)

                # Alice learns bob's device keys through /keys/query (device_lists tracking).
                if alice.should_query_keys:
                    queried = await alice.keys_query()
                    assert isinstance(queried, KeysQueryResponse), queried
                assert bob.device_id in alice.device_store[uid("bob")], "bob's device keys were not served"

                # room_send claims a one-time key, shares the megolm session over Olm, then encrypts.
                sent = await alice.room_send(
                    room_id, "m.room.message", {"msgtype": "m.text", "body": plaintext},
                    ignore_unverified_devices=True,
                )
                assert isinstance(sent, RoomSendResponse), sent

                def decrypted(response: SyncResponse) -> bool:
                    return any(isinstance(e, RoomMessageText) and e.body == plaintext and e.decrypted
                               for e in room_events(response, room_id))

                response = await sync_until(bob, decrypted)
                assert not any(isinstance(e, MegolmEvent) for e in room_events(response, room_id)), \
                    "bob could not decrypt an event"
                assert any(p.get("type") == "m.room_key" for p in bob_payloads), "room key did not arrive by Olm"

                # The server stored ciphertext only (read raw, past nio's transparent decryption).
                path = f"/_matrix/client/v3/rooms/{quote(room_id)}/event/{quote(sent.event_id)}"
                status, raw = await asyncio.to_thread(
                    http_json, "GET", homeserver_any_db.base_url + path, token=alice.access_token
                )
                assert status == 200, raw
                assert raw["type"] == "m.room.encrypted" and raw["content"]["algorithm"] == "m.megolm.v1.aes-sha2"
                assert plaintext not in json.dumps(raw, ensure_ascii=False)

                # An Olm-encrypted to-device message of a custom type, over the session alice created.
                olm = alice.olm
                assert olm is not None
                device = alice.device_store[uid("bob")][bob.device_id]
                session = olm.session_store.get(device.curve25519)
                assert session is not None, "alice has no Olm session with bob's device"
                content = olm._olm_encrypt(session, device, SECRET_TYPE, secret)
                message = ToDeviceMessage("m.room.encrypted", uid("bob"), bob.device_id, content)
                delivered = await alice.to_device(message, tx_id="secret-1")
                assert isinstance(delivered, ToDeviceResponse), delivered

                def secret_seen(_: SyncResponse) -> bool:
                    return any(p.get("type") == SECRET_TYPE for p in bob_payloads)

                await sync_until(bob, secret_seen)
                received = [p for p in bob_payloads if p.get("type") == SECRET_TYPE]
                assert len(received) == 1
                assert received[0]["content"] == secret
                assert received[0]["sender"] == uid("alice")
                assert received[0]["recipient"] == uid("bob")

        run(scenario)
