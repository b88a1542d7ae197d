"""Checks of PDUs received in the membership dances: format, content hash, signatures, auth.

Theory of operation (spec server-server-api.md "Checks performed on receipt of a PDU", steps 1-4,
and "Joining Rooms": the joining server checks the ``send_join`` answer). :meth:`PduChecker.check`
parses a PDU for its room version (format: ``Event.from_pdu``), verifies the signatures of every
server that must have signed it (the sender's server; in rooms v1-v2 also the event ID's server; for
a restricted join the authorising server) through the keyring, and checks the content hash: a PDU
whose hash does not match is used redacted, as the spec says. :func:`check_state_against_auth_chain`
runs the auth rules on a received room state: each event against its own auth events, which must
themselves be in the auth chain and pass, oldest first; events that fail are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from federation.interfaces import VerifyKeyLookup
from sc_proto.auth.membership import join_authorising_server
from sc_proto.auth.rules import build_auth_state, check_auth
from sc_proto.errors import AuthError, Codes, InvalidEventError, MatrixError
from sc_proto.events.hashes import check_content_hash
from sc_proto.events.model import Event
from sc_proto.events.redaction import redact
from sc_proto.identifiers import EventID, UserID
from sc_proto.room_versions import EventFormat, RoomVersion

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]


def server_of(identifier: str) -> str | None:
    """The server of a user ID, or None when it is not one."""
    try:
        return UserID.parse(identifier, historical=True).domain
    except MatrixError:
        return None


class PduChecker:
    """Verifies PDUs' signatures and hashes.

    Args:
        keys: the keyring.
    """

    def __init__(self, keys: VerifyKeyLookup) -> None:
        self._keys = keys

    def parse(self, pdu: object, rv: RoomVersion) -> Event:
        """Parses a PDU (format and size checks).

        Raises:
            MatrixError: 400 ``M_BAD_JSON`` when it is malformed.
        """
        if not isinstance(pdu, Mapping):
            raise MatrixError(400, Codes.BAD_JSON, "The event must be an object")
        try:
            return Event.from_pdu(pdu, rv)
        except InvalidEventError as e:
            raise MatrixError(400, Codes.BAD_JSON, f"Malformed event: {e.message}") from None

    def required_signers(self, event: Event) -> list[str]:
        """The servers whose signatures the event must carry."""
        servers: list[str] = []
        sender = server_of(event.sender)
        if sender is not None:
            servers.append(sender)
        if event.room_version.event_format is EventFormat.V1:
            try:
                domain = EventID.parse(event.event_id).domain
            except MatrixError:
                domain = None
            if domain:
                servers.append(domain)
        if event.type == "m.room.member" and event.membership == "join":
            authoriser = join_authorising_server(event)
            if authoriser is not None:
                servers.append(authoriser)
        return list(dict.fromkeys(servers))

    async def verify_signatures(self, event: Event, servers: Iterable[str] | None = None) -> None:
        """Checks the signatures of ``servers`` (default: :meth:`required_signers`).

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` when a signature is missing or does not verify.
        """
        rv = event.room_version
        redacted = redact(event.pdu, rv)
        at_ts = event.origin_server_ts if rv.enforce_key_validity else 0
        for server in servers if servers is not None else self.required_signers(event):
            try:
                await self._keys.verify_json_for_server(server, redacted, at_ts)
            except MatrixError:
                raise MatrixError(403, Codes.FORBIDDEN, f"The event is not signed by {server}") from None

    async def check(self, pdu: object, rv: RoomVersion, *, redact_on_bad_hash: bool = True) -> Event:
        """Parses a PDU and checks its signatures and content hash.

        Returns:
            The event, redacted when its content hash does not match (and ``redact_on_bad_hash``).

        Raises:
            MatrixError: 400 malformed; 403 bad signature, or a bad hash when not redacting.
        """
        event = self.parse(pdu, rv)
        await self.verify_signatures(event)
        if not check_content_hash(event.pdu, rv):
            if not redact_on_bad_hash:
                raise MatrixError(403, Codes.FORBIDDEN, "The event's content hash does not match")
            logger.info("event %s has a bad content hash: using it redacted", event.event_id)
            event = Event(redact(event.pdu, rv), rv, event.event_id)
        return event

    async def check_many(self, pdus: Sequence[object], rv: RoomVersion) -> list[Event]:
        """:meth:`check` for each PDU; those that fail are logged and left out."""
        out: list[Event] = []
        for pdu in pdus:
            try:
                out.append(await self.check(pdu, rv))
            except MatrixError as e:
                logger.info("dropping a received event: %s", e.message)
        return out


def check_state_against_auth_chain(
    rv: RoomVersion, room_id: str, state: Sequence[Event], auth_chain: Sequence[Event]
) -> tuple[list[Event], list[Event]]:
    """Runs the auth rules on a room state received with its auth chain.

    Every event (of both lists) is checked against its own auth events, oldest first; an event of
    another room, whose auth events are missing or failed, or that the rules refuse, is dropped.

    Returns:
        ``(state, auth_chain)`` without the events that failed.

    Raises:
        MatrixError: 502 when no valid create event remains.
    """
    by_id = {e.event_id: e for e in [*auth_chain, *state]}
    create = next(
        (e for e in by_id.values() if e.type == "m.room.create" and e.state_key == "" and e.room_id == room_id), None
    )
    passed: dict[str, Event] = {}
    failed: set[str] = set()
    pending = sorted((e for e in by_id.values() if e.room_id == room_id), key=lambda e: (e.depth, e.event_id))
    # Depth usually orders auth events first, but a peer's depths are not to be trusted: repeat
    # until no event is decided (an event whose auth events never get decided is dropped).
    while pending:
        undecided: list[Event] = []
        for event in pending:
            auth_ids = list(event.auth_event_ids)
            if any(a in failed or a not in by_id for a in auth_ids):
                failed.add(event.event_id)
            elif any(a not in passed for a in auth_ids):
                undecided.append(event)
            elif _passes(rv, event, [passed[a] for a in auth_ids], create):
                passed[event.event_id] = event
            else:
                failed.add(event.event_id)
        if len(undecided) == len(pending):
            break
        pending = undecided
    if create is None or create.event_id not in passed:
        raise MatrixError(502, Codes.UNKNOWN, "The room's state has no valid create event")
    return [e for e in state if e.event_id in passed], [e for e in auth_chain if e.event_id in passed]


def _passes(rv: RoomVersion, event: Event, auth_events: Sequence[Event], create: Event | None) -> bool:
    v12_create = create if rv.room_id_from_create_event and event is not create else None
    try:
        check_auth(event, build_auth_state(auth_events, v12_create), rv)
    except AuthError as e:
        logger.info("dropping %s from a received state: %s", event.event_id, e.reason)
        return False
    return True
