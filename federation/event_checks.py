"""Received-PDU checks with key lookups: drives :mod:`sc_proto.federation.pdu_checks` (steps 1-3 of
"Checks performed on receipt of a PDU") for ``/send``, for every fetched event and for the
membership dances (``send_join`` answers, inbound ``send_*`` and invites): the one PDU check path.

The sans-I/O library says which ``(server, key_id)`` signatures matter; this module asks the keyring
(:class:`~federation.interfaces.VerifyKeyLookup`) for each key valid at the event's time, skipping
keys the keyring cannot find (unknown or expired, as the spec says), then lets the library verify.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from federation.interfaces import RemoteUnreachable, VerifyKeyLookup
from sc_proto.crypto.keys import VerifyKey
from sc_proto.errors import InvalidEventError, MatrixError, SignatureError
from sc_proto.events.model import Event
from sc_proto.federation.keys import key_validity_ts
from sc_proto.federation.pdu_checks import (
    HashCheck,
    SignatureCheck,
    apply_content_hash,
    parse_pdu,
    signature_checks,
    verify_signatures,
)
from sc_proto.room_versions import RoomVersion

logger = logging.getLogger(__name__)


class EventChecker:
    """Format, signature and hash checks of received PDUs.

    Args:
        keys: the keyring.
        time_msec: the clock (key validity in rooms before v5).
    """

    def __init__(self, keys: VerifyKeyLookup, time_msec: Callable[[], int]) -> None:
        self._keys = keys
        self._now = time_msec

    def parse(self, pdu: object, room_version: RoomVersion, *, enforce_ref_limits: bool = True) -> Event:
        """Step 1 alone (format and size).

        Raises:
            InvalidEventError: malformed (400 ``M_BAD_JSON``) or oversized (413).
        """
        return parse_pdu(pdu, room_version, enforce_ref_limits=enforce_ref_limits)

    async def verify(self, event: Event, servers: Iterable[str] | None = None) -> None:
        """Step 2: looks up each key valid at the event's time and verifies the signatures of
        ``servers`` (default: every server that must have signed the event).

        Raises:
            SignatureError: a signature is missing or does not verify (401).
            InvalidEventError: the sender or event ID is malformed.
        """
        wanted = None if servers is None else tuple(servers)
        at_ts = key_validity_ts(event.room_version, event.origin_server_ts)
        found: dict[SignatureCheck, VerifyKey] = {}
        for check in signature_checks(event, wanted):
            try:
                found[check] = await self._keys.get_verify_key(check.server_name, check.key_id, at_ts)
            except (MatrixError, RemoteUnreachable) as e:
                # Unknown or expired keys are skipped; verify_signatures still needs one per server.
                logger.debug("no key %s of %s: %s", check.key_id, check.server_name, e)
        verify_signatures(event, found, wanted)

    async def check(
        self, pdu: object, room_version: RoomVersion, *, enforce_ref_limits: bool = True
    ) -> HashCheck:
        """Runs steps 1-3 on ``pdu``.

        Returns:
            The event to process (redacted when its content hash did not match).

        Raises:
            InvalidEventError: malformed or oversized (step 1; 400/413).
            SignatureError: a required signature is missing or does not verify (step 2; 401).
        """
        event = self.parse(pdu, room_version, enforce_ref_limits=enforce_ref_limits)
        await self.verify(event)
        result = apply_content_hash(event)
        if result.redacted:
            logger.info("content hash mismatch on %s: using the redacted copy", event.event_id)
        return result

    async def check_many(self, pdus: Sequence[object], room_version: RoomVersion) -> list[Event]:
        """:meth:`check` on each PDU (e.g. a ``send_join`` answer); those that fail are logged and
        left out, those whose hash failed are kept redacted."""
        out: list[Event] = []
        for pdu in pdus:
            try:
                out.append((await self.check(pdu, room_version)).event)
            except MatrixError as e:
                logger.info("dropping a received event: %s", e.message)
        return out


def describe_refusal(error: Exception) -> str:
    """A short, safe reason for a refused PDU (for the ``/send`` answer)."""
    if isinstance(error, (InvalidEventError, SignatureError, MatrixError)):
        return error.message
    return "internal error"
