"""Send-to-device messaging: per-device inboxes delivered exactly once through ``/sync``.

Theory of operation (spec "Send-to-Device messaging"; storage in
:mod:`homeserver.storage.stores.to_device`):

* **Send.** ``PUT /sendToDevice/{type}/{txnId}`` is checked whole, then written in one transaction
  under one stream id: one inbox row per existing target device (``*`` = every device of the user;
  unknown local users and devices are ignored, as the spec says), plus the client transaction ID,
  so a retried request writes nothing. After commit the target users' syncs are woken.
* **Deliver.** A device's sync returns its inbox after the position it acknowledged, oldest first,
  at most :data:`MAX_PER_SYNC` messages (spec: "100 messages is recommended"); when more are
  waiting, the response's ``next_batch`` carries the last sent message's position instead of the
  stream's (``SyncResult.position_caps``). Syncing again with that ``next_batch`` acknowledges what
  it covers: those messages are deleted. A retried sync with the older token gets them again (it
  never acknowledged them), so a message is delivered until seen, and never after.
* **Remote users**: after the local messages are committed (so only once per client transaction),
  one ``m.direct_to_device`` EDU per destination server goes to the
  :class:`~homeserver.api.ports.FederationSender` port (spec server-server API, "Send-to-device
  messaging": ``sender``, ``type``, ``message_id``, ``messages``), which queues it persistently.
  Without federation the port drops them (as before: logged, not stored).
* Message contents are opaque (usually Olm ciphertext); they are never logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from homeserver.api.local import LocalOnlySender
from homeserver.api.ports import FederationSender
from homeserver.identity import LocalServer
from homeserver.storage.pool import DatabasePool, Txn
from homeserver.storage.stores.to_device import ToDeviceStore
from homeserver.streams.writer import StreamWriter
from sc_proto.errors import Codes, InvalidIdentifierError, MatrixError
from sc_proto.identifiers import UserID

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

STREAM = "to_device"
"""The notifier stream name."""

MAX_MESSAGES_PER_REQUEST = 10_000
"""Most target devices one ``/sendToDevice`` may name (NOTSPEC: the spec sets no limit)."""

MAX_PER_SYNC = 100
"""Most to-device messages one ``/sync`` returns (the spec's recommendation)."""

ALL_DEVICES = "*"
"""The device ID meaning "every device of the user"."""

DIRECT_TO_DEVICE_EDU = "m.direct_to_device"
"""The EDU type carrying to-device messages to another server."""


@dataclass(frozen=True)
class OutgoingMessages:
    """A parsed ``/sendToDevice`` body.

    Attributes:
        local: our users: user ID -> device ID (or ``*``) -> content JSON.
        remote: other servers' users: server name -> user ID -> device ID (or ``*``) -> content.
    """

    local: dict[str, dict[str, str]]
    remote: dict[str, dict[str, dict[str, Any]]]


class ToDeviceService:
    """Sends and delivers to-device messages.

    Args:
        server_name: our server name (local users).
        pool: the database pool.
        store: the to-device store.
        stream: the ``to_device`` stream writer.
        time_msec: the clock.
        sender: sends ``m.direct_to_device`` EDUs to other servers (local-only: dropped).
    """

    def __init__(
        self,
        server_name: str,
        pool: DatabasePool,
        store: ToDeviceStore,
        stream: StreamWriter,
        time_msec: Callable[[], int],
        *,
        sender: FederationSender | None = None,
    ) -> None:
        self._sender: FederationSender = sender or LocalOnlySender()
        self._server_name = server_name
        self._local = LocalServer(server_name)
        self._pool = pool
        self._store = store
        self._stream = stream
        self._now = time_msec

    def current_position(self) -> int:
        """The stream position below which every message is readable."""
        return self._stream.current()

    # ------------------------------------------------------------------ sending

    def parse_messages(self, messages: object) -> OutgoingMessages:
        """Checks a ``messages`` object.

        Raises:
            MatrixError: 400 ``M_BAD_JSON``/``M_INVALID_PARAM`` when malformed, 413 ``M_TOO_LARGE`` when
                it names more than :data:`MAX_MESSAGES_PER_REQUEST` devices.
        """
        if not isinstance(messages, Mapping):
            raise MatrixError(400, Codes.BAD_JSON, "messages must be an object")
        local: dict[str, dict[str, str]] = {}
        remote: dict[str, dict[str, dict[str, Any]]] = {}
        total = 0
        for user_id, by_device in messages.items():
            try:
                parsed = UserID.parse(user_id, historical=True)
            except InvalidIdentifierError:
                raise MatrixError(400, Codes.INVALID_PARAM, "Invalid user ID in messages") from None
            if not isinstance(by_device, Mapping):
                raise MatrixError(400, Codes.BAD_JSON, "messages values must be objects")
            total += len(by_device)
            if total > MAX_MESSAGES_PER_REQUEST:
                raise MatrixError(
                    413, Codes.TOO_LARGE, f"At most {MAX_MESSAGES_PER_REQUEST} messages per request"
                )
            encoded: dict[str, str] = {}
            for device_id, content in by_device.items():
                if not isinstance(device_id, str) or not device_id or not isinstance(content, Mapping):
                    raise MatrixError(400, Codes.BAD_JSON, "messages must map device IDs to content objects")
                encoded[device_id] = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
            if not self._local.is_mine(parsed):
                remote.setdefault(parsed.domain, {})[user_id] = {d: dict(c) for d, c in by_device.items()}
                continue
            local[user_id] = encoded
        return OutgoingMessages(local, remote)

    async def send(
        self, sender: str, sender_device: str, event_type: str, txn_id: str, messages: OutgoingMessages
    ) -> None:
        """Stores the messages in the target devices' inboxes and wakes their syncs (idempotent per
        ``(sender, sender_device, txn_id)``)."""
        now = self._now()

        def send_txn(txn: Txn) -> tuple[int, set[str]] | None:
            stream_id = self._stream.next_id_txn(txn)
            ToDeviceStore.raise_high_water_mark_txn(txn, stream_id)
            if not ToDeviceStore.claim_txn_id_txn(txn, (sender, sender_device, txn_id), stream_id, now):
                return None
            rows: list[tuple[str, str, str]] = []
            for user_id, by_device in messages.local.items():
                wildcard = by_device.get(ALL_DEVICES)
                explicit = [d for d in by_device if d != ALL_DEVICES]
                targets = ToDeviceStore.get_existing_devices_txn(txn, user_id, None if wildcard is not None else explicit)
                for device_id in targets:
                    content = by_device.get(device_id, wildcard)
                    if content is None:
                        continue
                    rows.append((user_id, device_id, _message_json(sender, event_type, content)))
            ToDeviceStore.add_messages_txn(txn, stream_id, rows)
            return stream_id, {user_id for user_id, _, _ in rows}

        outcome = await self._pool.run_txn("send_to_device", send_txn)
        if outcome is not None:
            self._stream.announce(outcome[0], outcome[1])
            await self._send_remote(sender, sender_device, event_type, txn_id, messages.remote)

    async def _send_remote(
        self,
        sender: str,
        sender_device: str,
        event_type: str,
        txn_id: str,
        remote: Mapping[str, dict[str, dict[str, Any]]],
    ) -> None:
        """Hands one ``m.direct_to_device`` EDU per destination to the federation sender.

        The ``message_id`` is derived from the client transaction, so a destination can drop a
        duplicate. A failing sender is logged, never the client's error: the local messages are sent.
        """
        message_id = hashlib.sha256(f"{sender}\n{sender_device}\n{txn_id}".encode()).hexdigest()[:32]
        for destination, messages in sorted(remote.items()):
            content = {"sender": sender, "type": event_type, "message_id": message_id, "messages": messages}
            try:
                await self._sender.send_edu([destination], DIRECT_TO_DEVICE_EDU, content)
            except Exception:  # a boundary: the client's request already succeeded locally
                logger.exception("to-device EDU could not be queued", extra={"destination": destination})

    # ------------------------------------------------------------------ delivery

    async def get_for_sync(
        self, user_id: str, device_id: str, acknowledged: int, to_position: int
    ) -> tuple[list[JsonDict], int | None]:
        """The messages a sync of this device returns, after deleting those it acknowledged.

        Args:
            user_id: the syncing user.
            device_id: their device.
            acknowledged: the ``since`` token's to-device position (0 for an initial sync): the
                device has seen everything up to it.
            to_position: the current position.

        Returns:
            ``(events, cap)``: ``cap`` is the position of the last message sent when more are waiting
            (the response's token must carry it instead of ``to_position``), else None.
        """
        if acknowledged > 0 and await self._store.has_messages_up_to(user_id, device_id, acknowledged):
            await self._store.acknowledge(user_id, device_id, acknowledged)
        rows = await self._store.get_messages(user_id, device_id, acknowledged, to_position, MAX_PER_SYNC)
        cap = rows[-1][0] if len(rows) == MAX_PER_SYNC and rows[-1][0] < to_position else None
        return [message for _, message in rows], cap


def _message_json(sender: str, event_type: str, content_json: str) -> str:
    # The content is embedded as already-encoded JSON: it is never parsed again.
    return (
        '{"content":' + content_json + ',"sender":' + json.dumps(sender, ensure_ascii=False)
        + ',"type":' + json.dumps(event_type, ensure_ascii=False) + "}"
    )
